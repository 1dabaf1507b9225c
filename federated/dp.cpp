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

DpSgdAccumulator::DpSgdAccumulator(double clip) : clip_(clip) { check_clip(clip, "DP-SGD example clip"); }

double DpSgdAccumulator::add(const TensorMap& example_gradient) {
  TensorMap g;
  for (const auto& [name, t] : example_gradient) g[name] = t.to(torch::kFloat64);
  // clip_update replaces entries (never writes through), so an fp64 input tensor is not changed either.
  const double norm = clip_update(g, clip_);
  for (auto& [name, t] : g) {
    auto& s = sum_[name];
    // The first example's tensor may still alias the caller's (fp64 input, unclipped): copy it.
    s = s.defined() ? s.add_(t) : t.clone();
  }
  ++count_;
  return norm;
}

TensorMap DpSgdAccumulator::noisy_mean(double sigma, uint64_t seed) const {
  if (!(sigma >= 0)) throw ConfigError("DP-SGD: noise multiplier = " + str(sigma) + " is negative");
  if (count_ == 0) throw ConfigError("DP-SGD: no example gradients to average");
  TensorMap out;
  for (const auto& [name, t] : sum_) out[name] = t.clone();
  if (sigma > 0) add_gaussian_noise(out, sigma, clip_, seed);
  for (auto& [name, t] : out) t.div_(static_cast<double>(count_));
  return out;
}

torch::Tensor dp_sgd_gradient(const torch::Tensor& per_example_grads, double clip, double sigma, uint64_t seed) {
  check_clip(clip, "dp_sgd_gradient");
  if (!(sigma >= 0)) throw ConfigError("dp_sgd_gradient: sigma = " + str(sigma) + " is negative");
  TORCH_CHECK(per_example_grads.dim() >= 1 && per_example_grads.size(0) > 0,
              "dp_sgd_gradient: per-example gradients must be [B, ...] with B > 0, got ", per_example_grads.sizes());
  DpSgdAccumulator sum(clip);
  for (int64_t i = 0, batch = per_example_grads.size(0); i < batch; ++i) sum.add({{"g", per_example_grads[i]}});
  return sum.noisy_mean(sigma, seed).at("g").to(per_example_grads.scalar_type());
}

}  // namespace fedsplit
