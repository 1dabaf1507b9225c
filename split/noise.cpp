#include "split/noise.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "core/util/error.h"

namespace fedsplit {

ActivationNoise::ActivationNoise(NoiseOptions options)
    : options_(options), generator_(at::detail::createCPUGenerator(options.seed)) {
  if (!(options_.sigma >= 0) || !std::isfinite(options_.sigma))
    throw ConfigError("split.noise_sigma = " + std::to_string(options_.sigma) +
                      ": the noise std (relative to the activation's RMS) must be finite and >= 0");
}

torch::Tensor ActivationNoise::apply(const torch::Tensor& activation) {
  const auto clean = activation.detach();
  if (!enabled() || clean.numel() == 0) return clean;
  const auto x = clean.to(torch::kCPU, torch::kFloat);
  const double rms = x.square().mean().sqrt().item<double>();
  const auto noise = torch::empty(x.sizes(), torch::kFloat).normal_(0.0, options_.sigma * rms, generator_);
  return (x + noise).to(clean.device(), clean.scalar_type());
}

}  // namespace fedsplit
