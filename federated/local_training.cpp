#include "federated/local_training.h"

#include <cmath>

#include "core/data/dataset.h"
#include "core/util/compat.h"
#include "core/util/error.h"
#include "train/adamw.h"

namespace fedsplit {
namespace {

std::vector<std::pair<std::string, torch::Tensor>> trainable(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model.named_parameters())
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

// Plain SGD with optional heavy-ball momentum; buffers live only for the round.
void sgd_step(std::vector<AdamW::Param>& params, double lr, double momentum) {
  torch::NoGradGuard no_grad;
  for (auto& p : params) {
    if (!p.value.grad().defined()) continue;
    torch::Tensor step = p.value.grad();
    if (momentum > 0) {
      if (!p.exp_avg.defined() || p.exp_avg.numel() == 0) p.exp_avg = torch::zeros_like(p.value);
      p.exp_avg.mul_(momentum).add_(step);
      step = p.exp_avg;
    }
    p.value.add_(step, -lr);
  }
}

}  // namespace

LocalResult train_locally(torch::nn::Module& model, const LogitsFn& logits_fn, TokenDataset& data,
                          const LocalTrainingOptions& o, torch::Device device,
                          const std::function<void()>& mask_gradients, const TensorMap* global,
                          const std::function<void(Batch&)>& change_batch) {
  AdamW optimizer(trainable(model), AdamWOptions{o.beta1, o.beta2, o.eps, o.weight_decay});
  if (optimizer.params().empty()) throw ConfigError("the model has no trainable parameters: nothing to train");
  const bool autocast = o.bf16 && device.is_cuda();
  model.train();
  LocalResult result;
  double loss_total = 0;
  for (int64_t step = 0; step < o.steps; ++step) {
    optimizer.zero_grad();
    Batch batch = data.next_batch();
    if (change_batch) change_batch(batch);
    auto ids = batch.input_ids.to(device);
    auto targets = batch.targets.to(device);
    torch::Tensor loss;
    {
      compat::AutocastBF16 guard(autocast);
      loss = next_token_loss(logits_fn(ids), targets);
    }
    loss.backward();
    if (global && o.fedprox_mu > 0) {
      // d/dw of mu/2 ||w - w_global||² is mu (w - w_global).
      torch::NoGradGuard no_grad;
      for (auto& p : optimizer.params())
        if (p.value.grad().defined()) p.value.grad().add_(p.value - global->at(p.name).to(device), o.fedprox_mu);
    }
    if (mask_gradients) mask_gradients();
    clip_grad_norm(optimizer.params(), o.grad_clip);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) {
      result.finite = false;
      break;
    }
    if (o.optimizer == "sgd")
      sgd_step(optimizer.params(), o.lr, o.momentum);
    else
      optimizer.step(o.lr);
    loss_total += value;
    result.tokens += targets.numel();
    ++result.steps;
  }
  result.mean_loss = result.steps ? loss_total / static_cast<double>(result.steps) : std::nan("");
  return result;
}

}  // namespace fedsplit
