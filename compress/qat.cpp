#include "compress/qat.h"

#include "compress/calibration.h"
#include "core/config/recipe.h"
#include "core/util/error.h"
#include "peft/quantized.h"

namespace fedsplit {

void bind_qat_options(Recipe& r, QatOptions& o) {
  r.add("qat.bits", &o.bits, "run.mode = qat: weight bits, 8 or 4", 4, 8);
  r.add("qat.group_size", &o.group_size, "input features per weight scale (0 = per output channel)", 0, 1 << 20);
  r.add("qat.activation_bits", &o.activation_bits, "0 = weights only; 8 = projection inputs fake-quantized per token",
        0, 8);
}

WeightQuantOptions weight_quant_options(const QatOptions& o) {
  WeightQuantOptions w;
  w.bits = static_cast<int>(o.bits);
  w.group_size = o.group_size;
  return w;
}

torch::Tensor fake_quantize_activation(const torch::Tensor& x, int bits) {
  const double qmax = static_cast<double>(quant_max(bits));
  torch::Tensor q;
  {
    torch::NoGradGuard no_grad;
    const auto xf = x.detach().to(torch::kFloat32);
    const auto scale = xf.abs().amax(-1, /*keepdim=*/true) / qmax;
    const auto divisor = torch::where(scale > 0, scale, torch::ones_like(scale));
    q = (torch::round(xf / divisor).clamp(-qmax, qmax) * scale).to(x.scalar_type());
  }
  // Straight through: the value of q, the gradient of x.
  return x + (q - x).detach();
}

QatProjectionImpl::QatProjectionImpl(const ProjectionImpl& source, const WeightQuantOptions& w, int abits)
    : ProjectionImpl(source.in_features, source.out_features, source.bias.defined()),
      weight_options(w),
      activation_bits(abits) {
  torch::NoGradGuard no_grad;
  weight.set_data(source.weight.detach().clone());
  weight.requires_grad_(true);
  if (bias.defined()) {
    bias.set_data(source.bias.detach().clone());
    bias.requires_grad_(true);
  }
}

torch::Tensor QatProjectionImpl::forward(const torch::Tensor& x) {
  const auto input = activation_bits > 0 ? fake_quantize_activation(x, activation_bits) : x;
  return torch::linear(input, fake_quantize(weight, weight_options).to(input.scalar_type()),
                       bias.defined() ? bias.to(input.scalar_type()) : bias);
}

void QatProjectionImpl::pretty_print(std::ostream& stream) const {
  stream << "fedsplit::QatProjection(in_features=" << in_features << ", out_features=" << out_features
         << ", bits=" << weight_options.bits << ", group_size=" << weight_options.group_size
         << ", activation_bits=" << activation_bits << ")";
}

void check_qat_options(const Decoder& model, const QatOptions& o) {
  if (o.bits != 4 && o.bits != 8) throw ConfigError("qat.bits = " + std::to_string(o.bits) + ": use 8 or 4");
  if (o.activation_bits != 0 && o.activation_bits != 8)
    throw ConfigError("qat.activation_bits = " + std::to_string(o.activation_bits) + ": use 0 (off) or 8");
  const auto w = weight_quant_options(o);
  for (const auto& path : all_block_projection_paths(model)) {
    const int64_t in = projection_at(model, path).in_features;
    try {
      effective_group_size(w, in);
    } catch (const ConfigError& e) {
      throw ConfigError("qat.group_size = " + std::to_string(o.group_size) + " does not fit " + path + " (" +
                        std::to_string(in) + " inputs; " + e.what() + "): choose a divisor of every projection's "
                        "inputs, or 0 for per-channel scales");
    }
  }
}

void apply_qat(Decoder& model, const QatOptions& o) {
  check_qat_options(model, o);
  const auto w = weight_quant_options(o);
  for (const auto& path : all_block_projection_paths(model)) {
    auto [parent, name] = module_parent(model, path);
    const ProjectionImpl& source = child_projection(*parent, name);
    parent->replace_module(name, QatProjection(source, w, static_cast<int>(o.activation_bits)));
  }
  for (auto& p : model->parameters()) p.set_requires_grad(true);
}

QuantRecord finalize_quantized(Decoder& model, const QatOptions& o, const std::string& method) {
  check_qat_options(model, o);
  const auto w = weight_quant_options(o);
  QuantRecord record;
  record.bits = static_cast<int>(o.bits);
  record.method = method;
  record.group_size = w.group_size;
  torch::NoGradGuard no_grad;
  for (const auto& path : all_block_projection_paths(model)) {
    auto [parent, name] = module_parent(model, path);
    const ProjectionImpl& source = child_projection(*parent, name);
    const QuantizedTensor q = rtn_quantize(source.weight.detach(), w);
    Projection plain(source.in_features, source.out_features, source.bias.defined());
    plain->weight.set_data(q.weight.to(source.weight.device(), source.weight.scalar_type()));
    plain->weight.requires_grad_(false);
    if (plain->bias.defined()) {
      plain->bias.set_data(source.bias.detach().clone());
      plain->bias.requires_grad_(false);
    }
    parent->replace_module(name, plain);
    record.scales[path + ".weight"] = q.scales.to(torch::kCPU);
  }
  return record;
}

}  // namespace fedsplit
