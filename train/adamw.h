// AdamW (decoupled weight decay) over named parameters, with its state addressable by parameter
// name so that checkpoints are readable and survive module re-creation.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace fedsplit {

struct AdamWOptions {
  double beta1 = 0.9;         ///< first-moment decay
  double beta2 = 0.95;        ///< second-moment decay
  double eps = 1e-8;          ///< added to the denominator
  double weight_decay = 0.1;  ///< applied to parameters marked `decay`
};

class AdamW {
 public:
  struct Param {
    std::string name;
    torch::Tensor value;
    bool decay;  ///< weight decay applies (matrices); biases, norms and gains do not decay
    torch::Tensor exp_avg;
    torch::Tensor exp_avg_sq;
  };

  /// `params` are (name, tensor); tensors of dim >= 2 decay, others do not (the usual grouping).
  AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& params, AdamWOptions options);

  /// One update at learning rate `lr`; parameters without a gradient are skipped. On CUDA with
  /// LibTorch 2.x every parameter updates in one fused kernel per decay group.
  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const { return steps_; }
  void set_steps_taken(int64_t steps) { steps_ = steps; }

  std::vector<Param>& params() { return params_; }
  const std::vector<Param>& params() const { return params_; }
  const AdamWOptions& options() const { return options_; }

 private:
  void step_per_tensor(double lr);
  void step_fused(double lr);
  std::vector<Param> params_;
  AdamWOptions options_;
  int64_t steps_ = 0;
};

/// Scales gradients so that their global L2 norm is at most `max_norm` (0 = no clipping); returns
/// the norm before, as a 0-dim tensor on the gradients' device (reading it waits for the device).
torch::Tensor clip_grad_norm(const std::vector<AdamW::Param>& params, double max_norm);

}  // namespace fedsplit
