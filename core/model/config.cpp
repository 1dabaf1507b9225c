#include "core/model/config.h"

#include <map>
#include <sstream>

#include "core/util/error.h"

namespace fedsplit {
namespace {

// The config.json key of a DecoderConfig field, for messages about a file the user wrote.
std::string hf_key(ModelFamily family, const std::string& field) {
  static const std::map<std::string, std::string> llama = {
      {"num_layers", "num_hidden_layers"},   {"num_heads", "num_attention_heads"},
      {"num_kv_heads", "num_key_value_heads"}, {"max_position", "max_position_embeddings"},
      {"norm_eps", "rms_norm_eps"},          {"rope_factor", "rope_scaling.factor"},
      {"rope_low_freq_factor", "rope_scaling.low_freq_factor"},
      {"rope_high_freq_factor", "rope_scaling.high_freq_factor"},
      {"rope_original_max_position", "rope_scaling.original_max_position_embeddings"},
      {"initializer_range", "initializer_range"}};
  static const std::map<std::string, std::string> gpt2 = {
      {"hidden_size", "n_embd"},          {"num_layers", "n_layer"},          {"num_heads", "n_head"},
      {"num_kv_heads", "n_head"},         {"intermediate_size", "n_inner"},   {"max_position", "n_positions"},
      {"norm_eps", "layer_norm_epsilon"}, {"dropout", "resid_pdrop"},         {"attention_dropout", "attn_pdrop"}};
  const auto& table = family == ModelFamily::gpt2 ? gpt2 : llama;
  auto it = table.find(field);
  return it == table.end() ? field : it->second;
}

}  // namespace

const char* to_string(ModelFamily family) {
  switch (family) {
    case ModelFamily::llama: return "llama";
    case ModelFamily::qwen2: return "qwen2";
    case ModelFamily::gpt2: return "gpt2";
  }
  return "?";
}

ModelFamily parse_family(const std::string& name, const std::string& where) {
  for (ModelFamily f : {ModelFamily::llama, ModelFamily::qwen2, ModelFamily::gpt2})
    if (name == to_string(f)) return f;
  throw ConfigError(where + ": unknown model family '" + name + "' (use llama, qwen2 or gpt2)");
}

DecoderConfig family_config(ModelFamily family, int64_t vocab_size, int64_t hidden_size, int64_t num_layers,
                            int64_t num_heads, int64_t num_kv_heads, int64_t intermediate_size, int64_t max_position) {
  DecoderConfig c;
  c.family = family;
  c.vocab_size = vocab_size;
  c.hidden_size = hidden_size;
  c.num_layers = num_layers;
  c.num_heads = num_heads;
  c.num_kv_heads = num_kv_heads;
  c.max_position = max_position;
  if (family == ModelFamily::gpt2) {
    c.norm = NormKind::layer;
    c.norm_eps = 1e-5;
    c.positions = PositionKind::learned;
    c.gated_mlp = false;
    c.activation = Activation::gelu_tanh;
    c.attn_qkv_bias = c.attn_out_bias = c.mlp_bias = true;
    c.tie_embeddings = true;
    c.intermediate_size = intermediate_size > 0 ? intermediate_size : 4 * hidden_size;
  } else {
    c.attn_qkv_bias = family == ModelFamily::qwen2;
    c.tie_embeddings = family == ModelFamily::qwen2;
    // 8/3·d keeps a gated MLP's parameters at a plain 4·d MLP's; multiples of 64 suit matmuls.
    c.intermediate_size = intermediate_size > 0 ? intermediate_size : ((8 * hidden_size / 3 + 63) / 64) * 64;
  }
  validate(c, std::string(to_string(family)) + " config");
  return c;
}

void validate(const DecoderConfig& c, const std::string& where, bool hf_names) {
  auto name = [&](const std::string& field) { return hf_names ? hf_key(c.family, field) : field; };
  auto fail = [&](const std::string& field, const std::string& what) {
    throw ConfigError(where + ": " + name(field) + " " + what);
  };
  auto positive = [&](const std::string& field, double v) {
    if (!(v > 0)) {
      std::ostringstream ss;
      ss << "must be positive (got " << v << ")";
      fail(field, ss.str());
    }
  };
  positive("vocab_size", static_cast<double>(c.vocab_size));
  positive("hidden_size", static_cast<double>(c.hidden_size));
  positive("num_layers", static_cast<double>(c.num_layers));
  positive("num_heads", static_cast<double>(c.num_heads));
  positive("num_kv_heads", static_cast<double>(c.num_kv_heads));
  positive("intermediate_size", static_cast<double>(c.intermediate_size));
  positive("max_position", static_cast<double>(c.max_position));
  positive("norm_eps", c.norm_eps);
  if (c.num_heads % c.num_kv_heads != 0) {
    fail("num_kv_heads", "(" + std::to_string(c.num_kv_heads) + ") must divide " + name("num_heads") + " (" +
                             std::to_string(c.num_heads) + ")");
  }
  if (c.head_dim < 0) fail("head_dim", "must be positive, or 0 for hidden_size / num_heads");
  if (c.head_dim == 0 && c.hidden_size % c.num_heads != 0) {
    fail("num_heads", "(" + std::to_string(c.num_heads) + ") must divide " + name("hidden_size") + " (" +
                          std::to_string(c.hidden_size) + ") unless head_dim is given");
  }
  if (c.positions == PositionKind::rope) {
    if (c.resolved_head_dim() % 2 != 0) {
      fail("head_dim", "(" + std::to_string(c.resolved_head_dim()) + ") must be even for rotary embeddings");
    }
    positive("rope_theta", c.rope_theta);
    if (c.rope_scaling != RopeScaling::none) positive("rope_factor", c.rope_factor);
    if (c.rope_scaling == RopeScaling::llama3) {
      positive("rope_low_freq_factor", c.rope_low_freq_factor);
      positive("rope_original_max_position", static_cast<double>(c.rope_original_max_position));
      if (!(c.rope_high_freq_factor > c.rope_low_freq_factor)) {
        fail("rope_high_freq_factor", "must exceed " + name("rope_low_freq_factor"));
      }
    }
  }
  if (!(c.dropout >= 0 && c.dropout < 1)) fail("dropout", "must be in [0, 1)");
  if (!(c.attention_dropout >= 0 && c.attention_dropout < 1)) fail("attention_dropout", "must be in [0, 1)");
  if (!(c.initializer_range >= 0)) fail("initializer_range", "must not be negative");
  if (c.family == ModelFamily::gpt2 && c.gated_mlp) {
    fail("gated_mlp", "is not available in the gpt2 family (its MLP is c_fc, c_proj)");
  }
}

}  // namespace fedsplit
