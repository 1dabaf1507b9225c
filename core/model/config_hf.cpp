// DecoderConfig <-> HF config.json (transformers 4.x and 5.x spellings).
#include <algorithm>
#include <sstream>

#include "core/model/config.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

using nlohmann::json;

// Typed access to config.json keys; absent and null mean "use the default".
class Keys {
 public:
  Keys(const json& j, const std::string& where) : j_(j), where_(where) {}

  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json* find(const std::string& key) const { return has(key) ? &j_.at(key) : nullptr; }

  int64_t integer(const std::string& key) const {
    if (!has(key)) throw FormatError(where_ + ": missing key '" + key + "'");
    return as_integer(key, j_.at(key));
  }
  int64_t integer(const std::string& key, int64_t fallback) const { return has(key) ? integer(key) : fallback; }
  double number(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    return as_number(key, j_.at(key));
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!j_.at(key).is_boolean()) bad(key, "true or false");
    return j_.at(key).get<bool>();
  }
  std::string string(const std::string& key) const {
    if (!has(key)) throw FormatError(where_ + ": missing key '" + key + "'");
    if (!j_.at(key).is_string()) bad(key, "a string");
    return j_.at(key).get<std::string>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    return has(key) ? string(key) : fallback;
  }

  int64_t as_integer(const std::string& key, const json& v) const {
    if (!v.is_number_integer()) bad(key, "an integer", v);
    return v.get<int64_t>();
  }
  double as_number(const std::string& key, const json& v) const {
    if (!v.is_number()) bad(key, "a number", v);
    return v.get<double>();
  }
  [[noreturn]] void bad(const std::string& key, const std::string& kind) const { bad(key, kind, j_.at(key)); }
  [[noreturn]] void bad(const std::string& key, const std::string& kind, const json& v) const {
    throw FormatError(where_ + ": key '" + key + "' must be " + kind + " (found " + v.dump() + ")");
  }

 private:
  const json& j_;
  const std::string& where_;
};

Activation parse_activation(const std::string& where, const std::string& key, const std::string& name) {
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::gelu_tanh;
  if (name == "relu") return Activation::relu;
  throw ConfigError(where + ": " + key + " '" + name + "' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh, relu)");
}

std::vector<int64_t> parse_token_ids(const Keys& keys, const std::string& key) {
  std::vector<int64_t> ids;
  if (const json* v = keys.find(key)) {
    if (v->is_array()) {
      for (const auto& id : *v) ids.push_back(keys.as_integer(key, id));
    } else {
      ids.push_back(keys.as_integer(key, *v));
    }
  }
  return ids;
}

// RoPE theta and scaling: transformers 4.x has top-level rope_theta and rope_scaling (null or an
// object); 5.x has rope_parameters {rope_type, rope_theta, factor, ...}.
void parse_rope(const Keys& keys, const std::string& where, DecoderConfig* c) {
  c->rope_theta = keys.number("rope_theta", 10000.0);
  const json* scaling = keys.find("rope_scaling");
  std::string scaling_key = "rope_scaling";
  if (const json* params = keys.find("rope_parameters")) {
    if (!params->is_object()) keys.bad("rope_parameters", "an object");
    if (params->contains("rope_theta")) c->rope_theta = keys.as_number("rope_parameters.rope_theta", params->at("rope_theta"));
    scaling = params;
    scaling_key = "rope_parameters";
  }
  if (scaling == nullptr) return;
  if (!scaling->is_object()) keys.bad(scaling_key, "an object");
  const Keys s(*scaling, where);
  const std::string type = s.has("rope_type") ? s.string("rope_type") : s.string("type", "default");
  if (type == "default") return;
  auto sub = [&](const std::string& k) { return scaling_key + "." + k; };
  auto number = [&](const std::string& k) {
    if (!s.has(k)) throw FormatError(where + ": missing key '" + sub(k) + "'");
    return s.as_number(sub(k), scaling->at(k));
  };
  if (type == "linear") {
    c->rope_scaling = RopeScaling::linear;
    c->rope_factor = number("factor");
  } else if (type == "llama3") {
    c->rope_scaling = RopeScaling::llama3;
    c->rope_factor = number("factor");
    c->rope_low_freq_factor = number("low_freq_factor");
    c->rope_high_freq_factor = number("high_freq_factor");
    if (!s.has("original_max_position_embeddings")) {
      throw FormatError(where + ": missing key '" + sub("original_max_position_embeddings") + "'");
    }
    c->rope_original_max_position =
        s.as_integer(sub("original_max_position_embeddings"), scaling->at("original_max_position_embeddings"));
  } else {
    throw ConfigError(where + ": " + sub("rope_type") + " '" + type + "' is not supported (default, linear, llama3)");
  }
}

void check_architectures(const Keys& keys, const std::string& where, const std::string& expected) {
  const json* archs = keys.find("architectures");
  if (archs == nullptr) return;
  if (!archs->is_array()) keys.bad("architectures", "a list");
  for (const auto& a : *archs) {
    if (!a.is_string() || a.get<std::string>() != expected) {
      throw ConfigError(where + ": architectures " + archs->dump() + " is not supported (expected [\"" + expected +
                        "\"], a causal LM)");
    }
  }
}

DecoderConfig parse_llama_like(const Keys& keys, const std::string& where, ModelFamily family) {
  DecoderConfig c;
  c.family = family;
  const bool qwen = family == ModelFamily::qwen2;
  check_architectures(keys, where, qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
  c.vocab_size = keys.integer("vocab_size");
  c.hidden_size = keys.integer("hidden_size");
  c.intermediate_size = keys.integer("intermediate_size");
  c.num_layers = keys.integer("num_hidden_layers");
  c.num_heads = keys.integer("num_attention_heads");
  c.num_kv_heads = keys.integer("num_key_value_heads", c.num_heads);
  c.head_dim = keys.integer("head_dim", 0);
  c.max_position = keys.integer("max_position_embeddings", qwen ? 32768 : 2048);
  c.norm = NormKind::rms;
  c.norm_eps = keys.number("rms_norm_eps", 1e-6);
  c.positions = PositionKind::rope;
  parse_rope(keys, where, &c);
  c.gated_mlp = true;
  c.activation = parse_activation(where, "hidden_act", keys.string("hidden_act", "silu"));
  if (qwen) {
    c.attn_qkv_bias = true;
    c.attn_out_bias = false;
    c.mlp_bias = false;
    if (keys.boolean("use_sliding_window", false)) {
      throw ConfigError(where + ": use_sliding_window true is not supported (full attention only)");
    }
    if (const json* types = keys.find("layer_types")) {
      for (const auto& t : *types) {
        if (t != "full_attention") {
          throw ConfigError(where + ": layer_types " + t.dump() + " is not supported (full_attention only)");
        }
      }
    }
  } else {
    c.attn_qkv_bias = c.attn_out_bias = keys.boolean("attention_bias", false);
    c.mlp_bias = keys.boolean("mlp_bias", false);
  }
  c.tie_embeddings = keys.boolean("tie_word_embeddings", false);
  c.attention_dropout = keys.number("attention_dropout", 0.0);
  return c;
}

DecoderConfig parse_gpt2(const Keys& keys, const std::string& where) {
  DecoderConfig c;
  c.family = ModelFamily::gpt2;
  check_architectures(keys, where, "GPT2LMHeadModel");
  c.vocab_size = keys.integer("vocab_size");
  c.hidden_size = keys.integer("n_embd");
  c.num_layers = keys.integer("n_layer");
  c.num_heads = keys.integer("n_head");
  c.num_kv_heads = c.num_heads;
  c.head_dim = 0;
  c.intermediate_size = keys.integer("n_inner", 4 * c.hidden_size);
  c.max_position = keys.integer("n_positions", 1024);
  c.norm = NormKind::layer;
  c.norm_eps = keys.number("layer_norm_epsilon", 1e-5);
  c.positions = PositionKind::learned;
  c.gated_mlp = false;
  c.activation = parse_activation(where, "activation_function", keys.string("activation_function", "gelu_new"));
  c.attn_qkv_bias = c.attn_out_bias = c.mlp_bias = true;
  c.tie_embeddings = keys.boolean("tie_word_embeddings", true);
  c.dropout = keys.number("resid_pdrop", 0.1);
  c.attention_dropout = keys.number("attn_pdrop", 0.1);
  if (!keys.boolean("scale_attn_weights", true)) {
    throw ConfigError(where + ": scale_attn_weights false is not supported");
  }
  if (keys.boolean("scale_attn_by_inverse_layer_idx", false)) {
    throw ConfigError(where + ": scale_attn_by_inverse_layer_idx true is not supported");
  }
  if (keys.boolean("add_cross_attention", false)) throw ConfigError(where + ": add_cross_attention true is not supported");
  return c;
}

const char* activation_name(Activation a, ModelFamily family) {
  switch (a) {
    case Activation::silu: return "silu";
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return family == ModelFamily::gpt2 ? "gelu_new" : "gelu_pytorch_tanh";
    case Activation::relu: return "relu";
  }
  return "?";
}

json token_ids(int64_t id) { return id >= 0 ? json(id) : json(nullptr); }
json token_ids(const std::vector<int64_t>& ids) {
  if (ids.empty()) return nullptr;
  if (ids.size() == 1) return ids[0];
  return ids;
}

// Throws ConfigError unless `ok`: the family's HF class cannot express the config.
void require(bool ok, const DecoderConfig& c, const std::string& what) {
  if (!ok) throw ConfigError(std::string("cannot export a ") + to_string(c.family) + " model to HF: " + what);
}

}  // namespace

DecoderConfig config_from_hf(const json& config, const std::string& where) {
  if (!config.is_object()) throw FormatError(where + ": not a JSON object");
  const Keys keys(config, where);
  const std::string type = keys.string("model_type");
  DecoderConfig c;
  if (type == "llama") {
    c = parse_llama_like(keys, where, ModelFamily::llama);
  } else if (type == "qwen2") {
    c = parse_llama_like(keys, where, ModelFamily::qwen2);
  } else if (type == "gpt2") {
    c = parse_gpt2(keys, where);
  } else {
    throw ConfigError(where + ": model_type '" + type + "' is not supported (llama, qwen2, gpt2)");
  }
  const auto bos = parse_token_ids(keys, "bos_token_id");
  c.bos_token_id = bos.empty() ? -1 : bos.front();
  c.eos_token_ids = parse_token_ids(keys, "eos_token_id");
  c.initializer_range = keys.number("initializer_range", 0.02);
  validate(c, where, /*hf_names=*/true);
  return c;
}

json config_to_hf(const DecoderConfig& c) {
  validate(c);
  json j;
  const int64_t head_dim = c.resolved_head_dim();
  if (c.family == ModelFamily::gpt2) {
    require(c.norm == NormKind::layer, c, "gpt2 uses LayerNorm");
    require(c.positions == PositionKind::learned, c, "gpt2 uses learned positions");
    require(!c.gated_mlp, c, "gpt2 has no gated MLP");
    require(c.attn_qkv_bias && c.attn_out_bias && c.mlp_bias, c, "gpt2 has biases on every projection");
    require(c.num_kv_heads == c.num_heads, c, "gpt2 has no grouped-query attention");
    require(head_dim * c.num_heads == c.hidden_size, c, "gpt2 has head_dim = n_embd / n_head");
    j["architectures"] = {"GPT2LMHeadModel"};
    j["model_type"] = "gpt2";
    j["vocab_size"] = c.vocab_size;
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_layers;
    j["n_head"] = c.num_heads;
    j["n_inner"] = c.intermediate_size;
    j["n_positions"] = c.max_position;
    j["activation_function"] = activation_name(c.activation, c.family);
    j["layer_norm_epsilon"] = c.norm_eps;
    j["resid_pdrop"] = c.dropout;
    j["embd_pdrop"] = c.dropout;
    j["attn_pdrop"] = c.attention_dropout;
    j["scale_attn_weights"] = true;
  } else {
    const bool qwen = c.family == ModelFamily::qwen2;
    require(c.norm == NormKind::rms, c, "it uses RMSNorm");
    require(c.positions == PositionKind::rope, c, "it uses rotary embeddings");
    require(c.gated_mlp, c, "it has a gated MLP");
    if (qwen) {
      require(c.attn_qkv_bias && !c.attn_out_bias && !c.mlp_bias, c, "qwen2 has q/k/v biases only");
    } else {
      require(c.attn_qkv_bias == c.attn_out_bias, c, "llama's attention_bias covers q/k/v and o alike");
    }
    j["architectures"] = {qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
    j["model_type"] = qwen ? "qwen2" : "llama";
    j["vocab_size"] = c.vocab_size;
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_hidden_layers"] = c.num_layers;
    j["num_attention_heads"] = c.num_heads;
    j["num_key_value_heads"] = c.num_kv_heads;
    j["head_dim"] = head_dim;
    j["hidden_act"] = activation_name(c.activation, c.family);
    j["max_position_embeddings"] = c.max_position;
    j["rms_norm_eps"] = c.norm_eps;
    j["attention_dropout"] = c.attention_dropout;
    if (qwen) {
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
    } else {
      j["attention_bias"] = c.attn_qkv_bias;
      j["mlp_bias"] = c.mlp_bias;
    }
    // Both spellings: transformers 4.x reads rope_theta/rope_scaling, 5.x rope_parameters.
    json scaling = nullptr;
    if (c.rope_scaling == RopeScaling::linear) {
      scaling = {{"rope_type", "linear"}, {"factor", c.rope_factor}};
    } else if (c.rope_scaling == RopeScaling::llama3) {
      scaling = {{"rope_type", "llama3"},
                 {"factor", c.rope_factor},
                 {"low_freq_factor", c.rope_low_freq_factor},
                 {"high_freq_factor", c.rope_high_freq_factor},
                 {"original_max_position_embeddings", c.rope_original_max_position}};
    }
    j["rope_theta"] = c.rope_theta;
    j["rope_scaling"] = scaling;
    json params = scaling.is_null() ? json{{"rope_type", "default"}} : scaling;
    params["rope_theta"] = c.rope_theta;
    j["rope_parameters"] = params;
  }
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["bos_token_id"] = token_ids(c.bos_token_id);
  j["eos_token_id"] = token_ids(c.eos_token_ids);
  j["initializer_range"] = c.initializer_range;
  j["use_cache"] = true;
  return j;
}

}  // namespace fedsplit
