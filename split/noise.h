// A privacy defence for split learning: Gaussian noise added to the smashed data before it leaves
// the device. The noise scales with the activation, std = sigma * RMS(activation) over the whole
// tensor, so one sigma means the same signal-to-noise ratio (about 1 / sigma) for any model width
// or cut depth. The noise is additive, so the server's gradient applies to the clean activation
// unchanged (the device backpropagates it as if the noise were a constant).
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace fedsplit {

struct NoiseOptions {
  double sigma = 0;   ///< noise std relative to the activation's RMS; 0 = no noise
  uint64_t seed = 0;  ///< seeds the device's noise generator, so runs repeat
};

/// Seeded noise for the activations of one device; each call draws fresh noise from its generator.
class ActivationNoise {
 public:
  /// ConfigError (one line, naming split.noise_sigma) for a negative or non-finite sigma.
  explicit ActivationNoise(NoiseOptions options);

  /// `activation` (detached) plus N(0, (sigma * RMS(activation))^2) noise, drawn on the CPU in fp32
  /// and returned on the activation's device and dtype; the activation itself when sigma is 0.
  torch::Tensor apply(const torch::Tensor& activation);
  bool enabled() const { return options_.sigma > 0; }

 private:
  NoiseOptions options_;
  at::Generator generator_;  // CPU generator: the same noise on any device and thread count
};

}  // namespace fedsplit
