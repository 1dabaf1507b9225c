#include "compress/prune_job.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>

#include "compress/calibration.h"
#include "compress/job_setup.h"
#include "compress/sparsify.h"
#include "compress/structured.h"
#include "core/config/recipe.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"
#include "peft/method.h"
#include "train/trainer.h"

namespace fedsplit {
namespace {

// The n and m of an "N:M" pattern; {0, 0} for "unstructured".
std::pair<int64_t, int64_t> parse_pattern(const std::string& pattern) {
  if (pattern == "unstructured") return {0, 0};
  const auto colon = pattern.find(':');
  try {
    if (colon != std::string::npos) {
      size_t used_n = 0, used_m = 0;
      const int64_t n = std::stoll(pattern.substr(0, colon), &used_n);
      const int64_t m = std::stoll(pattern.substr(colon + 1), &used_m);
      if (used_n == colon && used_m == pattern.size() - colon - 1 && n > 0 && n < m) return {n, m};
    }
  } catch (const std::exception&) {
  }
  throw ConfigError("prune.pattern = '" + pattern + "': expected unstructured or N:M with 0 < N < M (e.g. 2:4)");
}

// Holds pruned weights at zero while training: their gradient is masked, so AdamW's moments stay
// zero and its decoupled decay keeps zero at zero.
void freeze_pruned(const Decoder& model, const PruneMasks& masks) {
  for (const auto& [path, mask] : masks) {
    auto& projection = projection_at(model, path);
    const torch::Tensor keep = mask.to(projection.weight.dtype());
    projection.weight.register_hook([keep](const torch::Tensor& grad) { return grad * keep.to(grad.dtype()); });
  }
}

}  // namespace

void bind_prune_options(Recipe& r, PruneJobOptions& o) {
  r.add_choice("prune.method", &o.method, {"magnitude", "wanda"}, "what decides which weights go (run.mode = prune)");
  r.add("prune.sparsity", &o.sparsity, "unstructured: fraction of each projection's weights set to zero", 0.0, 0.99);
  r.add("prune.pattern", &o.pattern, "unstructured, or N:M semi-structured (e.g. 2:4)");
  r.add("prune.per_row", &o.per_row, "unstructured: compare within each output row (false: the whole matrix)");
  r.add("prune.head_fraction", &o.head_fraction, "structured: fraction of query heads removed per key/value group", 0.0, 0.99);
  r.add("prune.channel_fraction", &o.channel_fraction, "structured: fraction of MLP channels removed per block", 0.0, 0.99);
  r.add("prune.calibration_batches", &o.calibration_batches, "training batches Wanda calibrates on", 0, 1 << 20);
  r.add_choice("prune.recovery", &o.recovery, {"full", "lora"},
               "recovery fine-tuning of the whole model, or of LoRA adapters ([peft] keys) merged at the end");
  r.add("prune.recovery_steps", &o.recovery_steps, "fine-tuning steps after pruning with [train]'s settings (0 = none)",
        0, std::numeric_limits<int64_t>::max());
}

std::optional<double> run_prune_job(const LmJobOptions& lm, const PruneJobOptions& o, const PeftOptions& peft,
                     const std::string& recipe_ini, bool resume) {
  const auto [n, m] = parse_pattern(o.pattern);
  const bool structured = o.head_fraction > 0 || o.channel_fraction > 0;
  const bool unstructured = m > 0 || o.sparsity > 0;
  if (!structured && !unstructured)
    throw ConfigError("run.mode = prune has nothing to do: set prune.sparsity, prune.pattern = N:M, "
                      "prune.head_fraction or prune.channel_fraction");
  const bool lora = o.recovery == "lora" && o.recovery_steps > 0;
  if (lora && unstructured)
    throw ConfigError("prune.recovery = lora: merging the adapters would fill the pruned zeros; use prune.recovery = "
                      "full with prune.sparsity / prune.pattern (LoRA suits structured pruning)");
  const LoraOptions lora_settings = lora_options(peft);
  CompressRun run = open_compress_run(lm, recipe_ini, resume, "prune");
  const int64_t base_parameters = count_parameters(run.model);
  const double base_loss = held_out_loss(run.model, run, lm.train);
  log_info("model ", lm.model.init, ": held-out loss ", base_loss, " perplexity ", std::exp(base_loss));
  const auto calibration = o.method == "wanda" ? calibration_batches(*run.data, o.calibration_batches)
                                               : std::vector<torch::Tensor>{};
  nlohmann::json summary{{"method", o.method}, {"base_model", lm.model.init}, {"base_val_loss", base_loss},
                         {"base_val_ppl", std::exp(base_loss)}, {"base_parameters", base_parameters}};

  if (structured) {
    run.model = prune_structured(run.model, calibration, {o.method, o.head_fraction, o.channel_fraction});
    const auto& c = run.model->options;
    log_info("structured: ", c.num_heads, " heads and ", c.intermediate_size, " MLP channels per block remain; ",
             count_parameters(run.model), " parameters (from ", base_parameters, ")");
    summary.update({{"heads", c.num_heads}, {"intermediate_size", c.intermediate_size}});
  }
  PruneMasks masks;
  if (unstructured) {
    SparsifyOptions sparsify;
    sparsify.method = o.method;
    sparsify.prune = {o.sparsity, o.per_row, n, m};
    masks = sparsify_model(run.model, calibration, sparsify);
  }
  const double pruned_loss = held_out_loss(run.model, run, lm.train);
  const double sparsity = projection_sparsity(run.model);
  log_info("pruned (", o.pattern, m > 0 ? "" : ", sparsity " + std::to_string(o.sparsity), "): projection sparsity ",
           sparsity, ", held-out perplexity ", std::exp(base_loss), " -> ", std::exp(pruned_loss));
  summary.update({{"pattern", o.pattern}, {"projection_sparsity", sparsity}, {"pruned_val_loss", pruned_loss},
                  {"pruned_val_ppl", std::exp(pruned_loss)}, {"parameters", count_parameters(run.model)}});

  double loss = pruned_loss;
  if (o.recovery_steps > 0) {
    freeze_pruned(run.model, masks);
    if (lora) apply_lora(run.model, lora_settings, static_cast<uint64_t>(lm.run.seed));
    TrainOptions train = lm.train;
    train.steps = o.recovery_steps;
    RunContext ctx = lm_run_context(lm, run.model, run.device, recipe_ini, resume);
    if (lora) {
      ctx.adapter = "lora";
      ctx.base_model = lm.model.init;
    }
    run.model->train();
    const TrainResult result = train_language_model(
        *run.model, [&](const torch::Tensor& ids) { return run.model->forward(ids); }, *run.data, train, ctx);
    if (result.steps < train.steps) {
      log_info("stopped after step ", result.steps, " of ", train.steps, " (run.stop_after): continue with --resume");
      return std::nullopt;
    }
    if (lora) merge_and_unload(run.model);
    loss = held_out_loss(run.model, run, lm.train);
    if (unstructured && projection_sparsity(run.model) + 1e-9 < sparsity)
      throw Error("recovery fine-tuning revived pruned weights (sparsity " + std::to_string(projection_sparsity(run.model)) +
                  " < " + std::to_string(sparsity) + "): this is a bug, please report it");
    log_info("recovery: ", o.recovery_steps, " steps, held-out perplexity ", std::exp(pruned_loss), " -> ", std::exp(loss));
    summary.update({{"recovery_steps", o.recovery_steps}, {"recovery", o.recovery}});
  }
  summary.update({{"val_loss", loss}, {"val_ppl", std::exp(loss)}});
  const std::string out = save_compressed_model(run.model, *run.tokenizer, lm.run.dir);
  write_text_atomically(lm.run.dir + "/summary.json", summary.dump(2) + "\n");
  log_info("saved the pruned model to ", out);
  return loss;
}

}  // namespace fedsplit
