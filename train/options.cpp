#include "train/options.h"

#include <cmath>

#include "core/config/recipe.h"

namespace fedsplit {

void bind_train_options(Recipe& r, TrainOptions& o) {
  r.add("train.steps", &o.steps, "optimizer steps in the whole run", 1, 100000000);
  r.add("train.lr", &o.lr, "peak learning rate after warmup", 0.0, 10.0);
  r.add("train.min_lr_ratio", &o.min_lr_ratio, "final learning rate as a fraction of lr (cosine)", 0.0, 1.0);
  r.add("train.warmup_steps", &o.warmup_steps, "linear warmup steps", 0, 100000000);
  r.add("train.weight_decay", &o.weight_decay, "AdamW weight decay on matrices", 0.0, 10.0);
  r.add("train.beta1", &o.beta1, "AdamW beta1", 0.0, 0.999999);
  r.add("train.beta2", &o.beta2, "AdamW beta2", 0.0, 0.999999);
  r.add("train.eps", &o.eps, "AdamW epsilon", 1e-12, 1.0);
  r.add("train.grad_clip", &o.grad_clip, "clip the global gradient norm to this (0 = off)", 0.0, 1e6);
  r.add("train.grad_accum", &o.grad_accum, "micro-batches accumulated per optimizer step", 1, 4096);
  r.add("train.eval_every", &o.eval_every, "steps between held-out evaluations (0 = at the end)", 0, 100000000);
  r.add("train.eval_batches", &o.eval_batches, "held-out batches per evaluation", 1, 1000000);
  r.add("train.checkpoint_every", &o.checkpoint_every, "steps between checkpoints (0 = at the end)", 0, 100000000);
  r.add("train.log_every", &o.log_every, "steps between log lines when output is not a terminal", 1, 1000000);
  r.add("train.bf16", &o.bf16, "bf16 autocast on CUDA (no effect on CPU)");
}

double learning_rate(const TrainOptions& o, int64_t step) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / o.warmup_steps;
  const int64_t decay_steps = std::max<int64_t>(1, o.steps - o.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / decay_steps);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

}  // namespace fedsplit
