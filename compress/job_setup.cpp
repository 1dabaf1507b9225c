#include "compress/job_setup.h"

#include <torch/torch.h>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "train/model_io.h"
#include "train/trainer.h"

namespace fedsplit {

CompressRun open_compress_run(const LmJobOptions& o, const std::string& recipe_ini, bool resume, const std::string& mode,
                              bool open_data) {
  if (o.model.init.empty())
    throw ConfigError("run.mode = " + mode + " compresses a trained model: set model.init to its HF directory or "
                      "checkpoint.h5 (e.g. runs/pretrain-base/model)");
  LmJobStart start = start_lm_job(o, recipe_ini, resume, open_data);
  CompressRun run;
  run.device = start.device;
  run.tokenizer = std::move(start.tokenizer);
  run.data = std::move(start.data);
  run.model = load_any_model(o.model.init);
  if (run.data) check_model_fits(run.model, *run.data, o);
  run.model->to(run.device);
  run.model->eval();
  return run;
}

std::vector<torch::Tensor> calibration_batches(TokenDataset& data, int64_t batches) {
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < batches; ++i) out.push_back(data.next_batch().input_ids);
  return out;
}

double held_out_loss(Decoder& model, const CompressRun& run, const TrainOptions& train) {
  model->eval();
  return evaluate_loss([&](const torch::Tensor& ids) { return model->forward(ids); },
                       run.data->val_batches(train.eval_batches), run.device, train.bf16);
}

std::string save_compressed_model(Decoder& model, const Tokenizer& tokenizer, const std::string& run_dir) {
  model->to(torch::kCPU);
  return save_run_model(model, tokenizer, run_dir);
}

}  // namespace fedsplit
