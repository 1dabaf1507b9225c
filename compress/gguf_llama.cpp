#include "compress/gguf_llama.h"

#include <torch/torch.h>

#include <cctype>
#include <map>

#include "core/util/error.h"

namespace fedsplit {
namespace {

// Decoder module path inside a layer -> GGUF tensor stem inside a block.
const std::map<std::string, std::string>& block_names() {
  static const std::map<std::string, std::string> names = {
      {"input_layernorm", "attn_norm"},  {"post_attention_layernorm", "ffn_norm"},
      {"self_attn.q_proj", "attn_q"},    {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},    {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},     {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},
  };
  return names;
}

// Splits "<stem>.<weight|bias>" into its parts; false when the suffix is neither.
bool split_suffix(const std::string& name, std::string* stem, std::string* suffix) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  *suffix = name.substr(dot + 1);
  *stem = name.substr(0, dot);
  return *suffix == "weight" || *suffix == "bias";
}

// Parses the decimal layer index at the start of `s` ("12.self_attn..."), setting `rest` to what follows the dot.
bool parse_index(const std::string& s, int64_t* index, std::string* rest) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 9 || i >= s.size() || s[i] != '.') return false;
  *index = std::stoll(s.substr(0, i));
  *rest = s.substr(i + 1);
  return true;
}

std::string refuse(const DecoderConfig& c, const std::string& what) {
  return std::string("a ") + to_string(c.family) + " model with " + what +
         " cannot be exported to GGUF (fedsplit writes llama.cpp's llama and qwen2 architectures only)";
}

const GgufValue& require(const GgufMetadata& meta, const std::string& key, const std::string& where) {
  const GgufValue* v = meta.find(key);
  if (!v) throw FormatError(where + ": metadata key '" + key + "' is missing (not a llama-family GGUF model?)");
  return *v;
}

double gguf_float(const GgufMetadata& meta, const std::string& key, const std::string& where) {
  const GgufValue& v = require(meta, key, where);
  if (auto p = v.get_if<float>()) return *p;
  if (auto p = v.get_if<double>()) return *p;
  throw FormatError(where + ": metadata '" + key + "' is a " + gguf_type_name(static_cast<uint32_t>(v.type())) +
                    ", expected f32");
}

}  // namespace

uint64_t gguf_uint(const GgufMetadata& meta, const std::string& key, const std::string& where) {
  const GgufValue& v = require(meta, key, where);
  if (auto p = v.get_if<uint8_t>()) return *p;
  if (auto p = v.get_if<uint16_t>()) return *p;
  if (auto p = v.get_if<uint32_t>()) return *p;
  if (auto p = v.get_if<uint64_t>()) return *p;
  int64_t s = -1;
  if (auto p = v.get_if<int8_t>()) s = *p;
  if (auto p = v.get_if<int16_t>()) s = *p;
  if (auto p = v.get_if<int32_t>()) s = *p;
  if (auto p = v.get_if<int64_t>()) s = *p;
  if (s >= 0) return static_cast<uint64_t>(s);
  throw FormatError(where + ": metadata '" + key + "' is a " + gguf_type_name(static_cast<uint32_t>(v.type())) +
                    ", expected a non-negative integer");
}

std::string gguf_string(const GgufMetadata& meta, const std::string& key, const std::string& where) {
  const GgufValue& v = require(meta, key, where);
  if (auto p = v.get_if<std::string>()) return *p;
  throw FormatError(where + ": metadata '" + key + "' is a " + gguf_type_name(static_cast<uint32_t>(v.type())) +
                    ", expected a string");
}

std::string gguf_architecture(const DecoderConfig& c) {
  if (c.family == ModelFamily::gpt2)
    throw ConfigError("gpt2 models cannot be exported to GGUF yet (fedsplit writes llama.cpp's llama and qwen2 "
                      "architectures); export it with `fedsplit export hf` instead");
  if (c.norm != NormKind::rms) throw ConfigError(refuse(c, "LayerNorm"));
  if (c.positions != PositionKind::rope) throw ConfigError(refuse(c, "learned positions"));
  if (!c.gated_mlp || c.activation != Activation::silu) throw ConfigError(refuse(c, "a non-SiLU-gated MLP"));
  if (c.rope_scaling == RopeScaling::llama3) throw ConfigError(refuse(c, "llama3 RoPE scaling"));
  if (c.family == ModelFamily::qwen2) {
    if (!c.attn_qkv_bias || c.attn_out_bias || c.mlp_bias)
      throw ConfigError(refuse(c, "biases other than q/k/v's (llama.cpp's qwen2 has exactly those)"));
    if (c.rope_scaling != RopeScaling::none) throw ConfigError(refuse(c, "RoPE scaling"));
    return "qwen2";
  }
  return "llama";
}

std::string gguf_tensor_name(const std::string& parameter) {
  if (parameter == "embed_tokens.weight") return "token_embd.weight";
  if (parameter == "norm.weight") return "output_norm.weight";
  if (parameter == "lm_head.weight") return "output.weight";
  const std::string prefix = "layers.";
  int64_t index = 0;
  std::string rest, stem, suffix;
  if (parameter.compare(0, prefix.size(), prefix) == 0 && parse_index(parameter.substr(prefix.size()), &index, &rest) &&
      split_suffix(rest, &stem, &suffix)) {
    auto it = block_names().find(stem);
    if (it != block_names().end()) return "blk." + std::to_string(index) + "." + it->second + "." + suffix;
  }
  throw FormatError("parameter '" + parameter + "' has no GGUF tensor name (merge or remove adapters before exporting)");
}

std::string parameter_of_gguf_tensor(const std::string& name) {
  if (name == "token_embd.weight") return "embed_tokens.weight";
  if (name == "output_norm.weight") return "norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  const std::string prefix = "blk.";
  int64_t index = 0;
  std::string rest, stem, suffix;
  if (name.compare(0, prefix.size(), prefix) != 0 || !parse_index(name.substr(prefix.size()), &index, &rest) ||
      !split_suffix(rest, &stem, &suffix))
    return "";
  for (const auto& [module, gguf] : block_names())
    if (gguf == stem) return "layers." + std::to_string(index) + "." + module + "." + suffix;
  return "";
}

int64_t gguf_block_index(const std::string& name) {
  int64_t index = 0;
  std::string rest;
  if (name.compare(0, 4, "blk.") == 0 && parse_index(name.substr(4), &index, &rest)) return index;
  return -1;
}

int64_t rope_permute_heads(const std::string& parameter, const DecoderConfig& config, const std::string& architecture) {
  if (architecture != "llama") return 0;
  auto ends_with = [&](const std::string& s) {
    return parameter.size() >= s.size() && parameter.compare(parameter.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with("self_attn.q_proj.weight") || ends_with("self_attn.q_proj.bias")) return config.num_heads;
  if (ends_with("self_attn.k_proj.weight") || ends_with("self_attn.k_proj.bias")) return config.num_kv_heads;
  return 0;
}

// Rows of one head, in HF order, are (half h, index j) with h in {0, 1}; llama.cpp orders them (j, h).
at::Tensor permute_rope_rows(const at::Tensor& rows, int64_t heads) {
  TORCH_CHECK(heads > 0 && rows.dim() >= 1 && rows.size(0) % (2 * heads) == 0, "permute_rope_rows: ", rows.size(0),
              " rows do not split into ", heads, " heads of pairs");
  auto shape = rows.sizes().vec();
  std::vector<int64_t> split = {heads, 2, rows.size(0) / heads / 2};
  split.insert(split.end(), shape.begin() + 1, shape.end());
  return rows.reshape(split).transpose(1, 2).reshape(shape).contiguous();
}

at::Tensor unpermute_rope_rows(const at::Tensor& rows, int64_t heads) {
  TORCH_CHECK(heads > 0 && rows.dim() >= 1 && rows.size(0) % (2 * heads) == 0, "unpermute_rope_rows: ", rows.size(0),
              " rows do not split into ", heads, " heads of pairs");
  auto shape = rows.sizes().vec();
  std::vector<int64_t> split = {heads, rows.size(0) / heads / 2, 2};
  split.insert(split.end(), shape.begin() + 1, shape.end());
  return rows.reshape(split).transpose(1, 2).reshape(shape).contiguous();
}

void set_model_metadata(GgufMetadata& meta, const DecoderConfig& c, const std::string& arch, const std::string& name,
                        GgufFileType file_type) {
  const auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  meta.set("general.architecture", arch);
  meta.set("general.name", name);
  meta.set("general.file_type", static_cast<uint32_t>(file_type));
  meta.set("general.quantization_version", uint32_t{2});
  meta.set(arch + ".vocab_size", u32(c.vocab_size));
  meta.set(arch + ".context_length", u32(c.max_position));
  meta.set(arch + ".embedding_length", u32(c.hidden_size));
  meta.set(arch + ".block_count", u32(c.num_layers));
  meta.set(arch + ".feed_forward_length", u32(c.intermediate_size));
  meta.set(arch + ".attention.head_count", u32(c.num_heads));
  meta.set(arch + ".attention.head_count_kv", u32(c.num_kv_heads));
  meta.set(arch + ".attention.key_length", u32(c.resolved_head_dim()));
  meta.set(arch + ".attention.value_length", u32(c.resolved_head_dim()));
  meta.set(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps));
  meta.set(arch + ".rope.freq_base", static_cast<float>(c.rope_theta));
  meta.set(arch + ".rope.dimension_count", u32(c.resolved_head_dim()));
  if (c.rope_scaling == RopeScaling::linear) {
    meta.set(arch + ".rope.scaling.type", "linear");
    meta.set(arch + ".rope.scaling.factor", static_cast<float>(c.rope_factor));
  }
}

DecoderConfig config_from_gguf(const GgufMetadata& meta, const std::set<std::string>& names, int64_t vocab_size,
                               const std::string& where) {
  const std::string arch = gguf_string(meta, "general.architecture", where);
  if (arch != "llama" && arch != "qwen2")
    throw ConfigError(where + ": architecture '" + arch + "' is not supported (fedsplit reads llama and qwen2 GGUF models)");
  const auto u = [&](const std::string& key) { return static_cast<int64_t>(gguf_uint(meta, arch + "." + key, where)); };
  DecoderConfig c;
  c.family = arch == "qwen2" ? ModelFamily::qwen2 : ModelFamily::llama;
  c.vocab_size = vocab_size;
  c.hidden_size = u("embedding_length");
  c.num_layers = u("block_count");
  c.num_heads = u("attention.head_count");
  c.num_kv_heads = meta.find(arch + ".attention.head_count_kv") ? u("attention.head_count_kv") : c.num_heads;
  c.head_dim = meta.find(arch + ".attention.key_length") ? u("attention.key_length") : 0;
  if (c.num_heads > 0 && c.head_dim == c.hidden_size / c.num_heads) c.head_dim = 0;
  c.intermediate_size = u("feed_forward_length");
  c.max_position = u("context_length");
  c.norm = NormKind::rms;
  c.norm_eps = gguf_float(meta, arch + ".attention.layer_norm_rms_epsilon", where);
  c.positions = PositionKind::rope;
  c.rope_theta = meta.find(arch + ".rope.freq_base") ? gguf_float(meta, arch + ".rope.freq_base", where) : 10000.0;
  if (meta.find(arch + ".rope.scaling.type")) {
    const std::string type = gguf_string(meta, arch + ".rope.scaling.type", where);
    if (type == "linear") {
      c.rope_scaling = RopeScaling::linear;
      c.rope_factor = gguf_float(meta, arch + ".rope.scaling.factor", where);
    } else if (type != "none") {
      throw ConfigError(where + ": RoPE scaling '" + type + "' is not supported (fedsplit reads none and linear)");
    }
  }
  c.gated_mlp = true;
  c.activation = Activation::silu;
  c.attn_qkv_bias = names.count("blk.0.attn_q.bias") > 0;
  c.attn_out_bias = names.count("blk.0.attn_output.bias") > 0;
  c.mlp_bias = names.count("blk.0.ffn_up.bias") > 0;
  c.tie_embeddings = names.count("output.weight") == 0;
  if (meta.find("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = static_cast<int64_t>(gguf_uint(meta, "tokenizer.ggml.bos_token_id", where));
  if (meta.find("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids = {static_cast<int64_t>(gguf_uint(meta, "tokenizer.ggml.eos_token_id", where))};
  validate(c, where);
  return c;
}

}  // namespace fedsplit
