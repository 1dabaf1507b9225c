#include "peft/lora.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <regex>
#include <set>
#include <sstream>

#include "core/model/hf.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

bool ends_with_module(const std::string& path, const std::string& name) {
  if (path == name) return true;
  return path.size() > name.size() && path.compare(path.size() - name.size(), name.size(), name) == 0 &&
         path[path.size() - name.size() - 1] == '.';
}

// PEFT's rule for rank_pattern / alpha_pattern: the first key (here in map order) whose regex
// matches the whole path after an optional "<anything>." prefix.
template <typename T>
const T* pattern_value(const std::map<std::string, T>& patterns, const std::string& path) {
  for (const auto& [key, value] : patterns) {
    try {
      if (std::regex_match(path, std::regex("(.*\\.)?(" + key + ")"))) return &value;
    } catch (const std::regex_error& e) {
      throw ConfigError("LoRA pattern key '" + key + "' is not a valid regular expression: " + e.what());
    }
  }
  return nullptr;
}

}  // namespace

LoraProjectionImpl::LoraProjectionImpl(const ProjectionImpl& base, int64_t rank, double a, double p, bool rs, bool dora)
    : ProjectionImpl(base.in_features, base.out_features, base.bias.defined()),
      r(rank),
      alpha(a),
      dropout(p),
      rslora(rs),
      use_dora(dora) {
  TORCH_CHECK(rank > 0, "LoRA rank must be positive, got ", rank);
  scaling = rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
  share_frozen(base);  // a model with LoRA costs only A and B extra
  torch::NoGradGuard no_grad;
  if (dynamic_cast<const QuantizedProjectionImpl*>(&base)) {
    quantized_base = std::dynamic_pointer_cast<QuantizedProjectionImpl>(
        std::const_pointer_cast<torch::nn::Module>(base.shared_from_this()));
    // The very tensors (not copies) of the base: to(device) here moves what quantized_base reads.
    register_buffer("qweight", quantized_base->qweight);
    register_buffer("scales", quantized_base->scales);
  }
  const auto options = base.weight.options();
  lora_A = register_parameter("lora_A", torch::zeros({r, in_features}, options));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, r}, options));
  if (use_dora) lora_magnitude = register_parameter("lora_magnitude", torch::zeros({out_features}, options));
}

torch::Tensor LoraProjectionImpl::base_linear(const torch::Tensor& x) const {
  return quantized_base ? quantized_base->linear_no_bias(x) : torch::linear(x, weight);
}

torch::Tensor LoraProjectionImpl::base_weight(torch::Dtype dtype) const {
  if (quantized_base) return quantized_base->dequantized_weight(dtype);
  TORCH_CHECK(!merged, "base_weight: the LoRA projection is merged; unmerge first");
  return weight.to(dtype);
}

torch::Tensor LoraProjectionImpl::dora_scale(torch::Dtype dtype) const {
  torch::Tensor norms;
  {
    // Detached (DoRA section 4.3, PEFT): the norm is a constant for backward, and autograd keeps
    // no [out, in] temporary per layer.
    torch::NoGradGuard no_grad;
    norms = (base_weight(dtype) + delta_weight().to(dtype)).norm(2, {1});
  }
  return lora_magnitude.to(dtype) / norms;
}

torch::Tensor LoraProjectionImpl::forward(const torch::Tensor& x) {
  if (merged) return torch::linear(x, weight, bias);
  if (!enabled) {
    const torch::Tensor y = base_linear(x);
    return bias.defined() ? y + bias.to(y.scalar_type()) : y;
  }
  const bool drop = dropout > 0 && is_training();
  const torch::Tensor in = dropout > 0 ? torch::dropout(x, dropout, is_training()) : x;
  const torch::Tensor lora = torch::linear(torch::linear(in, lora_A), lora_B);
  if (!use_dora) {
    if (!quantized_base) return torch::linear(x, weight, bias) + lora * scaling;
    const torch::Tensor y = base_linear(x) + lora * scaling;
    return bias.defined() ? y + bias.to(y.scalar_type()) : y;  // no fp32 promotion under autocast
  }
  const torch::Tensor scale = dora_scale(x.scalar_type());
  // Without dropout this is scale * (x W^T + s x A^T B^T) + b. With it, PEFT scales the base output
  // of the dropped-out input by (scale - 1) and adds it to the undropped base output.
  const torch::Tensor y = drop ? base_linear(x) + (scale - 1) * base_linear(in) + scale * (lora * scaling)
                               : scale * (base_linear(x) + lora * scaling);
  return bias.defined() ? y + bias.to(y.scalar_type()) : y;
}

torch::Tensor LoraProjectionImpl::delta_weight() const { return torch::matmul(lora_B, lora_A) * scaling; }

torch::Tensor LoraProjectionImpl::merged_weight() const {
  TORCH_CHECK(!merged, "merged_weight: the LoRA projection is already merged (its weight is the merged one)");
  torch::NoGradGuard no_grad;
  const auto dtype = weight.scalar_type();
  const auto w = base_weight(dtype) + delta_weight().to(dtype);
  if (!use_dora) return w;
  return (lora_magnitude.to(dtype) / w.norm(2, {1})).unsqueeze(1) * w;
}

void LoraProjectionImpl::init_magnitude() {
  TORCH_CHECK(use_dora, "init_magnitude: this LoRA projection has no DoRA magnitude");
  torch::NoGradGuard no_grad;
  const auto dtype = weight.scalar_type();
  lora_magnitude.copy_((base_weight(dtype) + delta_weight().to(dtype)).norm(2, {1}));
}

void LoraProjectionImpl::merge() {
  if (merged) return;
  torch::NoGradGuard no_grad;
  if (quantized_base) {
    // The codes stay untouched; the merged matrix lives in weight until unmerge drops it.
    weight.set_data(merged_weight());
  } else if (!use_dora) {
    weight.add_(delta_weight().to(weight.scalar_type()));
  } else {
    const auto w = weight + delta_weight().to(weight.scalar_type());
    merge_norms_ = w.norm(2, {1});
    weight.copy_((lora_magnitude / merge_norms_).unsqueeze(1) * w);
  }
  merged = true;
}

void LoraProjectionImpl::unmerge() {
  if (!merged) return;
  torch::NoGradGuard no_grad;
  if (quantized_base) {
    weight.set_data(torch::empty({0}, weight.options()));
  } else if (!use_dora) {
    weight.sub_(delta_weight().to(weight.scalar_type()));
  } else {
    const auto factor = lora_magnitude / merge_norms_.to(weight.device());
    weight.copy_(weight / factor.unsqueeze(1) - delta_weight().to(weight.scalar_type()));
    merge_norms_ = torch::Tensor();
  }
  merged = false;
}

void LoraProjectionImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  to_keeping_buffer_dtypes(*this, device, dtype, non_blocking);
}

void LoraProjectionImpl::to(torch::Dtype dtype, bool non_blocking) {
  to_keeping_buffer_dtypes(*this, c10::nullopt, dtype, non_blocking);
}

void LoraProjectionImpl::pretty_print(std::ostream& stream) const {
  stream << "fedsplit::LoraProjection(in_features=" << in_features << ", out_features=" << out_features
         << ", bias=" << (bias.defined() ? "true" : "false") << ", r=" << r << ", alpha=" << alpha
         << ", dropout=" << dropout << (use_dora ? ", dora" : "")
         << (quantized_base ? ", base_bits=" + std::to_string(quantized_base->bits) : "") << (merged ? ", merged" : "")
         << ")";
}

std::vector<std::string> projection_paths(const Decoder& model) {
  std::vector<std::string> paths;
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    if (dynamic_cast<ProjectionImpl*>(item.value().get())) paths.push_back(item.key());
  return paths;
}

std::string hf_module_path(const std::string& path, ModelFamily family) {
  const std::string name = hf_tensor_name(path + ".weight", family);
  return name.substr(0, name.size() - std::string(".weight").size());
}

void apply_lora(Decoder& model, const LoraOptions& o, uint64_t seed) {
  if (o.r <= 0) throw ConfigError("LoRA r must be positive, got " + std::to_string(o.r));
  if (!(o.dropout >= 0 && o.dropout < 1)) throw ConfigError("LoRA dropout must be in [0, 1), got " + std::to_string(o.dropout));
  if (!std::isfinite(o.alpha)) throw ConfigError("LoRA alpha must be finite");
  if (o.target_modules.empty()) throw ConfigError("LoRA target_modules is empty: name the projections to adapt (e.g. q_proj, v_proj)");
  if (!lora_modules(model).empty()) throw ConfigError("LoRA is already applied to this model; apply it once");

  const ModelFamily family = model->options.family;
  const auto paths = projection_paths(model);
  std::vector<std::string> chosen;
  for (const auto& target : o.target_modules) {
    bool found = false;
    for (const auto& path : paths)
      if (ends_with_module(hf_module_path(path, family), target)) found = true;
    if (!found) {
      std::set<std::string> leaves;
      for (const auto& path : paths) leaves.insert(path.substr(path.rfind('.') + 1));
      std::ostringstream names;
      for (const auto& leaf : leaves) names << (names.tellp() > 0 ? ", " : "") << leaf;
      throw ConfigError("LoRA target_modules entry '" + target + "' matches no projection of this " +
                        to_string(family) + " model (its projections: " + names.str() + ")");
    }
  }
  for (const auto& path : paths) {
    const std::string hf_path = hf_module_path(path, family);
    for (const auto& target : o.target_modules)
      if (ends_with_module(hf_path, target)) {
        chosen.push_back(path);
        break;
      }
  }

  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.requires_grad_(false);
  auto gen = at::detail::createCPUGenerator(seed);
  for (const auto& path : chosen) {
    const std::string hf_path = hf_module_path(path, family);
    const int64_t* r = pattern_value(o.rank_pattern, hf_path);
    const double* alpha = pattern_value(o.alpha_pattern, hf_path);
    auto [parent, name] = module_parent(model, path);
    const ProjectionImpl& base = child_projection(*parent, name);
    LoraProjection lora(base, r ? *r : o.r, alpha ? *alpha : o.alpha, o.dropout, o.rslora, o.use_dora);
    // PEFT: kaiming_uniform_(A, a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); drawn on the CPU so the
    // same seed gives the same A on any device.
    const double bound = 1.0 / std::sqrt(static_cast<double>(lora->in_features));
    lora->lora_A.copy_(torch::empty(lora->lora_A.sizes(), torch::kFloat32).uniform_(-bound, bound, gen));
    lora->lora_A.requires_grad_(true);
    lora->lora_B.requires_grad_(true);
    if (o.use_dora) {
      lora->init_magnitude();
      lora->lora_magnitude.requires_grad_(true);
    }
    lora->train(parent->is_training());
    parent->replace_module(name, lora);
  }
}

std::map<std::string, LoraProjection> lora_modules(const Decoder& model) {
  std::map<std::string, LoraProjection> out;
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    if (auto lora = std::dynamic_pointer_cast<LoraProjectionImpl>(item.value())) out.emplace(item.key(), LoraProjection(lora));
  return out;
}

std::map<std::string, torch::Tensor> lora_parameters(const Decoder& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [path, lora] : lora_modules(model)) {
    out.emplace(path + ".lora_A", lora->lora_A);
    out.emplace(path + ".lora_B", lora->lora_B);
    if (lora->lora_magnitude.defined()) out.emplace(path + ".lora_magnitude", lora->lora_magnitude);
  }
  return out;
}

void set_lora_enabled(Decoder& model, bool enabled) {
  for (auto& [path, lora] : lora_modules(model)) {
    TORCH_CHECK(!lora->merged, "set_lora_enabled: the adapter of ", path, " is merged; unmerge first");
    lora->enabled = enabled;
  }
}

void merge_lora(Decoder& model) {
  for (auto& [path, lora] : lora_modules(model)) lora->merge();
}

void unmerge_lora(Decoder& model) {
  for (auto& [path, lora] : lora_modules(model)) lora->unmerge();
}

namespace {
// Puts a plain Projection over `lora`'s current weight and bias in its place; an unmerged LoRA over
// a quantized base gives the QuantizedProjection back instead.
void replace_with_plain(Decoder& model, const std::string& path, const LoraProjection& lora) {
  torch::NoGradGuard no_grad;
  std::shared_ptr<ProjectionImpl> plain = lora->quantized_base;
  if (!plain || lora->merged)
    plain = std::make_shared<ProjectionImpl>(lora->in_features, lora->out_features, lora->bias.defined());
  // This module's weight and bias followed every to() since wrapping; the base's may not have.
  plain->weight.set_data(lora->weight.detach());
  plain->weight.requires_grad_(lora->weight.requires_grad());
  if (plain->bias.defined()) {
    plain->bias.set_data(lora->bias.detach());
    plain->bias.requires_grad_(lora->bias.requires_grad());
  }
  plain->train(lora->is_training());
  auto [parent, name] = module_parent(model, path);
  parent->replace_module(name, plain);
}
}  // namespace

void merge_and_unload(Decoder& model) {
  for (auto& [path, lora] : lora_modules(model)) {
    lora->merge();
    replace_with_plain(model, path, lora);
  }
}

void unload_lora(Decoder& model) {
  for (auto& [path, lora] : lora_modules(model)) {
    lora->unmerge();
    replace_with_plain(model, path, lora);
  }
}

}  // namespace fedsplit
