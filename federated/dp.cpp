#include "federated/dp.h"

#include <cmath>
#include <sstream>
#include <string>

#include "core/util/error.h"
#include "core/util/random.h"

namespace fedsplit {
namespace {

std::string str(double x) {
  std::ostringstream out;
  out.precision(17);
  out << x;
  return out.str();
}

void check_clip(double clip, const char* where) {
  if (!(clip > 0 && std::isfinite(clip)))
    throw ConfigError(std::string(where) + ": clip = " + str(clip) + " must be a positive L2 bound");
}

/// A CPU fp64 tensor of `sizes` filled with N(0, std²) draws from `normal`, in row-major order.
torch::Tensor gaussian(torch::IntArrayRef sizes, double std, SeededNormal& normal) {
  torch::Tensor out = torch::empty(sizes, torch::TensorOptions().dtype(torch::kFloat64));
  double* p = out.data_ptr<double>();
  for (int64_t i = 0, n = out.numel(); i < n; ++i) p[i] = std * normal();
  return out;
}

}  // namespace

double clip_update(TensorMap& delta, double clip) {
  check_clip(clip, "clip_update");
  double sq = 0;
  for (const auto& [name, t] : delta) sq += t.to(torch::kFloat64).pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  if (norm > clip) {
    const double scale = clip / norm;
    for (auto& [name, t] : delta) t = (t.to(torch::kFloat64) * scale).to(t.scalar_type());
  }
  return norm;
}

void add_gaussian_noise(TensorMap& sum, double noise_multiplier, double clip, uint64_t seed) {
  check_clip(clip, "add_gaussian_noise");
  if (!(noise_multiplier >= 0))
    throw ConfigError("add_gaussian_noise: noise_multiplier = " + str(noise_multiplier) + " is negative");
  SeededNormal normal(seed);
  const double std = noise_multiplier * clip;
  for (auto& [name, t] : sum) {
    const torch::Tensor noise = gaussian(t.sizes(), std, normal).to(t.device());
    t = (t.to(torch::kFloat64) + noise).to(t.scalar_type());
  }
}

double adaptive_clip_update(double clip, double unclipped_fraction, double target_quantile, double learning_rate) {
  check_clip(clip, "adaptive_clip_update");
  if (!(target_quantile >= 0 && target_quantile <= 1))
    throw ConfigError("adaptive clipping: target quantile " + str(target_quantile) + " is outside [0, 1]");
  if (!(learning_rate >= 0))
    throw ConfigError("adaptive clipping: learning rate " + str(learning_rate) + " is negative");
  // Geometric steps: C moves by the same factor whatever its scale (Andrew et al., Sec. 3).
  return clip * std::exp(-learning_rate * (unclipped_fraction - target_quantile));
}

torch::Tensor dp_sgd_gradient(const torch::Tensor& per_example_grads, double clip, double sigma, uint64_t seed) {
  check_clip(clip, "dp_sgd_gradient");
  if (!(sigma >= 0)) throw ConfigError("dp_sgd_gradient: sigma = " + str(sigma) + " is negative");
  TORCH_CHECK(per_example_grads.dim() >= 1 && per_example_grads.size(0) > 0,
              "dp_sgd_gradient: per-example gradients must be [B, ...] with B > 0, got ", per_example_grads.sizes());
  const int64_t batch = per_example_grads.size(0);
  const torch::Tensor rows = per_example_grads.to(torch::kFloat64).reshape({batch, -1});
  const torch::Tensor norms = rows.pow(2).sum(1).sqrt();
  // min(1, C/‖g_i‖): rows within the bound (zero rows included) keep their values exactly.
  const torch::Tensor factor = torch::where(norms > clip, clip / norms, torch::ones_like(norms));
  torch::Tensor sum = (rows * factor.unsqueeze(1)).sum(0);
  if (sigma > 0) {
    SeededNormal normal(seed);
    sum = sum + gaussian(sum.sizes(), sigma * clip, normal).to(sum.device());
  }
  const auto out_sizes = per_example_grads.sizes().slice(1);
  return (sum / static_cast<double>(batch)).reshape(out_sizes).to(per_example_grads.scalar_type());
}

}  // namespace fedsplit
