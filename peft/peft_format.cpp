#include "peft/peft_format.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <set>

#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "peft/adapter_dir.h"

namespace fedsplit {
namespace {

using json = nlohmann::json;

using adapter_dir::shape_string;

// Keys whose non-default values select features fedsplit does not implement.
void reject_unsupported(const json& c, const std::string& path) {
  auto refuse = [&](const std::string& key, const std::string& why) {
    throw ConfigError(path + ": " + key + " = " + c.at(key).dump() + " is not supported by fedsplit (" + why + ")");
  };
  if (c.contains("bias") && c["bias"] != "none") refuse("bias", "only bias \"none\": base biases stay frozen");
  if (c.contains("lora_bias") && c["lora_bias"].is_boolean() && c["lora_bias"].get<bool>()) refuse("lora_bias", "LoRA-B biases");
  for (const char* key : {"modules_to_save", "layers_to_transform", "layers_pattern", "exclude_modules",
                          "layer_replication", "trainable_token_indices", "target_parameters"}) {
    if (!c.contains(key) || c[key].is_null()) continue;
    if ((c[key].is_array() || c[key].is_object()) && c[key].empty()) continue;
    refuse(key, "plain LoRA on the target projections only");
  }
  for (const char* key : {"use_qalora", "use_bdlora"})
    if (c.contains(key) && c[key].is_boolean() && c[key].get<bool>()) refuse(key, "plain LoRA only");
}

// Copies the adapter file's tensors into the LoRA parameters, checking names and shapes both ways.
void copy_adapter_tensors(Decoder& model, const TensorMap& tensors, const std::string& weights_path) {
  const ModelFamily family = model->options.family;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  for (auto& [name, parameter] : lora_parameters(model)) {
    const std::string key = peft_tensor_name(name, family);
    auto it = tensors.find(key);
    if (it == tensors.end()) throw FormatError(weights_path + ": missing tensor " + key + " (the config targets it)");
    if (it->second.sizes() != parameter.sizes())
      throw FormatError(weights_path + ": tensor " + key + " has shape " + shape_string(it->second.sizes()) +
                        ", expected " + shape_string(parameter.sizes()));
    parameter.copy_(it->second);
    used.insert(key);
  }
  for (const auto& [key, tensor] : tensors)
    if (!used.count(key))
      throw FormatError(weights_path + ": unexpected tensor " + key + " (not a LoRA weight of a target module of this model)");
}

}  // namespace

LoraOptions read_adapter_config(const std::string& path) {
  const json c = adapter_dir::read_config(path, "LORA");
  reject_unsupported(c, path);
  LoraOptions o;
  try {
    o.r = c.value("r", o.r);
    o.alpha = c.value("lora_alpha", o.alpha);
    o.dropout = c.value("lora_dropout", o.dropout);
    o.rslora = c.value("use_rslora", o.rslora);
    if (c.contains("use_dora") && !c["use_dora"].is_null()) o.use_dora = c["use_dora"].get<bool>();
    if (!c.contains("target_modules") || !c["target_modules"].is_array())
      throw ConfigError(path + ": target_modules must be a list of module names (regex strings and \"all-linear\" are not supported)");
    o.target_modules = c["target_modules"].get<std::vector<std::string>>();
    if (c.contains("rank_pattern") && !c["rank_pattern"].is_null())
      o.rank_pattern = c["rank_pattern"].get<std::map<std::string, int64_t>>();
    if (c.contains("alpha_pattern") && !c["alpha_pattern"].is_null())
      o.alpha_pattern = c["alpha_pattern"].get<std::map<std::string, double>>();
  } catch (const json::exception& e) {
    throw FormatError(path + ": a key has the wrong type (" + std::string(e.what()) + ")");
  }
  return o;
}

std::string peft_tensor_name(const std::string& lora_parameter, ModelFamily family) {
  const auto dot = lora_parameter.rfind('.');
  TORCH_CHECK(dot != std::string::npos, "not a LoRA parameter name: ", lora_parameter);
  const std::string prefix = "base_model.model." + hf_module_path(lora_parameter.substr(0, dot), family);
  // PEFT keeps DoRA's magnitude as a bare parameter of its lora_magnitude_vector ParameterDict.
  if (lora_parameter.substr(dot) == ".lora_magnitude") return prefix + ".lora_magnitude_vector";
  return prefix + lora_parameter.substr(dot) + ".weight";
}

void load_adapter(Decoder& model, const std::string& dir) {
  const std::string weights_path = adapter_dir::weights_path(dir);
  const LoraOptions options = read_adapter_config(adapter_dir::config_path(dir));
  const TensorMap tensors = adapter_dir::read_weights(dir);
  // A failed load leaves the model as it was: adapters removed, requires_grad flags restored.
  // By name: unload puts new Projection modules (sharing the base tensors) in the LoRA ones' place.
  std::map<std::string, bool> flags;
  for (const auto& item : model->named_parameters()) flags[item.key()] = item.value().requires_grad();
  apply_lora(model, options, /*seed=*/0);
  try {
    copy_adapter_tensors(model, tensors, weights_path);
  } catch (...) {
    unload_lora(model);
    for (auto& item : model->named_parameters()) item.value().requires_grad_(flags.at(item.key()));
    throw;
  }
}

void save_adapter(const Decoder& model, const std::string& dir) {
  const auto modules = lora_modules(model);
  if (modules.empty()) throw DataError("save_adapter: the model has no LoRA projections to save");
  const ModelFamily family = model->options.family;

  // The most common rank/alpha become r/lora_alpha; other modules go to the patterns by full path.
  std::map<int64_t, int> rank_count;
  std::map<double, int> alpha_count;
  for (const auto& [path, m] : modules) ++rank_count[m->r], ++alpha_count[m->alpha];
  const bool use_dora = modules.begin()->second->use_dora;
  for (const auto& [path, m] : modules)
    if (m->use_dora != use_dora)
      throw DataError("save_adapter: " + hf_module_path(path, family) +
                      " differs from the other LoRA projections in use_dora; PEFT's config has one use_dora for all");
  auto most = [](const auto& counts) {
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it)
      if (it->second > best->second) best = it;
    return best->first;
  };
  const int64_t r = most(rank_count);
  const double alpha = most(alpha_count);
  json rank_pattern = json::object(), alpha_pattern = json::object();
  std::set<std::string> leaves;
  for (const auto& [path, m] : modules) {
    const std::string hf_path = hf_module_path(path, family);
    if (m->r != r) rank_pattern[hf_path] = m->r;
    if (m->alpha != alpha) alpha_pattern[hf_path] = m->alpha;
    leaves.insert(path.substr(path.rfind('.') + 1));
  }
  // Leaf names as targets when they select exactly the adapted modules; full paths otherwise.
  size_t selected = 0;
  for (const auto& path : projection_paths(model))
    if (leaves.count(path.substr(path.rfind('.') + 1))) ++selected;
  json targets = json::array();
  if (selected == modules.size()) {
    for (const auto& leaf : leaves) targets.push_back(leaf);
  } else {
    for (const auto& [path, m] : modules) targets.push_back(hf_module_path(path, family));
  }
  const auto& first = *modules.begin()->second;
  json c = {{"peft_type", "LORA"},
            {"r", r},
            {"lora_alpha", alpha},
            {"lora_dropout", first.dropout},
            {"target_modules", targets},
            {"use_rslora", first.rslora},
            {"rank_pattern", rank_pattern},
            {"alpha_pattern", alpha_pattern},
            {"fan_in_fan_out", family == ModelFamily::gpt2},
            {"bias", "none"},
            {"use_dora", use_dora},
            {"modules_to_save", nullptr},
            {"init_lora_weights", true},
            {"inference_mode", true},
            {"task_type", "CAUSAL_LM"},
            {"base_model_name_or_path", nullptr}};

  TensorMap tensors;
  for (const auto& [name, tensor] : lora_parameters(model))
    tensors.emplace(peft_tensor_name(name, family), tensor.detach());
  adapter_dir::write(dir, c, tensors);
}

}  // namespace fedsplit
