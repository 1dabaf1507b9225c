// The parameter-efficient method a recipe's [peft] section selects: how the frozen base is stored,
// which parameters train, and how the trained adapter is saved and loaded again.
//
//   method      what trains                                   saved as
//   none        every parameter (full fine-tuning)            a HF model (the train job's default)
//   lora        A, B on target_modules                        PEFT LORA
//   dora        A, B and a magnitude per output row           PEFT LORA with use_dora
//   prefix      num_virtual_tokens key/value pairs per layer  PEFT PREFIX_TUNING
//   bottleneck  down/up adapters after attention and/or MLP   fedsplit BOTTLENECK (PEFT's layout)
// With base_bits = 8 or 4 (lora, dora) the frozen projections are held quantized (QLoRA-style).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/model/decoder.h"
#include "peft/bottleneck.h"
#include "peft/lora.h"
#include "peft/prefix.h"
#include "peft/quantized.h"
#include "train/lm_job.h"

namespace fedsplit {

class Recipe;

struct PeftOptions {
  std::string method = "none";                  ///< none | lora | dora | prefix | bottleneck
  int64_t r = 8;                                ///< LoRA rank
  double alpha = 16;                            ///< LoRA scale numerator (alpha / r)
  double dropout = 0.05;                        ///< dropout on the LoRA path while training
  bool rslora = false;                          ///< scale alpha / sqrt(r)
  std::string target_modules = "q_proj v_proj"; ///< projections to adapt, by HF module name
  std::string rank_pattern;                     ///< per-module ranks: "regex=r" items
  std::string alpha_pattern;                    ///< per-module alphas: "regex=alpha" items
  int64_t base_bits = 0;                        ///< 0 (fp32) | 8 | 4: frozen projections quantized
  int64_t base_group_size = 64;                 ///< input features per quantization scale
  PrefixOptions prefix;                         ///< num_virtual_tokens
  BottleneckOptions bottleneck;                 ///< size, placement, activation, scale
};

/// Registers the [peft] keys of `recipe` on `options`.
void bind_peft_options(Recipe& recipe, PeftOptions& options);

/// The LoraOptions the [peft] keys describe (use_dora for method = dora). Throws ConfigError naming
/// the key for a malformed pattern item.
LoraOptions lora_options(const PeftOptions& options);

/// The train job's view of the method, or nothing for method = none. Checks the options now, so
/// that a bad key fails before any work.
std::optional<ModelAdaptation> peft_adaptation(const PeftOptions& options);

/// Loads any adapter directory fedsplit reads (LORA with or without DoRA, PREFIX_TUNING,
/// BOTTLENECK; chosen by adapter_config.json's peft_type) onto `model`. Throws IoError for a missing
/// config, FormatError for bad JSON, ConfigError naming an unsupported peft_type.
void load_peft_adapter(Decoder& model, const std::string& dir);

}  // namespace fedsplit
