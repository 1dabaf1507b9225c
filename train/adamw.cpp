#include "train/adamw.h"

#include <cmath>

#include "core/util/compat.h"

namespace fedsplit {

AdamW::AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& params, AdamWOptions options)
    : options_(options) {
  for (const auto& [name, value] : params) {
    if (!value.requires_grad()) continue;
    params_.push_back({name, value, value.dim() >= 2, torch::zeros_like(value, torch::MemoryFormat::Contiguous),
                       torch::zeros_like(value, torch::MemoryFormat::Contiguous)});
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
#if FEDSPLIT_TORCH_AT_LEAST(2, 1)
  if (!params_.empty() && params_.front().value.is_cuda()) return step_fused(lr);
#endif
  step_per_tensor(lr);
}

#if FEDSPLIT_TORCH_AT_LEAST(2, 1)
// LibTorch's fused AdamW kernel: the same update as step_per_tensor, one launch per group instead
// of ~6 per parameter (which dominate small models on a GPU).
void AdamW::step_fused(double lr) {
  for (const bool decay : {true, false}) {
    std::vector<at::Tensor> values, grads, avgs, sqs, steps;
    torch::Tensor step_count;  // one tensor for the whole group: the kernel only reads it
    for (auto& p : params_) {
      if (p.decay != decay || !p.value.grad().defined()) continue;
      if (!step_count.defined())
        step_count = torch::full({}, static_cast<double>(steps_), p.value.options().dtype(torch::kFloat));
      values.push_back(p.value);
      grads.push_back(p.value.grad());
      avgs.push_back(p.exp_avg);
      sqs.push_back(p.exp_avg_sq);
      steps.push_back(step_count);
    }
    if (values.empty()) continue;
    // The kernel reads the step count (already incremented for this update) from `steps`.
    at::_fused_adamw_(values, grads, avgs, sqs, /*max_exp_avg_sqs=*/{}, steps, lr, options_.beta1, options_.beta2,
                      decay ? options_.weight_decay : 0.0, options_.eps, /*amsgrad=*/false, /*maximize=*/false,
                      /*grad_scale=*/std::nullopt, /*found_inf=*/std::nullopt);
  }
}
#else
void AdamW::step_fused(double lr) { step_per_tensor(lr); }
#endif

void AdamW::step_per_tensor(double lr) {
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(steps_));
  const double step_size = lr / bias1;
  const double bias2_sqrt = std::sqrt(bias2);
  for (auto& p : params_) {
    const auto& grad = p.value.grad();
    if (!grad.defined()) continue;
    if (p.decay && options_.weight_decay != 0.0) p.value.mul_(1.0 - lr * options_.weight_decay);
    p.exp_avg.mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
    p.exp_avg_sq.mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    auto denom = (p.exp_avg_sq.sqrt() / bias2_sqrt).add_(options_.eps);
    p.value.addcdiv_(p.exp_avg, denom, -step_size);
  }
}

void AdamW::zero_grad() {
  // Dropping the gradients (rather than zeroing them) lets backward write fresh ones: no memset
  // kernel per parameter and no accumulation into zeros.
  for (auto& p : params_) p.value.mutable_grad() = torch::Tensor();
}

torch::Tensor clip_grad_norm(const std::vector<AdamW::Param>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.value.grad().defined()) grads.push_back(p.value.grad());
  if (grads.empty()) return torch::zeros({});
  std::vector<torch::Tensor> norms = at::_foreach_norm(grads, 2);
  for (auto& n : norms) n = n.to(torch::kFloat);
  auto total = torch::stack(norms).norm(2);
  if (max_norm > 0) {
    // Scale on the device: no host round trip, so a GPU never waits for the CPU here.
    auto scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
#if FEDSPLIT_TORCH_AT_LEAST(2, 1)
    at::_foreach_mul_(grads, scale);
#else
    for (auto& g : grads) g.mul_(scale.to(g.scalar_type()));
#endif
  }
  return total;
}
}  // namespace fedsplit
