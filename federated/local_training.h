// A client's local training in one round: a few optimizer steps on its own data, starting from the
// global parameters, with fresh optimizer state (clients keep nothing between rounds, so thousands of
// virtual clients cost no memory beyond their data) and optionally FedProx's proximal term.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>

#include "core/io/safetensors.h"  // TensorMap
#include "train/trainer.h"         // LogitsFn

namespace fedsplit {

class TokenDataset;
struct Batch;

/// A client's training loss of one batch in place of next_token_loss(logits, targets): its logits
/// [B, T, V], input ids and targets (e.g. distillation from a teacher that reads the same ids).
using LocalLossFn = std::function<torch::Tensor(const torch::Tensor& logits, const torch::Tensor& input_ids,
                                                const torch::Tensor& targets)>;

struct LocalTrainingOptions {
  int64_t steps = 10;              ///< optimizer steps
  std::string optimizer = "adamw"; ///< adamw | sgd
  double lr = 1e-3;                ///< constant learning rate
  double momentum = 0;             ///< sgd momentum
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;  ///< adamw moments
  double weight_decay = 0;         ///< adamw decoupled decay on matrices
  double grad_clip = 1.0;          ///< global gradient-norm clip (0 = off)
  double fedprox_mu = 0;           ///< FedProx: adds mu/2 ||w - w_global||² to the loss
  bool bf16 = true;                ///< bf16 autocast on CUDA
  /// Local DP-SGD (Abadi et al. 2016): each example's gradient (all trainable tensors together) is
  /// clipped to L2 norm dp_clip, the clipped gradients are summed, N(0, (σ·dp_clip)²) is added to every
  /// coordinate and the sum is divided by the batch size; that replaces the batch gradient (grad_clip is
  /// then not applied; FedProx's term and mask_gradients still are).
  bool dp_sgd = false;
  double dp_clip = 1.0;               ///< per-example L2 bound
  double dp_noise_multiplier = 1.0;   ///< σ: noise standard deviation in units of dp_clip
  uint64_t dp_noise_seed = 0;         ///< step s draws its noise from splitmix64(dp_noise_seed ^ splitmix64(s))
  LocalLossFn loss;                   ///< optional: the training loss (default next_token_loss)
};

struct LocalResult {
  double mean_loss = 0;   ///< mean training loss over the steps
  int64_t steps = 0;      ///< steps taken
  int64_t tokens = 0;     ///< target tokens trained on
  bool finite = true;     ///< false if a loss was NaN or infinite (training stopped there)
};

/// Trains the parameters of `model` that require gradients for `options.steps` batches of `data`
/// (from its current position). `mask_gradients` (optional) runs after each backward pass, e.g. to
/// keep a lower-rank client's unused LoRA rows at zero. `global` (FedProx) holds the round's starting
/// values by parameter name. `change_batch` (optional) rewrites each batch first (data poisoning).
LocalResult train_locally(torch::nn::Module& model, const LogitsFn& logits_fn, TokenDataset& data,
                          const LocalTrainingOptions& options, torch::Device device,
                          const std::function<void()>& mask_gradients = nullptr, const TensorMap* global = nullptr,
                          const std::function<void(Batch&)>& change_batch = nullptr);

}  // namespace fedsplit
