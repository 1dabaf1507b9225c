// The llama-family model in GGUF, named and described as llama.cpp's convert_hf_to_gguf.py writes it.
//
// Tensors (Decoder parameter -> GGUF name; torch [out, in] is GGUF dims {in, out}):
//   embed_tokens.weight -> token_embd.weight        norm.weight -> output_norm.weight
//   lm_head.weight -> output.weight (absent when the head is tied to the embedding)
//   layers.N.input_layernorm.weight -> blk.N.attn_norm.weight
//   layers.N.post_attention_layernorm.weight -> blk.N.ffn_norm.weight
//   layers.N.self_attn.{q,k,v,o}_proj.{weight,bias} -> blk.N.attn_{q,k,v,output}.{weight,bias}
//   layers.N.mlp.{gate,up,down}_proj.{weight,bias} -> blk.N.ffn_{gate,up,down}.{weight,bias}
//
// Architectures: "llama" (RMSNorm, RoPE, gated SiLU MLP; optional attention/MLP biases; linear RoPE
// scaling) and "qwen2" (the same with q/k/v biases and none elsewhere). Anything else (gpt2, layer
// norm, learned positions, other activations, llama3 RoPE scaling) is refused with one line naming
// what cannot be expressed.
//
// RoPE layout: HF llama rotates halves (dims i and i + d/2 of a head form a pair) while llama.cpp's
// "llama" architecture rotates adjacent pairs (2i, 2i+1). The converter therefore permutes the rows
// of q_proj (with num_heads) and k_proj (with num_kv_heads), weights and biases alike: per head, the
// rows [0 .. d/2) and [d/2 .. d) are interleaved, row j of the first half going to 2j and row j of
// the second half to 2j+1. qwen2 runs the NeoX (rotate-half) layout in llama.cpp: no permutation.
//
// Metadata: general.architecture, general.name, general.file_type (0 f32, 1 f16, 2 q4_0, 7 q8_0),
// general.quantization_version = 2, and under the architecture's prefix context_length,
// embedding_length, block_count, feed_forward_length, attention.head_count, attention.head_count_kv,
// attention.key_length, attention.value_length, attention.layer_norm_rms_epsilon, rope.freq_base,
// rope.dimension_count, vocab_size (and rope.scaling.type/factor for linear scaling).
#pragma once
#include <cstdint>
#include <set>
#include <string>

#include "compress/gguf.h"
#include "core/model/config.h"

namespace at {
class Tensor;
}

namespace fedsplit {

/// llama.cpp's general.file_type codes of the files fedsplit writes.
enum class GgufFileType : uint32_t { all_f32 = 0, mostly_f16 = 1, mostly_q4_0 = 2, mostly_q8_0 = 7 };

/// "llama" or "qwen2" for a config llama.cpp runs as that architecture; ConfigError naming the family
/// or option otherwise (e.g. "gpt2 models cannot be exported to GGUF yet: ...").
std::string gguf_architecture(const DecoderConfig& config);

/// GGUF name of a Decoder parameter of a llama/qwen2 model; FormatError for a parameter with none.
std::string gguf_tensor_name(const std::string& parameter);

/// Decoder parameter of a GGUF tensor name ("" for a name that is not one of the above).
std::string parameter_of_gguf_tensor(const std::string& gguf_name);

/// The layer of a "blk.N." tensor, or -1 for the others.
int64_t gguf_block_index(const std::string& gguf_name);

/// The head count whose rows a parameter is permuted with in `architecture` (q_proj: num_heads,
/// k_proj: num_kv_heads, llama only); 0 for parameters stored as they are.
int64_t rope_permute_heads(const std::string& parameter, const DecoderConfig& config, const std::string& architecture);

/// HF rotate-half rows -> llama.cpp interleaved pairs, per head, over dimension 0 of `rows`
/// (a weight [heads * d, in], its bias [heads * d] or a matching scales tensor).
at::Tensor permute_rope_rows(const at::Tensor& rows, int64_t heads);

/// The inverse of permute_rope_rows.
at::Tensor unpermute_rope_rows(const at::Tensor& rows, int64_t heads);

/// Sets general.* and the architecture's hyper-parameters of `config` in `meta`.
void set_model_metadata(GgufMetadata& meta, const DecoderConfig& config, const std::string& architecture,
                        const std::string& name, GgufFileType file_type);

/// The DecoderConfig of a GGUF model: hyper-parameters from `meta`, biases and the tied head from the
/// tensor names present in the whole model, vocabulary from token_embd's rows (`vocab_size`), BOS/EOS
/// from tokenizer.ggml.*. FormatError naming `where` and the key for a missing or mistyped key,
/// ConfigError for an architecture other than llama/qwen2.
DecoderConfig config_from_gguf(const GgufMetadata& meta, const std::set<std::string>& tensor_names,
                               int64_t vocab_size, const std::string& where);

/// An unsigned integer metadata value (u8..u64, or a non-negative signed one) of `key`; FormatError
/// naming `where` and the key when missing or of another type.
uint64_t gguf_uint(const GgufMetadata& meta, const std::string& key, const std::string& where);

/// A string metadata value of `key`; FormatError as above.
std::string gguf_string(const GgufMetadata& meta, const std::string& key, const std::string& where);

}  // namespace fedsplit
