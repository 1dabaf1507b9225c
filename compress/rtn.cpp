#include "compress/rtn.h"

#include <torch/torch.h>

#include <string>

#include "core/util/error.h"
#include "peft/quantized.h"

namespace fedsplit {
namespace {

// Forward rounds to the grid; backward treats rounding as the identity (the straight-through
// estimator), optionally masked to the values inside the clamp range.
struct FakeQuantizeFunction : torch::autograd::Function<FakeQuantizeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& weight,
                               const torch::Tensor& scales, int64_t bits, int64_t group_size, bool zero_clipped_grad) {
    const auto w = weight.detach().to(torch::kFloat32);
    const auto per_input = scales.to(torch::kFloat32).repeat_interleave(group_size, 1);
    const auto q = quantize_to_codes(w, per_input, static_cast<int>(bits)).to(torch::kFloat32) * per_input;
    if (zero_clipped_grad) {
      const double qmax = static_cast<double>(quant_max(static_cast<int>(bits)));
      ctx->save_for_backward({w.abs() <= per_input * qmax});
    }
    ctx->saved_data["zero_clipped_grad"] = zero_clipped_grad;
    return q.to(weight.scalar_type());
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto grad = grads[0];
    if (ctx->saved_data["zero_clipped_grad"].toBool()) {
      const auto inside = ctx->get_saved_variables()[0];
      grad = grad * inside.to(grad.scalar_type());
    }
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

void check_weight(const torch::Tensor& weight, const char* what) {
  if (weight.dim() != 2)
    throw ConfigError(std::string(what) + " expects a weight [out, in], got " + std::to_string(weight.dim()) +
                      " dimensions");
}

}  // namespace

int64_t effective_group_size(const WeightQuantOptions& o, int64_t in_features) {
  if (o.bits != 4 && o.bits != 8) throw ConfigError("quantization bits must be 4 or 8, got " + std::to_string(o.bits));
  if (o.group_size < 0)
    throw ConfigError("quantization group_size must be positive (0 = per output channel), got " +
                      std::to_string(o.group_size));
  const int64_t group = o.group_size == 0 ? in_features : o.group_size;
  if (in_features <= 0 || in_features % group != 0)
    throw ConfigError("quantization group_size " + std::to_string(group) + " does not divide in_features " +
                      std::to_string(in_features));
  if (o.bits == 4 && in_features % 2 != 0)
    throw ConfigError("4-bit quantization packs two inputs per byte; in_features " + std::to_string(in_features) +
                      " is odd: use bits 8");
  return group;
}

QuantizedTensor rtn_quantize(const torch::Tensor& weight, const WeightQuantOptions& options) {
  check_weight(weight, "rtn_quantize");
  const int64_t group = effective_group_size(options, weight.size(1));
  torch::NoGradGuard no_grad;
  const auto q = quantize_weight(weight, options.bits, group);
  const auto codes = options.bits == 4 ? unpack_int4(q.data) : q.data;
  return {dequantize_weight(q.data, q.scales, options.bits, group, torch::kFloat32), codes, q.scales};
}

torch::Tensor quantize_to_codes(const torch::Tensor& values, const torch::Tensor& scales, int bits) {
  const double qmax = static_cast<double>(quant_max(bits));
  // A zero scale (all-zero group) divides by 1 instead: its values are 0, so are their codes.
  const auto divisor = torch::where(scales > 0, scales, torch::ones_like(scales));
  return torch::round(values / divisor).clamp(-qmax, qmax).to(torch::kInt8);
}

torch::Tensor fake_quantize(const torch::Tensor& weight, const WeightQuantOptions& options) {
  check_weight(weight, "fake_quantize");
  const int64_t group = effective_group_size(options, weight.size(1));
  torch::Tensor scales;
  {
    torch::NoGradGuard no_grad;
    scales = quantize_weight(weight, options.bits, group).scales;
  }
  return FakeQuantizeFunction::apply(weight, scales, static_cast<int64_t>(options.bits), group, false);
}

torch::Tensor fake_quantize_with_scales(const torch::Tensor& weight, const torch::Tensor& scales,
                                        const WeightQuantOptions& options, bool zero_clipped_grad) {
  check_weight(weight, "fake_quantize_with_scales");
  const int64_t group = effective_group_size(options, weight.size(1));
  if (scales.dim() != 2 || scales.size(0) != weight.size(0) || scales.size(1) != weight.size(1) / group)
    throw ConfigError("fake_quantize_with_scales: scales must be [" + std::to_string(weight.size(0)) + ", " +
                      std::to_string(weight.size(1) / group) + "] for group size " + std::to_string(group));
  return FakeQuantizeFunction::apply(weight, scales.detach(), static_cast<int64_t>(options.bits), group,
                                     zero_clipped_grad);
}

}  // namespace fedsplit
