// The parameter-efficient method a recipe's [peft] section selects, applied to a loaded model
// before training: which parameters train, how the frozen base is stored, and how the trained
// adapter is saved at the end of the run.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/model/decoder.h"
#include "peft/lora.h"
#include "train/lm_job.h"

namespace fedsplit {

class Recipe;

struct PeftOptions {
  std::string method = "none";                 ///< none (full fine-tuning) | lora
  int64_t r = 8;                               ///< LoRA rank
  double alpha = 16;                           ///< LoRA scale numerator (alpha / r)
  double dropout = 0.05;                       ///< dropout on the LoRA path while training
  bool rslora = false;                         ///< scale alpha / sqrt(r)
  std::string target_modules = "q_proj v_proj";///< projections to adapt, by HF module name
  std::string rank_pattern;                    ///< per-module ranks: "regex=r" items
  std::string alpha_pattern;                   ///< per-module alphas: "regex=alpha" items
};

/// The LoraOptions the [peft] keys describe. Throws ConfigError naming the key for a malformed
/// pattern item.
LoraOptions lora_options(const PeftOptions& options);

/// Registers the [peft] keys of `recipe` on `options`. List keys: target_modules ("q_proj v_proj"),
/// rank_pattern / alpha_pattern ("regex=value" items).
void bind_peft_options(Recipe& recipe, PeftOptions& options);

/// Applies the method to `model` (on the CPU, before it moves to a device): afterwards exactly the
/// method's parameters require gradients. No-op for method = none.
void apply_peft(Decoder& model, const PeftOptions& options, uint64_t seed);

/// The train job's view of the method (apply, then save the adapter in PEFT's format), or nothing
/// for method = none. Checks the options now, so that a bad key fails before any work.
std::optional<ModelAdaptation> peft_adaptation(const PeftOptions& options);

}  // namespace fedsplit
