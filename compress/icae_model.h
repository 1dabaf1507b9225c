// ICAE, the in-context autoencoder (Ge et al., 2024): a context of L tokens becomes k memory slots
// that a frozen decoder reads in place of the tokens.
//
// One base model serves both roles. The encoder is the base with LoRA switched on: it reads a
// segment's tokens followed by k learnable memory embeddings, and the slots are its last hidden
// states (after the final norm, as transformers returns them) at the k memory positions. The
// decoder is the same base with LoRA switched off, so its weights never change: it reads the slots
// as input embeddings, then a learnable task embedding ([AE] to reconstruct, [LM] to continue) or
// a prompt, then tokens. A context longer than L is cut into segments of L tokens (the last may be
// shorter); each segment is compressed on its own to k slots and the slots follow each other in
// segment order. Positions run 0 .. L+k-1 in the encoder (tokens, then memory) and from 0 over the
// slots and what follows in the decoder.
//
// What trains: the LoRA matrices, the memory embeddings and the two task embeddings.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/decoder.h"

namespace fedsplit {

/// How contexts are cut and compressed: L tokens per segment become k slots (ratio L / k).
struct IcaeShape {
  int64_t segment_tokens = 128;
  int64_t memory_slots = 32;
};

/// The task embeddings the decoder reads after the slots.
enum class IcaeTask { autoencode, language_model };

class IcaeModelImpl : public torch::nn::Module {
 public:
  /// `base` must carry LoRA adapters already (apply_lora): they are the encoder's. The memory and
  /// task embeddings start as the embeddings of tokens drawn from `seed`, so they begin at the
  /// scale of the base's inputs.
  IcaeModelImpl(Decoder base, const IcaeShape& shape, uint64_t seed);

  /// Memory slots [B, S * k, hidden] of context ids [B, n] (n >= 1, S = ceil(n / L)).
  torch::Tensor compress(const torch::Tensor& context);

  /// The frozen decoder over input embeddings `prefix` [B, P, hidden] followed by the tokens
  /// `ids` [B, m] (m may be 0): logits [B, m + 1, vocab], row j predicting the token after
  /// ids[j - 1] (row 0: the first token after the prefix).
  torch::Tensor decode(const torch::Tensor& prefix, const torch::Tensor& ids);

  /// `slots` followed by the task embedding: the decoder prefix for autoencoding or continuing.
  torch::Tensor task_prefix(const torch::Tensor& slots, IcaeTask task) const;
  /// `slots` [1, P, hidden] followed by the token embeddings of `prompt` ids: the decoder prefix of
  /// a question about the context.
  torch::Tensor prompt_prefix(const torch::Tensor& slots, const std::vector<int64_t>& prompt) const;

  /// Mean token cross-entropy of reconstructing `context` [B, n] from its slots after [AE].
  torch::Tensor autoencode_loss(const torch::Tensor& context);
  /// Mean token cross-entropy of `continuation` [B, m] given the slots of `context` and [LM].
  torch::Tensor continuation_loss(const torch::Tensor& context, const torch::Tensor& continuation);
  /// Fine-tuning loss of a prompt-with-context batch in IcaeExampleStream's layout (compress/
  /// icae_examples.h): ids [B, C + Q] (-1 pads), targets [B, Q] (-100 = no loss); mean over the
  /// answer tokens. Rows are compressed and decoded one by one since their lengths differ.
  torch::Tensor answer_loss(const torch::Tensor& ids, const torch::Tensor& targets, int64_t context_tokens);

  /// The base model (its LoRA adapters are the encoder's).
  Decoder& base() { return base_; }
  const IcaeShape& shape() const { return shape_; }
  /// [k, hidden]
  const torch::Tensor& memory() const { return memory_; }

  /// Writes the encoder to `dir`: the LoRA adapter as PEFT saves it (adapter_config.json,
  /// adapter_model.safetensors) and icae.safetensors with the memory and task embeddings and the
  /// shape in its metadata.
  void save_encoder(const std::string& dir) const;

 private:
  // Input embeddings [B, T, hidden] with learned positions offset .. offset+T-1 added (gpt2);
  // RoPE models get their positions inside attention.
  torch::Tensor positioned(const torch::Tensor& embeddings, int64_t offset) const;
  torch::Tensor compress_segments(const torch::Tensor& segments);

  Decoder base_;
  IcaeShape shape_;
  torch::Tensor memory_;
  torch::Tensor ae_token_;
  torch::Tensor lm_token_;
};
TORCH_MODULE(IcaeModel);

/// ConfigError unless `shape` is usable with `base` (k >= 1, L >= 1, L + k within the model's
/// positions); names the [icae] keys.
void check_icae_shape(const IcaeShape& shape, const Decoder& base);

/// The ICAE of `base` (without adapters) and encoder directory `encoder_dir` (save_encoder's):
/// LoRA applied and loaded, memory and task embeddings read; the encoder's tensors train.
IcaeModel attach_icae_encoder(Decoder base, const std::string& encoder_dir);

/// The ICAE of base model `base_path` (HF directory or checkpoint.h5) and encoder directory
/// `encoder_dir` (save_encoder's), in eval mode on the CPU. IoError/FormatError naming the file.
IcaeModel load_icae(const std::string& base_path, const std::string& encoder_dir);

}  // namespace fedsplit
