// Prefix tuning (Li & Liang, 2021) as PEFT's PREFIX_TUNING without a projection: P trainable key/value
// pairs per layer that every attention sees before the real tokens, which follow at positions
// P .. P+T-1 (transformers with a past of length P). The base model stays frozen.
//
// The parameters are one tensor, PEFT's prompt_embeddings [P, num_layers * 2 * kv_heads * head_dim]:
// per virtual token the keys of layer 0, its values, the keys of layer 1, ... (each [kv_heads,
// head_dim]), registered on the Decoder as the parameter "prefix_embeddings" and handed to it with
// set_prefix_key_values. For grouped-query models PEFT counts kv heads: its num_attention_heads is
// kv_heads and token_dim is kv_heads * head_dim.
//
// Adapter directory (peft's save_pretrained layout):
//   adapter_config.json        peft_type "PREFIX_TUNING", task_type "CAUSAL_LM", num_virtual_tokens,
//                              num_layers, token_dim, num_attention_heads, encoder_hidden_size,
//                              prefix_projection false, num_transformer_submodules 1
//   adapter_model.safetensors  prompt_embeddings [num_virtual_tokens, num_layers * 2 * token_dim]
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "core/model/decoder.h"

namespace fedsplit {

/// What prefix tuning adds (the fields of PEFT's PrefixTuningConfig that fedsplit supports).
struct PrefixOptions {
  /// P, the number of virtual tokens (prefix positions per layer); > 0.
  int64_t num_virtual_tokens = 20;
};

/// Freezes every parameter of `model` and adds the trainable prefix: prompt_embeddings drawn from
/// N(0, 1) (PEFT's nn.Embedding init) on the CPU from `seed`, then moved to the model's device and
/// dtype. Throws ConfigError for num_virtual_tokens <= 0, positions past max_position, or when the
/// model already has prefix key/values.
void apply_prefix_tuning(Decoder& model, const PrefixOptions& options, uint64_t seed);

/// The prefix parameter [P, num_layers * 2 * kv_heads * head_dim], undefined if the model has none.
torch::Tensor prefix_embeddings(const Decoder& model);

/// Writes the prefix of `model` to `dir` (created if needed) in PEFT's format, each file atomically.
/// Throws DataError if the model has no prefix.
void save_prefix_adapter(const Decoder& model, const std::string& dir);

/// Loads a PEFT prefix adapter into `model`: applies prefix tuning when the model has no prefix yet,
/// or overwrites a prefix of the same length. Checks everything before changing the model. Throws
/// IoError for missing files, ConfigError naming the key (expected and found) for another
/// peft_type, prefix_projection true or a num_layers / token_dim / num_attention_heads that does not
/// fit the model, FormatError naming the tensor for a missing, unexpected or misshapen one.
void load_prefix_adapter(Decoder& model, const std::string& dir);

}  // namespace fedsplit
