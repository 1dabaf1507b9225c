#include "federated/local_training.h"

#include <cmath>

#include "core/data/dataset.h"
#include "core/util/compat.h"
#include "core/util/error.h"
#include "core/util/random.h"
#include "federated/dp.h"
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

// The batch's training loss: the options' loss, or next-token cross-entropy.
torch::Tensor batch_loss(const LocalTrainingOptions& o, const LogitsFn& logits_fn, const torch::Tensor& ids,
                         const torch::Tensor& targets) {
  return o.loss ? o.loss(logits_fn(ids), ids, targets) : next_token_loss(logits_fn(ids), targets);
}

// Local DP-SGD's gradient for one batch, left in the parameters' .grad. Per-example gradients come
// from one forward/backward per row (LibTorch 1.13 has no vmap); DpSgdAccumulator clips and sums them
// one at a time, so memory holds one extra gradient whatever the batch size. Returns the batch's mean
// loss (every row has T targets, so the mean of the rows' losses is the batch loss).
torch::Tensor dp_sgd_backward(AdamW& optimizer, const LogitsFn& logits_fn, const torch::Tensor& ids,
                              const torch::Tensor& targets, const LocalTrainingOptions& o, uint64_t seed, bool autocast) {
  DpSgdAccumulator sum(o.dp_clip);
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(ids.device()));
  for (int64_t i = 0; i < ids.size(0); ++i) {
    optimizer.zero_grad();
    torch::Tensor loss;
    {
      compat::AutocastBF16 guard(autocast);
      loss = batch_loss(o, logits_fn, ids.narrow(0, i, 1), targets.narrow(0, i, 1));
    }
    loss.backward();
    loss_sum += loss.detach().to(torch::kFloat64);
    TensorMap g;
    // A parameter the example did not reach has a zero gradient (it still gets its noise).
    for (const auto& p : optimizer.params())
      g[p.name] = p.value.grad().defined() ? p.value.grad() : torch::zeros_like(p.value);
    sum.add(g);
  }
  const TensorMap mean = sum.noisy_mean(o.dp_noise_multiplier, seed);
  torch::NoGradGuard no_grad;
  for (auto& p : optimizer.params()) p.value.mutable_grad() = mean.at(p.name).to(p.value.scalar_type());
  return loss_sum / static_cast<double>(ids.size(0));
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
    if (o.dp_sgd) {
      loss = dp_sgd_backward(optimizer, logits_fn, ids, targets, o,
                             splitmix64(o.dp_noise_seed ^ splitmix64(static_cast<uint64_t>(step))), autocast);
    } else {
      {
        compat::AutocastBF16 guard(autocast);
        loss = batch_loss(o, logits_fn, ids, targets);
      }
      loss.backward();
    }
    if (global && o.fedprox_mu > 0) {
      // d/dw of mu/2 ||w - w_global||² is mu (w - w_global).
      torch::NoGradGuard no_grad;
      for (auto& p : optimizer.params())
        if (p.value.grad().defined()) p.value.grad().add_(p.value - global->at(p.name).to(device), o.fedprox_mu);
    }
    if (mask_gradients) mask_gradients();
    if (!o.dp_sgd) clip_grad_norm(optimizer.params(), o.grad_clip);  // DP-SGD bounded each example instead
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
