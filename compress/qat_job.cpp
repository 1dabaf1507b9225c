#include "compress/qat_job.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <optional>

#include "compress/calibration.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"
#include "core/util/memory.h"
#include "train/model_io.h"

namespace fedsplit {
TrainResult run_qat_job(const LmJobOptions& o, const QatOptions& q, const DistillOptions& d,
                        const std::string& recipe_ini, bool resume) {
  if (o.model.init.empty())
    throw ConfigError("run.mode = qat fine-tunes a trained model: set model.init to its HF directory "
                      "(e.g. runs/pretrain-base/model)");
  const bool with_teacher = !d.teacher.empty();
  if (with_teacher) {
    validate(d.loss);
    if (d.loss.hidden_weight > 0)
      throw ConfigError("run.mode = qat distils from the teacher's logits only: set distill.hidden_weight = 0");
  }
  LmJobStart start = start_lm_job(o, recipe_ini, resume);
  TokenDataset& data = *start.data;
  const torch::Device device = start.device;

  Decoder model = initial_model(o.model, *start.tokenizer, static_cast<uint64_t>(o.run.seed));
  check_model_fits(model, data, o);
  check_qat_options(model, q);
  std::optional<Decoder> teacher;
  if (with_teacher) {
    teacher = load_teacher(d);
    check_model_fits(*teacher, data, o);
    if ((*teacher)->options.vocab_size != model->options.vocab_size)
      throw ConfigError("distill.teacher's vocabulary differs from model.init's: QAT distils from a teacher of the "
                        "same tokenizer (e.g. the fp32 model itself)");
    (*teacher)->to(device);
  }
  const int64_t parameters = count_parameters(model);
  const int64_t quantized = [&] {
    int64_t n = 0;
    for (const auto& path : all_block_projection_paths(model)) n += projection_at(model, path).weight.numel();
    return n;
  }();

  // The baselines on the held-out batches the run evaluates: fp32, and RTN at the same bits/groups.
  const auto val = data.val_batches(o.train.eval_batches);
  model->to(device);
  model->eval();
  auto logits = [&](const torch::Tensor& ids) { return model->forward(ids); };
  const double init_loss = evaluate_loss(logits, val, device, o.train.bf16);
  double rtn_loss = 0;
  {
    Decoder rtn = load_any_model(o.model.init);
    finalize_quantized(rtn, q, "rtn");
    rtn->to(device);
    rtn->eval();
    rtn_loss = evaluate_loss([&](const torch::Tensor& ids) { return rtn->forward(ids); }, val, device, o.train.bf16);
  }
  log_info("QAT int", q.bits, q.group_size > 0 ? " group " + std::to_string(q.group_size) : std::string(" per channel"),
           q.activation_bits > 0 ? ", int8 activations" : "", " of ", o.model.init, " (", quantized, " of ", parameters,
           " parameters quantized): held-out perplexity fp32 ", std::exp(init_loss), ", RTN ", std::exp(rtn_loss),
           with_teacher ? ", distilling from " + d.teacher : std::string());

  apply_qat(model, q);
  model->train();
  RunContext ctx = lm_run_context(o, model, device, recipe_ini, resume);
  if (with_teacher) {
    Decoder& t = *teacher;
    ctx.train_loss = [&](const torch::Tensor& ids, const torch::Tensor& targets) {
      torch::Tensor zt;
      {
        torch::NoGradGuard no_grad;
        zt = t->forward(ids);
      }
      return distill_logit_loss(model->forward(ids), zt, targets, d.loss).total;
    };
  }
  const TrainResult result = train_language_model(*model, logits, data, o.train, ctx);
  if (result.steps < o.train.steps) {
    log_info("stopped after step ", result.steps, " of ", o.train.steps, " (run.stop_after): continue with --resume");
    return result;
  }

  // The saved model: each projection's RTN-quantized trained weight, with the record of its scales.
  const QuantRecord record = finalize_quantized(model, q, "qat");
  model->eval();
  const double final_loss = evaluate_loss(logits, val, device, o.train.bf16);
  nlohmann::json summary{{"method", "qat"},
                         {"steps", result.steps},
                         {"bits", q.bits},
                         {"group_size", record.group_size},
                         {"activation_bits", q.activation_bits},
                         {"init_model", o.model.init},
                         {"init_val_loss", init_loss},
                         {"init_val_ppl", std::exp(init_loss)},
                         {"rtn_val_loss", rtn_loss},
                         {"rtn_val_ppl", std::exp(rtn_loss)},
                         {"qat_val_loss", result.val_loss},
                         {"qat_val_ppl", std::exp(result.val_loss)},
                         {"val_loss", final_loss},
                         {"val_ppl", std::exp(final_loss)},
                         {"teacher", d.teacher},
                         {"parameters", parameters},
                         {"quantized_parameters", quantized},
                         {"tokens_per_s", result.tokens_per_second},
                         {"peak_host_memory_bytes", peak_host_memory_bytes()},
                         {"peak_cuda_memory_bytes", peak_cuda_memory_bytes()}};
  model->to(torch::kCPU);
  const std::string out = save_run_model(model, *start.tokenizer, o.run.dir);
  save_quant_record(out, record);
  write_text_atomically(o.run.dir + "/summary.json", summary.dump(2) + "\n");
  log_info("held-out perplexity: fp32 ", std::exp(init_loss), ", RTN int", q.bits, " ", std::exp(rtn_loss), ", QAT int",
           q.bits, " ", std::exp(final_loss), "; saved the quantized model and its record to ", out);
  TrainResult out_result = result;
  out_result.val_loss = final_loss;
  return out_result;
}

}  // namespace fedsplit
