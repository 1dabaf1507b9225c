// Differential-privacy building blocks for DP-FedAvg (McMahan et al. 2018, "Learning Differentially
// Private Recurrent Language Models") and local DP-SGD (Abadi et al. 2016): clipping of a whole
// update to an L2 bound, Gaussian noise on the sum of clipped updates, adaptive clipping, and the
// per-example clipped, noised DP-SGD gradient. Privacy is counted by federated/rdp_accountant.h with
// q = the sampling rate of clients (or examples) and σ = noise_multiplier.
//
// Noise comes from our own seeded generator, not torch's: std::mt19937_64 (its sequence is fixed by
// the C++ standard) seeded with splitmix64(seed), turned into N(0, 1) draws by Box–Muller in double
// precision, filled tensor by tensor in key order and, inside a tensor, in row-major order. The same
// seed gives the same noise on every platform, LibTorch version and device (draws are made on the CPU).
#pragma once
#include <cstdint>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

/// Scales `delta` (client update minus global, all tensors together) to L2 norm at most `clip` (> 0);
/// returns the norm before. The norm is summed in fp64; entries are replaced (x·clip/norm in their own
/// dtype), never written through, so tensors shared with a model stay untouched.
double clip_update(TensorMap& delta, double clip);

/// Adds N(0, (noise_multiplier·clip)²) noise to every coordinate of `sum` (a sum of clipped deltas),
/// drawn from `seed` by the generator described above; entries are replaced, keeping dtype and device.
void add_gaussian_noise(TensorMap& sum, double noise_multiplier, double clip, uint64_t seed);

/// Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping"):
/// C ← C·exp(−η_C (b̄ − γ)), where b̄ is the (noised) fraction of clients whose update norm was <= C,
/// γ in [0, 1] the target quantile and η_C >= 0 the learning rate. Returns the new C.
double adaptive_clip_update(double clip, double unclipped_fraction, double target_quantile, double learning_rate);

/// Local DP-SGD's gradient, built one example at a time so that memory holds one sum, not B copies of
/// the gradient: add() clips one example's gradient (all its tensors together, as clip_update) and adds
/// it to an fp64 sum; noisy_mean() adds N(0, (σ·clip)²) to the sum (as add_gaussian_noise, from `seed`)
/// and divides by the number of examples added.
class DpSgdAccumulator {
 public:
  /// ConfigError unless `clip` is a positive, finite L2 bound.
  explicit DpSgdAccumulator(double clip);
  /// Clips and sums one example's gradient (the caller's tensors are untouched); returns its norm before.
  /// Every example must have the same tensor names and shapes.
  double add(const TensorMap& example_gradient);
  /// (Σ clipped + noise) / count, fp64 on the gradients' devices. ConfigError for σ < 0 or no examples.
  TensorMap noisy_mean(double sigma, uint64_t seed) const;
  int64_t count() const { return count_; }
  double clip() const { return clip_; }

 private:
  double clip_;
  TensorMap sum_;
  int64_t count_ = 0;
};

/// Per-example clipping for local DP-SGD: clips each row of `per_example_grads` ([B, ...], one
/// example's gradient per row) to L2 norm `clip`, sums over the rows, adds N(0, (σ·clip)²) noise (drawn
/// from `seed`) and divides by B: DpSgdAccumulator over the rows. Computed in fp64; returns [...] in the
/// input's dtype and device.
torch::Tensor dp_sgd_gradient(const torch::Tensor& per_example_grads, double clip, double sigma, uint64_t seed);

}  // namespace fedsplit
