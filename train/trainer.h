// The training loop for a causal language model: AdamW with warmup + cosine, gradient clipping and
// accumulation, bf16 autocast on CUDA, periodic held-out evaluation, checkpoints and exact resume.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "train/options.h"

namespace fedsplit {

class BatchStream;
struct Batch;

/// Where and how a run executes; filled by the launcher.
struct RunContext {
  std::string run_dir;           ///< holds metrics.jsonl and checkpoint.h5
  torch::Device device = torch::kCPU;
  std::string recipe_ini;        ///< resolved recipe, stored in checkpoints
  std::string model_config;      ///< HF config.json text of the model, stored in checkpoints
  bool resume = false;           ///< continue from <run_dir>/checkpoint.h5
  int64_t stop_after = 0;        ///< return after this many steps in total, checkpointed (0 = never)
  std::string adapter;           ///< PEFT method whose parameters alone train (empty = whole model)
  std::string base_model;        ///< the frozen model the adapter belongs to (with `adapter`)
  /// Optional training loss of a batch (input ids, targets, on the device) in place of
  /// next_token_loss(logits_fn(ids), targets), e.g. distillation's; held-out evaluation is unchanged.
  std::function<torch::Tensor(const torch::Tensor& input_ids, const torch::Tensor& targets)> train_loss;
  /// Optional held-out loss of the evaluation batches (no grad, model in eval mode) in place of
  /// evaluate_loss(logits_fn, ...), for jobs whose batches are not plain next-token windows.
  std::function<double(const std::vector<Batch>& batches)> held_out_loss;
  /// Tensors outside the model that train and are checkpointed with it (names must not collide with
  /// the model's parameters), e.g. distillation's hidden-state projections.
  std::vector<std::pair<std::string, torch::Tensor>> extra_parameters;
};

struct TrainResult {
  int64_t steps = 0;              ///< optimizer steps completed in total
  double last_train_loss = 0;     ///< loss of the last step
  double val_loss = 0;            ///< mean held-out token loss at the end
  double tokens_per_second = 0;   ///< training tokens per second in this process's steps
};

/// Logits [B, T, V] for input ids [B, T].
using LogitsFn = std::function<torch::Tensor(const torch::Tensor& input_ids)>;

/// Mean cross-entropy (fp32) of logits [B, T, V] against targets [B, T].
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets);

/// Mean next-token cross-entropy (nats per token) of `logits_fn` over `batches`, without gradients.
double evaluate_loss(const LogitsFn& logits_fn, const std::vector<Batch>& batches, torch::Device device,
                     bool bf16 = false);

/// Trains the parameters of `model` that require gradients on `data`; `logits_fn` runs the model.
/// Checkpoints hold those parameters only (with `context.adapter` set, the checkpoint says so).
TrainResult train_language_model(torch::nn::Module& model, const LogitsFn& logits_fn, BatchStream& data,
                                 const TrainOptions& options, const RunContext& context);

}  // namespace fedsplit
