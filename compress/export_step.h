// The [export] step that ends a compression job (run.mode = quantize | prune | distill | qat): the
// model the job saved in <run.dir>/model, with its tokenizer and quantization record, exported as
// GGUF into <run.dir>/gguf, exactly as `fedsplit export gguf --model <run.dir>/model` would.
#pragma once
#include <cstdint>
#include <string>

namespace fedsplit {

class Recipe;

/// The [export] keys.
struct ExportStepOptions {
  std::string gguf = "none";  ///< none | f32 | f16 | q8_0 | q4_0: the GGUF encoding written at the end
  int64_t stages = 1;         ///< pipeline stages (one shard each, with manifest.json)
};

void bind_export_step(Recipe& recipe, ExportStepOptions& options);

/// Exports <run_dir>/model to <run_dir>/gguf when options.gguf is not none; returns the folder ("" when
/// nothing was exported). Errors as `fedsplit export gguf` gives them, naming the [export] key.
std::string export_after_job(const ExportStepOptions& options, const std::string& run_dir);

}  // namespace fedsplit
