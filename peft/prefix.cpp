#include "peft/prefix.h"

#include <ATen/CPUGeneratorImpl.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "peft/adapter_dir.h"

namespace fedsplit {
namespace {

using json = nlohmann::json;

// The parameter's name on the Decoder (no dots allowed in a parameter name) and PEFT's tensor name.
constexpr const char* kParameterName = "prefix_embeddings";
constexpr const char* kTensorName = "prompt_embeddings";

// PEFT's token_dim: the width of one layer's keys (or values) per virtual token.
int64_t token_dim(const Decoder& model) { return model->options.num_kv_heads * model->options.head_dim; }

int64_t prefix_width(const Decoder& model) { return model->num_layers() * 2 * token_dim(model); }

using adapter_dir::shape_string;

// An integer key of the config; FormatError if absent or not an integer.
int64_t int_key(const json& c, const std::string& key, const std::string& path) {
  if (!c.contains(key) || !c[key].is_number_integer())
    throw FormatError(path + ": key " + key + " must be an integer" + (c.contains(key) ? ", found " + c[key].dump() : " (missing)"));
  return c[key].get<int64_t>();
}

// The adapter's num_virtual_tokens, after checking that the config describes a prefix this model runs.
int64_t check_config(const json& c, const Decoder& model, const std::string& path) {
  if (c.contains("prefix_projection") && c["prefix_projection"] == true)
    throw ConfigError(path + ": prefix_projection = true is not supported by fedsplit (only the plain prefix; "
                      "train the adapter with prefix_projection false)");
  if (c.contains("num_transformer_submodules") && !c["num_transformer_submodules"].is_null() &&
      c["num_transformer_submodules"] != 1)
    throw ConfigError(path + ": num_transformer_submodules = " + c["num_transformer_submodules"].dump() +
                      " is not supported (expected 1: a decoder-only model)");
  auto expect = [&](const std::string& key, int64_t want, const std::string& what) {
    const int64_t found = int_key(c, key, path);
    if (found != want)
      throw ConfigError(path + ": " + key + " = " + std::to_string(found) + " does not fit this model: expected " +
                        std::to_string(want) + " (" + what + ")");
  };
  expect("num_layers", model->num_layers(), "its number of layers");
  expect("num_attention_heads", model->options.num_kv_heads, "its key/value heads");
  expect("token_dim", token_dim(model), "key/value heads * head_dim");
  const int64_t p = int_key(c, "num_virtual_tokens", path);
  if (p <= 0) throw ConfigError(path + ": num_virtual_tokens = " + std::to_string(p) + " must be positive");
  return p;
}

}  // namespace

void apply_prefix_tuning(Decoder& model, const PrefixOptions& o, uint64_t seed) {
  if (o.num_virtual_tokens <= 0)
    throw ConfigError("prefix num_virtual_tokens must be positive, got " + std::to_string(o.num_virtual_tokens));
  if (o.num_virtual_tokens >= model->options.max_position)
    throw ConfigError("prefix num_virtual_tokens = " + std::to_string(o.num_virtual_tokens) +
                      " leaves no position for real tokens (max_position " +
                      std::to_string(model->options.max_position) + ")");
  if (model->prefix_key_values().defined())
    throw ConfigError("the model already has prefix key/values; apply prefix tuning once");

  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.requires_grad_(false);
  // Drawn on the CPU so that the same seed gives the same prefix on any device.
  auto gen = at::detail::createCPUGenerator(seed);
  const auto init = torch::empty({o.num_virtual_tokens, prefix_width(model)}, torch::kFloat32).normal_(0.0, 1.0, gen);
  auto parameter = model->register_parameter(kParameterName, init.to(model->token_embedding().options()));
  model->set_prefix_key_values(parameter);
}

torch::Tensor prefix_embeddings(const Decoder& model) {
  const auto own = model->named_parameters(/*recurse=*/false);
  const auto* found = own.find(kParameterName);
  return found ? *found : torch::Tensor();
}

void save_prefix_adapter(const Decoder& model, const std::string& dir) {
  const torch::Tensor prefix = prefix_embeddings(model);
  if (!prefix.defined()) throw DataError("save_prefix_adapter: the model has no prefix to save (apply prefix tuning first)");
  const json c = {{"peft_type", "PREFIX_TUNING"},
                  {"task_type", "CAUSAL_LM"},
                  {"num_virtual_tokens", prefix.size(0)},
                  {"num_layers", model->num_layers()},
                  {"token_dim", token_dim(model)},
                  {"num_attention_heads", model->options.num_kv_heads},
                  {"encoder_hidden_size", token_dim(model)},
                  {"prefix_projection", false},
                  {"num_transformer_submodules", 1},
                  {"inference_mode", true},
                  {"modules_to_save", nullptr},
                  {"base_model_name_or_path", nullptr}};
  adapter_dir::write(dir, c, {{kTensorName, prefix.detach()}});
}

void load_prefix_adapter(Decoder& model, const std::string& dir) {
  const std::string config_path = adapter_dir::config_path(dir);
  const std::string weights_path = adapter_dir::weights_path(dir);
  const int64_t p = check_config(adapter_dir::read_config(config_path, "PREFIX_TUNING"), model, config_path);
  const TensorMap tensors = adapter_dir::read_weights(dir);
  for (const auto& [key, tensor] : tensors)
    if (key != kTensorName) throw FormatError(weights_path + ": unexpected tensor " + key + " (a prefix adapter holds only " + kTensorName + ")");
  const auto it = tensors.find(kTensorName);
  if (it == tensors.end()) throw FormatError(weights_path + ": missing tensor " + std::string(kTensorName));
  const std::vector<int64_t> want{p, prefix_width(model)};
  if (it->second.sizes() != at::IntArrayRef(want))
    throw FormatError(weights_path + ": tensor " + kTensorName + " has shape " + shape_string(it->second.sizes()) +
                      ", expected " + shape_string(want) + " (num_virtual_tokens, num_layers * 2 * token_dim)");

  torch::Tensor prefix = prefix_embeddings(model);
  if (prefix.defined() && prefix.size(0) != p)
    throw ConfigError(config_path + ": num_virtual_tokens = " + std::to_string(p) + " differs from the model's prefix of " +
                      std::to_string(prefix.size(0)) + " tokens; load it into a model without a prefix");
  if (!prefix.defined()) {
    apply_prefix_tuning(model, PrefixOptions{p}, /*seed=*/0);
    prefix = prefix_embeddings(model);
  }
  torch::NoGradGuard no_grad;
  prefix.copy_(it->second);
}

}  // namespace fedsplit
