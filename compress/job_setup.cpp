#include "compress/job_setup.h"

#include <torch/torch.h>

#include "core/data/prepare.h"
#include "core/model/hf.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/threads.h"
#include "train/model_io.h"
#include "train/trainer.h"

namespace fedsplit {

CompressRun open_compress_run(const LmJobOptions& o, const std::string& recipe_ini, bool resume, const std::string& mode) {
  if (o.model.init.empty())
    throw ConfigError("run.mode = " + mode + " compresses a trained model: set model.init to its HF directory or "
                      "checkpoint.h5 (e.g. runs/pretrain-base/model)");
  set_cpu_threads(o.run.threads);
  torch::manual_seed(static_cast<uint64_t>(o.run.seed));
  CompressRun run;
  run.device = pick_device(o.run.device);
  claim_run_dir(o.run, recipe_ini, resume);
  run.tokenizer = resolve_tokenizer(o.data);
  DatasetOptions d;
  d.seq_len = o.data.seq_len;
  d.batch_size = o.data.batch_size;
  d.val_fraction = o.data.val_fraction;
  d.split_seed = d.shuffle_seed = static_cast<uint64_t>(o.run.seed);
  d.filter = MetaFilter::parse(o.data.filter);
  run.data = std::make_unique<TokenDataset>(resolve_shards(o.data, *run.tokenizer), d);
  run.model = load_any_model(o.model.init);
  run.data->check_vocab(run.model->options.vocab_size);
  if (o.data.seq_len > run.model->options.max_position)
    throw ConfigError("data.seq_len = " + std::to_string(o.data.seq_len) + " exceeds the model's max_position " +
                      std::to_string(run.model->options.max_position) + ": lower data.seq_len");
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

void save_compressed_model(Decoder& model, const Tokenizer& tokenizer, const std::string& dir) {
  model->to(torch::kCPU);
  make_dirs(dir);
  save_hf_model(model, dir);
  copy_tokenizer(tokenizer, dir);
}

}  // namespace fedsplit
