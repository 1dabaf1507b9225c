#include "peft/bottleneck.h"

#include <ATen/CPUGeneratorImpl.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <set>
#include <typeinfo>
#include <vector>

#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "peft/adapter_dir.h"
#include "peft/lora.h"

namespace fedsplit {
namespace {

using json = nlohmann::json;

const char* const kNote = "fedsplit's own adapter type (bottleneck adapters, Houlsby et al. 2019); PEFT does not load it";

using adapter_dir::shape_string;

torch::Tensor activate(const std::string& name, const torch::Tensor& x) {
  if (name == "relu") return torch::relu(x);
  if (name == "gelu") return torch::gelu(x);
  TORCH_CHECK(name == "silu", "unknown bottleneck activation '", name, "'");
  return torch::silu(x);
}

// ConfigError naming the option; `where` says where the options came from ("bottleneck" or a file).
void validate(const BottleneckOptions& o, const std::string& where) {
  if (o.size <= 0) throw ConfigError(where + ": size must be positive, got " + std::to_string(o.size));
  if (o.placement != "houlsby" && o.placement != "pfeiffer")
    throw ConfigError(where + ": placement '" + o.placement + "' is not one of houlsby, pfeiffer");
  if (o.activation != "relu" && o.activation != "gelu" && o.activation != "silu")
    throw ConfigError(where + ": activation '" + o.activation + "' is not one of relu, gelu, silu");
  if (!std::isfinite(o.scale)) throw ConfigError(where + ": scale must be finite");
}

// One place an adapter goes: the projection `name` under `parent`, at module path `path`.
struct Site {
  std::string path;
  std::shared_ptr<torch::nn::Module> parent;
  std::string name;
};

// The projections the placement selects, block by block (attention output before MLP output).
std::vector<Site> sites(const Decoder& model, const std::string& placement) {
  const bool gpt2 = model->options.family == ModelFamily::gpt2;
  std::vector<Site> out;
  for (int64_t i = 0; i < model->num_layers(); ++i) {
    const std::string block = (gpt2 ? "h." : "layers.") + std::to_string(i);
    const Block b = model->layer(i);
    if (placement == "houlsby")
      out.push_back({block + (gpt2 ? ".attn.c_proj" : ".self_attn.o_proj"), b->attn.ptr(), gpt2 ? "c_proj" : "o_proj"});
    out.push_back({block + (gpt2 ? ".mlp.c_proj" : ".mlp.down_proj"), b->mlp.ptr(), gpt2 ? "c_proj" : "down_proj"});
  }
  return out;
}

// The file's tensor name of a parameter of the adapter at module path `path` ("adapter_down.weight").
std::string tensor_name(const std::string& path, const std::string& parameter, ModelFamily family) {
  return "base_model.model." + hf_module_path(path, family) + "." + parameter;
}

// The adapter tensors `options` gives `model`, by file name, with their shapes.
std::map<std::string, std::vector<int64_t>> expected_tensors(const Decoder& model, const BottleneckOptions& o) {
  const ModelFamily family = model->options.family;
  const int64_t d = model->options.hidden_size;  // both targets write into the residual stream
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& site : sites(model, o.placement)) {
    out[tensor_name(site.path, "adapter_down.weight", family)] = {o.size, d};
    out[tensor_name(site.path, "adapter_down.bias", family)] = {o.size};
    out[tensor_name(site.path, "adapter_up.weight", family)] = {d, o.size};
    out[tensor_name(site.path, "adapter_up.bias", family)] = {d};
  }
  return out;
}

BottleneckOptions read_config(const std::string& path, const Decoder& model) {
  const json c = adapter_dir::read_config(path, "BOTTLENECK");
  BottleneckOptions o;
  for (const char* key : {"size", "placement", "activation", "scale"})
    if (!c.contains(key)) throw FormatError(path + ": missing key " + key);
  try {
    o.size = c.at("size").get<int64_t>();
    o.placement = c.at("placement").get<std::string>();
    o.activation = c.at("activation").get<std::string>();
    o.scale = c.at("scale").get<double>();
  } catch (const json::exception& e) {
    throw FormatError(path + ": a key has the wrong type (" + std::string(e.what()) + ")");
  }
  validate(o, path);
  // target_modules is written for readers; it must agree with what the placement selects here.
  if (c.contains("target_modules")) {
    json want = json::array();
    for (const auto& site : sites(model, o.placement)) want.push_back(hf_module_path(site.path, model->options.family));
    if (c["target_modules"] != want)
      throw ConfigError(path + ": target_modules " + c["target_modules"].dump() + " does not match placement '" +
                        o.placement + "' on this model (expected " + want.dump() + ")");
  }
  return o;
}

}  // namespace

BottleneckProjectionImpl::BottleneckProjectionImpl(const ProjectionImpl& base, int64_t s, const std::string& act, double k)
    : ProjectionImpl(base.in_features, base.out_features, base.bias.defined()), size(s), activation(act), scale(k) {
  TORCH_CHECK(size > 0, "bottleneck size must be positive, got ", size);
  share_frozen(base);  // the adapter costs only its own weights
  torch::NoGradGuard no_grad;
  adapter_down = register_module("adapter_down", Projection(out_features, size, /*bias=*/true));
  adapter_up = register_module("adapter_up", Projection(size, out_features, /*bias=*/true));
  for (auto* m : {adapter_down.get(), adapter_up.get()}) {
    m->to(base.weight.device(), base.weight.scalar_type());
    m->weight.zero_();
    m->bias.zero_();
  }
}

torch::Tensor BottleneckProjectionImpl::adapter(const torch::Tensor& y) {
  return adapter_up->forward(activate(activation, adapter_down->forward(y))) * scale;
}

torch::Tensor BottleneckProjectionImpl::forward(const torch::Tensor& x) {
  const auto y = torch::linear(x, weight, bias);
  return y + adapter(y);
}

void BottleneckProjectionImpl::pretty_print(std::ostream& stream) const {
  stream << "fedsplit::BottleneckProjection(in_features=" << in_features << ", out_features=" << out_features
         << ", bias=" << (bias.defined() ? "true" : "false") << ", size=" << size << ", activation=" << activation
         << ", scale=" << scale << ")";
}

void apply_bottleneck(Decoder& model, const BottleneckOptions& o, uint64_t seed) {
  validate(o, "bottleneck");
  const auto chosen = sites(model, o.placement);
  // Only plain projections: wrapping a LoRA or another bottleneck projection would drop its update.
  for (const auto& site : chosen) {
    const ProjectionImpl& p = child_projection(*site.parent, site.name);
    if (typeid(p) != typeid(ProjectionImpl))
      throw ConfigError("bottleneck: " + site.path + " is already wrapped by an adapter; apply bottleneck adapters once, to a plain model");
  }

  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.requires_grad_(false);
  auto gen = at::detail::createCPUGenerator(seed);
  for (const auto& site : chosen) {
    BottleneckProjection wrapped(child_projection(*site.parent, site.name), o.size, o.activation, o.scale);
    // nn.Linear's default weight init, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)). Drawn
    // on the CPU so the same seed gives the same adapters on any device.
    const double bound = 1.0 / std::sqrt(static_cast<double>(wrapped->out_features));
    auto& down = wrapped->adapter_down->weight;
    down.copy_(torch::empty(down.sizes(), torch::kFloat32).uniform_(-bound, bound, gen));
    for (const auto& p : wrapped->adapter_down->parameters()) p.requires_grad_(true);
    for (const auto& p : wrapped->adapter_up->parameters()) p.requires_grad_(true);
    wrapped->train(site.parent->is_training());
    site.parent->replace_module(site.name, wrapped);
  }
}

std::map<std::string, BottleneckProjection> bottleneck_modules(const Decoder& model) {
  std::map<std::string, BottleneckProjection> out;
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    if (auto m = std::dynamic_pointer_cast<BottleneckProjectionImpl>(item.value()))
      out.emplace(item.key(), BottleneckProjection(m));
  return out;
}

void save_bottleneck_adapter(const Decoder& model, const std::string& dir) {
  const auto modules = bottleneck_modules(model);
  if (modules.empty()) throw DataError("save_bottleneck_adapter: the model has no bottleneck adapters to save");
  const ModelFamily family = model->options.family;
  const auto& first = *modules.begin()->second;
  // Houlsby adapts the attention output too, so it has twice as many adapters as blocks.
  const std::string placement = static_cast<int64_t>(modules.size()) == 2 * model->num_layers() ? "houlsby" : "pfeiffer";
  json targets = json::array();
  for (const auto& site : sites(model, placement)) {
    if (!modules.count(site.path))
      throw DataError("save_bottleneck_adapter: " + site.path + " has no adapter; the model's adapters follow no placement");
    targets.push_back(hf_module_path(site.path, family));
  }
  const json c = {{"peft_type", "BOTTLENECK"},
                  {"note", kNote},
                  {"task_type", "CAUSAL_LM"},
                  {"size", first.size},
                  {"placement", placement},
                  {"activation", first.activation},
                  {"scale", first.scale},
                  {"target_modules", targets},
                  {"base_model_name_or_path", nullptr}};
  TensorMap tensors;
  for (const auto& [path, m] : modules)
    for (const auto& item : m->named_parameters())
      if (item.key().rfind("adapter_", 0) == 0) tensors.emplace(tensor_name(path, item.key(), family), item.value().detach());
  adapter_dir::write(dir, c, tensors);
}

void load_bottleneck_adapter(Decoder& model, const std::string& dir) {
  const std::string weights_path = adapter_dir::weights_path(dir);
  const BottleneckOptions o = read_config(adapter_dir::config_path(dir), model);
  const TensorMap tensors = adapter_dir::read_weights(dir);
  const auto expected = expected_tensors(model, o);
  for (const auto& [key, shape] : expected) {
    const auto it = tensors.find(key);
    if (it == tensors.end()) throw FormatError(weights_path + ": missing tensor " + key + " (the config's placement needs it)");
    if (it->second.sizes() != at::IntArrayRef(shape))
      throw FormatError(weights_path + ": tensor " + key + " has shape " + shape_string(it->second.sizes()) +
                        ", expected " + shape_string(shape));
  }
  for (const auto& [key, tensor] : tensors)
    if (!expected.count(key))
      throw FormatError(weights_path + ": unexpected tensor " + key + " (not an adapter of placement '" + o.placement + "')");

  apply_bottleneck(model, o, /*seed=*/0);
  const ModelFamily family = model->options.family;
  torch::NoGradGuard no_grad;
  for (const auto& [path, m] : bottleneck_modules(model))
    for (auto& item : m->named_parameters())
      if (item.key().rfind("adapter_", 0) == 0) item.value().copy_(tensors.at(tensor_name(path, item.key(), family)));
}

}  // namespace fedsplit
