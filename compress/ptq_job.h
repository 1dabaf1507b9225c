// run.mode = quantize: post-training quantization of a trained model (model.init) with RTN or GPTQ
// on calibration batches from the training split; the quantized model (dequantized weights plus
// its quantization record, see compress/quant_record.h) lands in <run.dir>/model, ready for
// `fedsplit export gguf`, and summary.json compares held-out loss before and after.
#pragma once
#include <string>

#include "train/lm_job.h"

namespace fedsplit {

class Recipe;

/// The [quantize] keys.
struct QuantizeJobOptions {
  std::string method = "gptq";          ///< rtn | gptq
  int64_t bits = 4;                     ///< 4 or 8
  int64_t group_size = 32;              ///< input features per scale (32 matches GGUF's Q4_0/Q8_0 blocks; 0 = per channel)
  int64_t calibration_batches = 16;     ///< training batches GPTQ sees (data.batch_size x data.seq_len tokens each)
  bool act_order = false;               ///< GPTQ: quantize columns by descending Hessian diagonal (group_size 0 only)
  double percdamp = 0.01;               ///< GPTQ: dampening, a fraction of the Hessian's mean diagonal
  int64_t block_size = 128;             ///< GPTQ: columns per lazy-update block
};

void bind_quantize_options(Recipe& recipe, QuantizeJobOptions& options);

/// Runs the job; returns the quantized model's held-out loss.
double run_quantize_job(const LmJobOptions& lm, const QuantizeJobOptions& options, const std::string& recipe_ini,
                        bool resume);

}  // namespace fedsplit
