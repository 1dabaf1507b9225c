#include "compress/ptq_job.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include "compress/job_setup.h"
#include "compress/ptq.h"
#include "core/config/recipe.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"

namespace fedsplit {

void bind_quantize_options(Recipe& r, QuantizeJobOptions& o) {
  r.add_choice("quantize.method", &o.method, {"rtn", "gptq"}, "post-training quantizer (run.mode = quantize)");
  r.add("quantize.bits", &o.bits, "bits per weight: 4 or 8", 4, 8);
  r.add("quantize.group_size", &o.group_size, "input features per scale (32 = GGUF blocks; 0 = per output channel)", 0, 1 << 20);
  r.add("quantize.calibration_batches", &o.calibration_batches, "training batches GPTQ calibrates on", 0, 1 << 20);
  r.add("quantize.act_order", &o.act_order, "GPTQ: columns by descending Hessian diagonal (needs group_size = 0)");
  r.add("quantize.percdamp", &o.percdamp, "GPTQ: dampening as a fraction of the mean Hessian diagonal", 1e-6, 1.0);
  r.add("quantize.block_size", &o.block_size, "GPTQ: columns per lazy-update block", 1, 1 << 20);
}

double run_quantize_job(const LmJobOptions& lm, const QuantizeJobOptions& o, const std::string& recipe_ini, bool resume) {
  if (o.bits != 4 && o.bits != 8) throw ConfigError("quantize.bits = " + std::to_string(o.bits) + ": expected 4 or 8");
  CompressRun run = open_compress_run(lm, recipe_ini, resume, "quantize");
  const double base_loss = held_out_loss(run.model, run, lm.train);
  log_info("model ", lm.model.init, ": held-out loss ", base_loss, " perplexity ", std::exp(base_loss));

  PtqOptions ptq;
  ptq.method = o.method;
  ptq.gptq.quant = {static_cast<int>(o.bits), o.group_size};
  ptq.gptq.block_size = o.group_size > 0 ? std::max<int64_t>(o.group_size, o.block_size / o.group_size * o.group_size)
                                         : o.block_size;
  ptq.gptq.percdamp = o.percdamp;
  ptq.gptq.act_order = o.act_order;
  const auto calibration = o.method == "gptq" ? calibration_batches(*run.data, o.calibration_batches)
                                              : std::vector<torch::Tensor>{};
  const auto start = std::chrono::steady_clock::now();
  const QuantRecord record = quantize_model(run.model, calibration, ptq);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double loss = held_out_loss(run.model, run, lm.train);
  log_info(o.method, " ", o.bits, "-bit (group ", o.group_size, ") in ", seconds, " s: held-out perplexity ",
           std::exp(base_loss), " -> ", std::exp(loss));

  const std::string out = save_compressed_model(run.model, *run.tokenizer, lm.run.dir);
  save_quant_record(out, record);
  const nlohmann::json summary{{"method", o.method},
                               {"bits", o.bits},
                               {"group_size", o.group_size},
                               {"calibration_tokens", static_cast<int64_t>(calibration.size()) * lm.data.batch_size * lm.data.seq_len},
                               {"quantize_seconds", seconds},
                               {"base_model", lm.model.init},
                               {"base_val_loss", base_loss},
                               {"base_val_ppl", std::exp(base_loss)},
                               {"val_loss", loss},
                               {"val_ppl", std::exp(loss)},
                               {"quantized_weights", record.scales.size()}};
  write_text_atomically(lm.run.dir + "/summary.json", summary.dump(2) + "\n");
  log_info("saved the quantized model to ", out, " (export it with fedsplit export gguf --model ", out,
           " --quant ", o.bits == 4 ? "q4_0" : "q8_0", " --out DIR)");
  return loss;
}

}  // namespace fedsplit
