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
