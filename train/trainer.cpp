#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>

#include "core/data/dataset.h"
#include "core/util/compat.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/metrics.h"
#include "core/util/format.h"
#include "core/util/progress.h"
#include "train/adamw.h"
#include "train/checkpoint.h"

namespace fedsplit {
namespace {

// Copies a host batch to `device`; on CUDA through pinned memory so the copy does not make the host
// wait for the work already queued.
torch::Tensor to_device(const torch::Tensor& t, torch::Device device) {
  if (!device.is_cuda()) return t;
  return t.pin_memory().to(device, /*non_blocking=*/true);
}

// What trains is what the optimizer and checkpoints hold: frozen parameters (a PEFT method's base)
// come from the model the run starts from.
NamedTensors trainable_parameters(torch::nn::Module& model) {
  NamedTensors out;
  for (const auto& item : model.named_parameters())
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                              targets.reshape({-1}));
}

double evaluate_loss(const LogitsFn& logits_fn, const std::vector<Batch>& batches, torch::Device device, bool bf16) {
  torch::NoGradGuard no_grad;
  double total = 0;
  int64_t tokens = 0;
  for (const auto& b : batches) {
    compat::AutocastBF16 autocast(bf16 && device.is_cuda());
    auto targets = b.targets.to(device);
    auto loss = next_token_loss(logits_fn(b.input_ids.to(device)), targets);
    total += loss.item<double>() * targets.numel();
    tokens += targets.numel();
  }
  if (tokens == 0) throw DataError("no held-out batches to evaluate: raise data.val_fraction or lower data.seq_len");
  return total / tokens;
}

TrainResult train_language_model(torch::nn::Module& model, const LogitsFn& logits_fn, BatchStream& data,
                                 const TrainOptions& o, const RunContext& ctx) {
  const std::string ckpt_path = ctx.run_dir + "/checkpoint.h5";
  NamedTensors params = trainable_parameters(model);
  for (const auto& [name, t] : ctx.extra_parameters) {
    for (const auto& existing : params)
      TORCH_CHECK(existing.first != name, "extra training tensor '", name, "' has the name of a model parameter");
    if (t.requires_grad()) params.emplace_back(name, t);
  }
  AdamW optimizer(params, AdamWOptions{o.beta1, o.beta2, o.eps, o.weight_decay});
  if (optimizer.params().empty()) throw ConfigError("the model has no trainable parameters: nothing to train");

  int64_t start_step = 0;
  if (ctx.resume) {
    const CheckpointMeta meta = load_checkpoint(ckpt_path, params, &optimizer);
    start_step = meta.step;
    data.seek(DataPosition{meta.data_epoch, meta.data_index});
    log_info("resuming ", ckpt_path, " at step ", start_step);
  }
  MetricsWriter metrics(ctx.run_dir + "/metrics.jsonl", /*truncate=*/!ctx.resume);
  const auto val_batches = data.val_batches(o.eval_batches);
  const bool autocast = o.bf16 && ctx.device.is_cuda();

  auto checkpoint = [&](int64_t step, double val_loss) {
    CheckpointMeta meta;
    meta.step = step;
    const DataPosition pos = data.position();
    meta.data_epoch = pos.epoch;
    meta.data_index = pos.index;
    meta.recipe = ctx.recipe_ini;
    meta.model_config = ctx.model_config;
    nlohmann::json extra{{"val_loss", val_loss}};
    if (!ctx.adapter.empty()) extra.update({{"adapter", ctx.adapter}, {"base_model", ctx.base_model}});
    meta.extra = extra.dump();
    save_checkpoint(ckpt_path, params, &optimizer, meta, ctx.device.is_cuda());
  };
  auto evaluate = [&](int64_t step) {
    model.eval();
    double loss = 0;
    if (ctx.held_out_loss) {
      torch::NoGradGuard no_grad;
      compat::AutocastBF16 guard(autocast);
      loss = ctx.held_out_loss(val_batches);
    } else {
      loss = evaluate_loss(logits_fn, val_batches, ctx.device, o.bf16);
    }
    model.train();
    metrics.write({{"event", "eval"}, {"step", step}, {"val_loss", loss}, {"val_ppl", std::exp(loss)}});
    log_info("step ", step, " held-out loss ", fixed(loss, 4), " perplexity ", fixed(std::exp(loss), 2));
    return loss;
  };

  TrainResult result;
  result.steps = start_step;
  double val_loss = std::nan("");
  if (start_step == 0) val_loss = evaluate(0);
  model.train();
  Progress progress("train", o.steps, o.log_every);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  for (int64_t step = start_step; step < o.steps; ++step) {
    const double lr = learning_rate(o, step);
    optimizer.zero_grad();
    torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(ctx.device));
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      const Batch batch = data.next_batch();
      auto ids = to_device(batch.input_ids, ctx.device);
      auto targets = to_device(batch.targets, ctx.device);
      torch::Tensor loss;
      {
        compat::AutocastBF16 guard(autocast);
        loss = ctx.train_loss ? ctx.train_loss(ids, targets) : next_token_loss(logits_fn(ids), targets);
      }
      (loss / static_cast<double>(o.grad_accum)).backward();
      loss_sum += loss.detach();
      tokens += targets.numel();
    }
    const torch::Tensor grad_norm_t = clip_grad_norm(optimizer.params(), o.grad_clip);
    // One device-to-host read per step, for both figures.
    const auto stats = torch::stack({loss_sum / static_cast<double>(o.grad_accum), grad_norm_t.to(loss_sum.device())}).cpu();
    const double step_loss = stats[0].item<double>();
    const double grad_norm = stats[1].item<double>();
    if (!std::isfinite(step_loss))
      throw Error("loss became " + std::to_string(step_loss) + " at step " + std::to_string(step + 1) +
                  ": lower train.lr or raise train.warmup_steps");
    optimizer.step(lr);
    const int64_t done = step + 1;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    result.tokens_per_second = tokens / std::max(secs, 1e-9);
    result.last_train_loss = step_loss;
    result.steps = done;
    metrics.write({{"event", "train"}, {"step", done}, {"loss", step_loss}, {"lr", lr}, {"grad_norm", grad_norm},
                   {"tokens_per_s", result.tokens_per_second}, {"elapsed_s", secs}});
    progress.update(done, "loss " + fixed(step_loss, 4) + " lr " + fixed(lr * 1e3, 3) + "e-3 " +
                              fixed(result.tokens_per_second, 0) + " tok/s");
    const bool last = done == o.steps;
    const bool stopping = ctx.stop_after > 0 && done >= ctx.stop_after;
    if (last || (o.eval_every > 0 && done % o.eval_every == 0)) val_loss = evaluate(done);
    if (last || stopping || (o.checkpoint_every > 0 && done % o.checkpoint_every == 0)) checkpoint(done, val_loss);
    if (stopping && !last) break;
  }
  progress.finish();
  if (start_step >= o.steps) log_info("the checkpoint is already at step ", start_step, " of ", o.steps, ": nothing to do");
  if (std::isnan(val_loss) && result.steps >= o.steps) val_loss = evaluate(result.steps);
  result.val_loss = val_loss;
  return result;
}

}  // namespace fedsplit
