// The `train` job of `fedsplit run`: a causal language model trained on prepared corpora, from
// scratch or from a HF model, ending with the model saved in HF format in the run directory.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "core/data/dataset.h"
#include "core/data/prepare.h"
#include "core/model/decoder.h"
#include "train/options.h"
#include "train/run_setup.h"
#include "core/tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace fedsplit {

class Recipe;

struct LmJobOptions {
  RunOptions run;
  ModelOptions model;
  DataOptions data;
  TrainOptions train;
};

/// A fine-tuning method applied between loading the model and training; peft/ supplies one per
/// [peft] method. Without one every parameter trains and the whole model is saved.
struct ModelAdaptation {
  std::string method;                                               ///< e.g. "lora": for logs and checkpoints
  std::function<void(Decoder& model)> prepare_base;                 ///< optional, on the CPU before the model moves
  std::function<void(Decoder& model, uint64_t seed)> apply;         ///< on the model's device; freezes the base
  std::function<void(const Decoder& model, const std::string& dir)> save;  ///< writes the adapter to dir
  bool mergeable = false;  ///< the adapter folds into the weights (`fedsplit peft merge`)
};

/// What a job on the train job's keys has before its model: the device, the tokenizer (copied into
/// the run directory) and the dataset.
struct LmJobStart {
  torch::Device device = torch::kCPU;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<TokenDataset> data;
};

/// Sets threads and seed, picks the device, claims the run directory (see claim_run_dir), resolves
/// the tokenizer and opens the [data] dataset (unless `open_data` is false: jobs that bring their
/// own examples). The train job starts so; distill, qat and the compression jobs too.
LmJobStart start_lm_job(const LmJobOptions& options, const std::string& recipe_ini, bool resume, bool open_data = true);

/// ConfigError/DataError unless `model` reads the data's vocabulary and data.seq_len positions.
void check_model_fits(const Decoder& model, const TokenDataset& data, const LmJobOptions& options);

/// The RunContext of a job that trains `model` (no adapter).
RunContext lm_run_context(const LmJobOptions& options, const Decoder& model, torch::Device device,
                          const std::string& recipe_ini, bool resume);

/// Saves `model` in HF format with the tokenizer beside it to <run_dir>/model; returns that path.
std::string save_run_model(Decoder& model, const Tokenizer& tokenizer, const std::string& run_dir);

/// Registers every key of the train job ([run], [model], [data], [train]).
void bind_lm_job(Recipe& recipe, LmJobOptions& options);

/// Runs the job. `recipe_ini` is the resolved recipe, compared against the run directory's so that
/// a different run is never overwritten by accident. With `adaptation`, the job fine-tunes
/// model.init (required): it prepares the base (e.g. quantizes it) and evaluates it first, trains the adapter only and saves it
/// to <run.dir>/adapter. Every finished run writes <run.dir>/summary.json (losses, parameter
/// counts, peak memory).
TrainResult run_lm_job(const LmJobOptions& options, const std::string& recipe_ini, bool resume,
                       const ModelAdaptation* adaptation = nullptr);

}  // namespace fedsplit
