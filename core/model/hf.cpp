#include "core/model/hf.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/io/hf_weights.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

using nlohmann::json;

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* hf_prefix(ModelFamily family) { return family == ModelFamily::gpt2 ? "transformer." : "model."; }

std::string shape_str(c10::IntArrayRef shape) {
  std::ostringstream ss;
  ss << shape;
  return ss.str();
}

std::string join(const std::string& dir, const std::string& name) { return (std::filesystem::path(dir) / name).string(); }

const char* dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    case torch::kFloat64: return "float64";
    default: return "float32";
  }
}

}  // namespace

std::string hf_tensor_name(const std::string& parameter, ModelFamily family) {
  if (starts_with(parameter, "lm_head.")) return parameter;
  return hf_prefix(family) + parameter;
}

std::string parameter_name(const std::string& hf_tensor, ModelFamily family) {
  if (starts_with(hf_tensor, "lm_head.")) return hf_tensor;
  std::string name = hf_tensor;
  if (starts_with(name, hf_prefix(family))) name = name.substr(std::string(hf_prefix(family)).size());
  // Buffers that old transformers versions saved: the causal mask and the RoPE frequencies.
  if (family == ModelFamily::gpt2 && starts_with(name, "h.") &&
      (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias"))) {
    return "";
  }
  if (ends_with(name, ".rotary_emb.inv_freq")) return "";
  return name;
}

bool is_transposed_in_hf(const std::string& parameter, ModelFamily family) {
  if (family != ModelFamily::gpt2 || !ends_with(parameter, ".weight")) return false;
  for (const char* m : {".attn.c_attn.", ".attn.c_proj.", ".mlp.c_fc.", ".mlp.c_proj."}) {
    if (parameter.find(m) != std::string::npos) return true;
  }
  return false;
}

std::map<std::string, std::vector<int64_t>> expected_parameters(const DecoderConfig& config) {
  validate(config);
  const auto& c = config;
  const bool gpt2 = c.family == ModelFamily::gpt2;
  const int64_t C = c.hidden_size, D = c.resolved_head_dim();
  const int64_t q = c.num_heads * D, kv = c.num_kv_heads * D, I = c.intermediate_size;
  std::map<std::string, std::vector<int64_t>> out;
  auto linear = [&](const std::string& name, int64_t in, int64_t out_features, bool bias) {
    out[name + ".weight"] = {out_features, in};
    if (bias) out[name + ".bias"] = {out_features};
  };
  auto norm = [&](const std::string& name) {
    out[name + ".weight"] = {C};
    if (c.norm == NormKind::layer) out[name + ".bias"] = {C};
  };
  out[gpt2 ? "wte.weight" : "embed_tokens.weight"] = {c.vocab_size, C};
  if (c.positions == PositionKind::learned) out[gpt2 ? "wpe.weight" : "embed_positions.weight"] = {c.max_position, C};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = (gpt2 ? "h." : "layers.") + std::to_string(i) + ".";
    norm(p + (gpt2 ? "ln_1" : "input_layernorm"));
    norm(p + (gpt2 ? "ln_2" : "post_attention_layernorm"));
    if (gpt2) {
      linear(p + "attn.c_attn", C, q + 2 * kv, c.attn_qkv_bias);
      linear(p + "attn.c_proj", q, C, c.attn_out_bias);
    } else {
      linear(p + "self_attn.q_proj", C, q, c.attn_qkv_bias);
      linear(p + "self_attn.k_proj", C, kv, c.attn_qkv_bias);
      linear(p + "self_attn.v_proj", C, kv, c.attn_qkv_bias);
      linear(p + "self_attn.o_proj", q, C, c.attn_out_bias);
    }
    if (c.gated_mlp) {
      linear(p + "mlp.gate_proj", C, I, c.mlp_bias);
      linear(p + "mlp.up_proj", C, I, c.mlp_bias);
      linear(p + "mlp.down_proj", I, C, c.mlp_bias);
    } else {
      linear(p + "mlp.c_fc", C, I, c.mlp_bias);
      linear(p + "mlp.c_proj", I, C, c.mlp_bias);
    }
  }
  norm(gpt2 ? "ln_f" : "norm");
  if (!c.tie_embeddings) out["lm_head.weight"] = {c.vocab_size, C};
  return out;
}

Decoder load_hf_model(const std::string& dir) {
  const auto config_path = join(dir, "config.json");
  json config_json;
  try {
    config_json = json::parse(read_file(config_path));
  } catch (const json::exception& e) {
    throw FormatError(config_path + ": not valid JSON (" + e.what() + ")");
  }
  const DecoderConfig config = config_from_hf(config_json, config_path);
  const auto expected = expected_parameters(config);

  std::map<std::string, std::string> sources;
  TensorMap weights = load_hf_weights(dir, &sources);
  const auto weights_label =
      path_exists(join(dir, "model.safetensors")) ? join(dir, "model.safetensors") : join(dir, "model.safetensors.index.json");

  // Check names and shapes before allocating the model.
  std::map<std::string, torch::Tensor> by_parameter;
  for (auto& [hf, tensor] : weights) {
    const std::string name = parameter_name(hf, config.family);
    if (name.empty()) continue;
    if (config.tie_embeddings && name == "lm_head.weight") continue;  // transformers ties it to the embedding
    auto it = expected.find(name);
    if (it == expected.end()) {
      throw FormatError(sources.at(hf) + ": unexpected tensor '" + hf + "' for the " + to_string(config.family) +
                        " model of " + config_path);
    }
    const bool transposed = is_transposed_in_hf(name, config.family);
    std::vector<int64_t> want = it->second;
    if (transposed) std::swap(want[0], want[1]);
    if (tensor.sizes() != c10::IntArrayRef(want)) {
      throw FormatError(sources.at(hf) + ": tensor '" + hf + "' has shape " + shape_str(tensor.sizes()) + ", expected " +
                        shape_str(want) + " from " + config_path);
    }
    if (!tensor.is_floating_point()) {
      throw FormatError(sources.at(hf) + ": tensor '" + hf + "' has dtype " + c10::toString(tensor.scalar_type()) +
                        ", expected a floating-point type");
    }
    by_parameter[name] = transposed ? tensor.t() : std::move(tensor);
  }
  weights.clear();
  for (const auto& [name, shape] : expected) {
    if (by_parameter.count(name) == 0) {
      auto want = shape;
      if (is_transposed_in_hf(name, config.family)) std::swap(want[0], want[1]);
      throw FormatError(weights_label + ": missing tensor '" + hf_tensor_name(name, config.family) + "' (shape " +
                        shape_str(want) + ")");
    }
  }

  Decoder model(config, /*init=*/false);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    auto it = by_parameter.find(item.key());
    TORCH_CHECK(it != by_parameter.end(), "internal: expected_parameters lacks ", item.key());
    item.value().copy_(it->second);
    it->second = torch::Tensor();  // the file's copy goes as the model's fills: peak memory ~1 model
  }
  model->eval();
  return model;
}

TensorMap to_hf_state_dict(const Decoder& model) {
  const auto& config = model->options;
  const auto expected = expected_parameters(config);
  TensorMap out;
  for (const auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    if (expected.count(name) == 0) {
      throw DataError("parameter '" + name + "' has no HF counterpart in a " + to_string(config.family) +
                      " model; merge or remove adapters before exporting");
    }
    auto t = item.value().detach();
    if (is_transposed_in_hf(name, config.family)) t = t.t().contiguous();
    out[hf_tensor_name(name, config.family)] = t;
  }
  if (out.size() != expected.size()) throw DataError("model lacks parameters its config implies; cannot export");
  return out;
}

void save_hf_model(const Decoder& model, const std::string& dir, int64_t max_shard_bytes) {
  auto config = config_to_hf(model->options);
  const auto dtype = model->token_embedding().scalar_type();
  config["torch_dtype"] = dtype_name(dtype);  // transformers 4.x
  config["dtype"] = dtype_name(dtype);        // transformers 5.x
  const TensorMap tensors = to_hf_state_dict(model);
  make_dirs(dir);
  save_hf_weights(dir, tensors, max_shard_bytes);
  write_text_atomically(join(dir, "config.json"), config.dump(2) + "\n");
}

Decoder load_model(const std::string& path) {
  if (std::filesystem::is_directory(path) && path_exists(join(path, "config.json"))) return load_hf_model(path);
  throw IoError("cannot load a model from " + path + ": expected a HF model directory (config.json + model.safetensors)");
}

}  // namespace fedsplit
