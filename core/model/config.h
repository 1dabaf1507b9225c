// DecoderConfig: one description of the decoder-only transformers fedsplit runs (the llama, qwen2
// and gpt2 families), and its translation from/to HF `config.json`.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fedsplit {

/// Which HF architecture the module and tensor names follow.
enum class ModelFamily { llama, qwen2, gpt2 };
enum class NormKind { rms, layer };
enum class PositionKind { rope, learned };
/// MLP activation: silu; gelu (erf); gelu_tanh (HF "gelu_new" / "gelu_pytorch_tanh"); relu.
enum class Activation { silu, gelu, gelu_tanh, relu };
/// RoPE frequency scaling as HF's `rope_type`: none ("default"), "linear", "llama3".
enum class RopeScaling { none, linear, llama3 };

struct DecoderConfig {
  /// Architecture whose names and layout the module mirrors (llama: separate q/k/v; gpt2: fused c_attn).
  ModelFamily family = ModelFamily::llama;
  /// Token vocabulary size (rows of the embedding and of the LM head).
  int64_t vocab_size = 32000;
  /// Width of the residual stream.
  int64_t hidden_size = 512;
  /// Number of transformer blocks.
  int64_t num_layers = 8;
  /// Query heads per attention layer.
  int64_t num_heads = 8;
  /// Key/value heads (GQA); must divide num_heads. Equal to num_heads for plain multi-head attention.
  int64_t num_kv_heads = 8;
  /// Width of one head; 0 means hidden_size / num_heads. May differ from that (e.g. Gemma, Qwen3).
  int64_t head_dim = 0;
  /// Hidden width of the MLP.
  int64_t intermediate_size = 1376;
  /// Longest sequence (positions 0 .. max_position-1): size of learned position table or RoPE cache.
  int64_t max_position = 2048;
  /// RMSNorm (llama, qwen2) or LayerNorm with bias (gpt2).
  NormKind norm = NormKind::rms;
  /// Epsilon added to the variance in every norm.
  double norm_eps = 1e-6;
  /// Rotary embeddings on q/k (llama, qwen2) or a learned position table added to the input (gpt2).
  PositionKind positions = PositionKind::rope;
  /// RoPE base frequency (theta).
  double rope_theta = 10000.0;
  /// RoPE frequency scaling for long contexts (HF rope_type).
  RopeScaling rope_scaling = RopeScaling::none;
  /// RoPE scaling factor (linear, llama3).
  double rope_factor = 1.0;
  /// llama3 scaling: wavelengths above original_max_position / low_freq_factor are divided by factor.
  double rope_low_freq_factor = 1.0;
  /// llama3 scaling: wavelengths below original_max_position / high_freq_factor are kept.
  double rope_high_freq_factor = 4.0;
  /// llama3 scaling: context length the model was pre-trained with.
  int64_t rope_original_max_position = 8192;
  /// Gated MLP down(act(gate(x)) * up(x)) (llama, qwen2) or plain c_proj(act(c_fc(x))) (gpt2).
  bool gated_mlp = true;
  /// MLP activation.
  Activation activation = Activation::silu;
  /// Bias on the q, k, v projections (qwen2, gpt2; llama's attention_bias).
  bool attn_qkv_bias = false;
  /// Bias on the attention output projection (gpt2; llama's attention_bias).
  bool attn_out_bias = false;
  /// Bias on the MLP projections (gpt2; llama's mlp_bias).
  bool mlp_bias = false;
  /// LM head shares the token embedding matrix (no lm_head parameter of its own).
  bool tie_embeddings = false;
  /// Beginning-of-sequence token id; -1 when the model has none.
  int64_t bos_token_id = -1;
  /// End-of-sequence token ids (several for some chat models); empty when none.
  std::vector<int64_t> eos_token_ids;
  /// Dropout probability on the embeddings and on each residual branch; training only.
  double dropout = 0.0;
  /// Dropout probability on the attention weights; training only.
  double attention_dropout = 0.0;
  /// Standard deviation of init_weights' normal initialisation.
  double initializer_range = 0.02;

  /// head_dim, or hidden_size / num_heads when head_dim is 0.
  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
};

/// Throws ConfigError if the sizes and kinds do not make a runnable decoder (heads dividing,
/// positive sizes, even head_dim for RoPE, family constraints). `where` prefixes the message;
/// with `hf_names` the message names config.json keys of the family instead of struct fields.
void validate(const DecoderConfig& config, const std::string& where = "DecoderConfig", bool hf_names = false);

/// Parses a HF `config.json` (model_type llama, qwen2 or gpt2). `where` (the file) prefixes every
/// error. Throws FormatError for a missing or mistyped key, ConfigError for an unsupported model
/// type, architecture, rope scaling or option, or sizes that do not validate.
DecoderConfig config_from_hf(const nlohmann::json& config, const std::string& where);

/// A `config.json` that transformers loads as this model. Throws ConfigError if the config uses
/// options its family cannot express in HF (e.g. a llama with LayerNorm).
nlohmann::json config_to_hf(const DecoderConfig& config);

const char* to_string(ModelFamily family);
/// Parses "llama", "qwen2" or "gpt2"; ConfigError naming `where` otherwise.
ModelFamily parse_family(const std::string& name, const std::string& where);

/// A config with `family`'s conventions (norm, positions, MLP, biases, tied head as the HF family
/// does) and the given sizes; intermediate_size 0 picks the family's rule (llama/qwen2: 8/3·d
/// rounded up to a multiple of 64; gpt2: 4·d). Validated.
DecoderConfig family_config(ModelFamily family, int64_t vocab_size, int64_t hidden_size, int64_t num_layers,
                            int64_t num_heads, int64_t num_kv_heads, int64_t intermediate_size, int64_t max_position);

}  // namespace fedsplit
