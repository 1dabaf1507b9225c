// What every run job does before its own work: pick the device, claim the run directory, build or
// load the starting model, and keep the tokenizer beside the results.
#pragma once
#include <cstdint>
#include <string>

#include "core/model/decoder.h"

namespace fedsplit {

class Tokenizer;

struct RunOptions {
  std::string mode = "train";   ///< what the run does: train | federated
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

/// The device run.device names (auto: CUDA when available). ConfigError for cuda without a GPU.
torch::Device pick_device(const std::string& name);

/// A run directory holds one run: refuses to mix a different recipe into it, or to restart over its
/// checkpoint.h5 without --resume or run.overwrite; with `resume` the checkpoint must exist and the
/// recipe match. Then writes <dir>/recipe.ini.
void claim_run_dir(const RunOptions& run, const std::string& recipe_ini, bool resume);

/// Copies the tokenizer file into `dir` under the name load_tokenizer looks for in a directory.
void copy_tokenizer(const Tokenizer& tokenizer, const std::string& dir);

/// The run's starting model: model.init loaded, or a new model of [model]'s architecture for the
/// tokenizer's vocabulary, initialised from `seed`.
Decoder initial_model(const ModelOptions& options, const Tokenizer& tokenizer, uint64_t seed);

/// Bytes of the model's parameters and buffers, and how many parameter elements train.
int64_t tensor_bytes(const torch::nn::Module& model);
int64_t trainable_count(const torch::nn::Module& model);

}  // namespace fedsplit
