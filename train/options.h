// Options of the training loop, filled from a recipe's [train] section.
#pragma once
#include <cstdint>
#include <string>

namespace fedsplit {

class Recipe;

struct TrainOptions {
  int64_t steps = 200;              ///< optimizer steps in the whole run
  double lr = 1e-3;                 ///< peak learning rate, reached after warmup
  double min_lr_ratio = 0.1;        ///< the cosine decays to lr * min_lr_ratio at the last step
  int64_t warmup_steps = 20;        ///< linear warmup from 0 over this many steps
  double weight_decay = 0.1;        ///< AdamW decay on matrices (dim >= 2); none on biases and norms
  double beta1 = 0.9;               ///< AdamW first-moment decay
  double beta2 = 0.95;              ///< AdamW second-moment decay
  double eps = 1e-8;                ///< AdamW denominator epsilon
  double grad_clip = 1.0;           ///< clip the global gradient L2 norm to this (0 = off)
  int64_t grad_accum = 1;           ///< micro-batches accumulated per optimizer step
  int64_t eval_every = 50;          ///< steps between held-out evaluations (0 = only at the end)
  int64_t eval_batches = 20;        ///< held-out batches per evaluation
  int64_t checkpoint_every = 100;   ///< steps between checkpoints (0 = only at the end)
  int64_t log_every = 10;           ///< steps between plain log lines when not on a terminal
  bool bf16 = true;                 ///< bf16 autocast for the forward pass on CUDA (ignored on CPU)
};

/// Registers the [train] keys of `recipe` on `options`.
void bind_train_options(Recipe& recipe, TrainOptions& options);

/// Learning rate at `step` (0-based): linear warmup, then cosine decay to lr * min_lr_ratio.
double learning_rate(const TrainOptions& options, int64_t step);

}  // namespace fedsplit
