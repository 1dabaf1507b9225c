#include "train/adamw.h"

#include <cmath>

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
  for (auto& p : params_) {
    auto& g = p.value.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

double clip_grad_norm(const std::vector<AdamW::Param>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.value.grad().defined()) norms.push_back(p.value.grad().norm(2).to(torch::kFloat));
  if (norms.empty()) return 0.0;
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0 && total > max_norm) {
    const double scale = max_norm / (total + 1e-6);
    for (const auto& p : params)
      if (p.value.grad().defined()) p.value.grad().mul_(scale);
  }
  return total;
}

}  // namespace fedsplit
