// run.mode = prune: pruning of a trained model (model.init) — structured (whole attention heads
// and MLP channels, the model shrinks) and/or unstructured / N:M (weights set to zero), by
// magnitude or Wanda on calibration batches from the training split — then optional recovery
// fine-tuning with [train]'s settings: of the whole model, the pruned weights held at zero, or of
// LoRA adapters ([peft] keys) merged in at the end (structured pruning only: a merged update would
// fill the zeros). The result lands in <run.dir>/model; summary.json has held-out loss at each stage.
#pragma once
#include <optional>
#include <string>

#include "train/lm_job.h"

namespace fedsplit {

class Recipe;
struct PeftOptions;

/// The [prune] keys.
struct PruneJobOptions {
  std::string method = "wanda";       ///< magnitude | wanda
  double sparsity = 0.5;              ///< unstructured: fraction of each projection's weights set to zero (0 = none)
  std::string pattern = "unstructured";  ///< unstructured | N:M (e.g. 2:4: n of every m consecutive inputs kept)
  bool per_row = true;                ///< unstructured: compare weights within each output row (else the whole matrix)
  double head_fraction = 0;           ///< structured: fraction of query heads removed per key/value group
  double channel_fraction = 0;        ///< structured: fraction of MLP channels removed per block
  int64_t calibration_batches = 16;   ///< training batches Wanda sees
  int64_t recovery_steps = 0;         ///< fine-tuning steps after pruning ([train] lr, schedule, ...); 0 = none
  std::string recovery = "full";      ///< full | lora (adapters from the [peft] keys, merged at the end)
};

void bind_prune_options(Recipe& recipe, PruneJobOptions& options);

/// Runs the job; returns the final held-out loss, or nothing when run.stop_after ended it early.
std::optional<double> run_prune_job(const LmJobOptions& lm, const PruneJobOptions& options, const PeftOptions& peft,
                     const std::string& recipe_ini, bool resume);

}  // namespace fedsplit
