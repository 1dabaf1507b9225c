// Decoder: one decoder-only transformer for the llama, qwen2 and gpt2 families (see DecoderConfig).
//
// Module paths mirror transformers' so that a HF state-dict key maps to a parameter by a prefix
// rename only ("model." for llama/qwen2, "transformer." for gpt2; gpt2's Conv1D weights are stored
// transposed, see core/model/hf.h):
//   llama, qwen2: embed_tokens, layers.N.self_attn.{q,k,v,o}_proj, layers.N.mlp.{gate,up,down}_proj,
//                 layers.N.{input_layernorm,post_attention_layernorm}, norm, lm_head
//   gpt2:         wte, wpe, h.N.ln_1, h.N.attn.{c_attn,c_proj}, h.N.ln_2, h.N.mlp.{c_fc,c_proj}, ln_f,
//                 lm_head
// With tie_embeddings there is no lm_head module: the head reads the token embedding's weight.
// Every projection is a fedsplit::Projection (weight [out, in], optional bias) that may be replaced
// through replace_module on its parent (see ProjectionImpl).
//
// The RoPE tables are plain fp32 tensors outside the state dict (they follow `to(device)` but
// keep fp32 under `to(dtype)`).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "core/model/config.h"
#include "core/model/layers.h"

namespace fedsplit {

class DecoderImpl : public torch::nn::Module {
 public:
  /// Builds the modules of `config` (validated; head_dim resolved). With `init` the weights get
  /// init_weights(0); without, they are left uninitialised for a loader to fill.
  explicit DecoderImpl(const DecoderConfig& config, bool init = true);

  /// Logits [B, T, vocab] for token ids [B, T] (int64) at positions P .. P+T-1, P = prefix_length()
  /// (0 without prefix key/values): the tokens follow the prefix, as in transformers with a past of
  /// length P.
  torch::Tensor forward(const torch::Tensor& input_ids);
  /// Logits for ids whose first token sits at position_offset.
  torch::Tensor forward(const torch::Tensor& input_ids, int64_t position_offset);

  /// Token (+ learned position) embeddings [B, T, hidden] of ids [B, T] at positions
  /// position_offset .. position_offset + T - 1.
  torch::Tensor embed(const torch::Tensor& input_ids, int64_t position_offset = 0);
  /// Runs blocks begin .. end-1 on hidden states h [B, T, hidden] whose first token sits at
  /// position_offset. Attention sees these T tokens and the prefix key/values, if set (pass
  /// prefix_length() as position_offset, to embed too, for the positions forward uses).
  torch::Tensor run_layers(torch::Tensor h, int64_t begin, int64_t end, int64_t position_offset = 0);
  /// Final norm and LM head: logits [B, T, vocab].
  torch::Tensor head(const torch::Tensor& h);
  /// The final norm alone: what transformers returns as the last hidden state.
  torch::Tensor final_norm(const torch::Tensor& h) { return final_norm_->forward(h); }

  int64_t num_layers() const { return options.num_layers; }
  /// Block i (modules named as in transformers, e.g. layer(0)->attn is "self_attn" or "attn").
  Block layer(int64_t i) const;
  /// The token embedding table [vocab, hidden] (also the LM head's weight when tied).
  const torch::Tensor& token_embedding() const { return tokens_->weight; }
  /// The learned position table [max_position, hidden], undefined with RoPE.
  torch::Tensor position_embedding() const { return positions_ ? positions_->weight : torch::Tensor(); }

  /// Sets key/value pairs that every layer's attention sees before the real tokens, for every batch
  /// element: `packed` [P, num_layers * 2 * kv_heads * head_dim], per position the keys of layer 0,
  /// its values, the keys of layer 1, ..., each [kv_heads, head_dim]. They are used as a KV cache
  /// holds them (no RoPE is applied). The tensor is kept as given, not copied, and read at every
  /// forward, so a trainable one (registered as a parameter by its owner) gets gradients and follows
  /// `to(device)`. An undefined tensor removes the prefix.
  void set_prefix_key_values(torch::Tensor packed);
  /// The packed prefix key/values, undefined when none are set.
  const torch::Tensor& prefix_key_values() const { return prefix_; }
  /// P, the number of prefix positions (0 when none are set).
  int64_t prefix_length() const { return prefix_.defined() ? prefix_.size(0) : 0; }

  /// Deterministic initialisation for training from scratch: every weight ~ N(0, initializer_range)
  /// (projections writing into the residual stream scaled by 1/sqrt(2 * num_layers)), biases 0,
  /// norm weights 1. The same seed gives the same weights on any device and thread count.
  void init_weights(uint64_t seed);

  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  /// The configuration, validated, with head_dim resolved.
  DecoderConfig options;

 private:
  // RoPE cos/sin [T, head_dim/2] for the given positions, on `like`'s device and in its dtype.
  std::pair<torch::Tensor, torch::Tensor> rope_for(int64_t offset, int64_t length, const torch::Tensor& like) const;

  torch::nn::Embedding tokens_{nullptr};
  torch::nn::Embedding positions_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  Norm final_norm_{nullptr};
  torch::Tensor prefix_;
  torch::Tensor rope_cos_;
  torch::Tensor rope_sin_;
};
TORCH_MODULE(Decoder);

/// The module holding the submodule at `path` (a module path such as "layers.0.self_attn.q_proj")
/// and the submodule's name in it, for replace_module. Throws c10::Error if no module has that path.
std::pair<std::shared_ptr<torch::nn::Module>, std::string> module_parent(const Decoder& model, const std::string& path);

/// Number of scalar parameters (a tied head counts once).
int64_t count_parameters(const Decoder& model);

}  // namespace fedsplit
