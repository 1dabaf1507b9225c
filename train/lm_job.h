// The `train` job of `fedsplit run`: a causal language model trained on prepared corpora, from
// scratch or from a HF model, ending with the model saved in HF format in the run directory.
#pragma once
#include <functional>
#include <string>

#include "core/data/prepare.h"
#include "core/model/decoder.h"
#include "train/options.h"
#include "train/trainer.h"

namespace fedsplit {

class Recipe;

struct RunOptions {
  std::string mode = "train";   ///< what the run does (train; later federated, split, ...)
  std::string dir = "runs/run"; ///< run directory: metrics.jsonl, checkpoint.h5, model/
  int64_t seed = 1234;          ///< seeds model init, data order and dropout
  int64_t threads = 0;          ///< CPU threads for LibTorch (0 = all cores)
  std::string device = "auto";  ///< auto | cpu | cuda
  bool overwrite = false;       ///< allow a run directory that holds a different run
  int64_t stop_after = 0;       ///< end this invocation after this many steps (checkpointed); 0 = never
};

/// Architecture of a model trained from scratch (ignored when `init` names a model).
struct ModelOptions {
  std::string init;                 ///< HF model directory or checkpoint.h5 to start from; empty = from scratch
  std::string family = "llama";     ///< llama | qwen2 | gpt2
  int64_t hidden_size = 256;        ///< model width
  int64_t layers = 4;               ///< decoder blocks
  int64_t heads = 4;                ///< attention heads
  int64_t kv_heads = 0;             ///< key/value heads (GQA); 0 = heads
  int64_t intermediate_size = 0;    ///< MLP width; 0 = family default (llama/qwen2 8/3·d rounded to 64, gpt2 4·d)
  int64_t max_position = 1024;      ///< longest sequence (learned positions for gpt2)
  double rope_theta = 10000.0;      ///< RoPE base (llama, qwen2)
  bool tie_embeddings = false;      ///< share input embedding and output head
  double dropout = 0.0;             ///< dropout on residual branches during training
};

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
