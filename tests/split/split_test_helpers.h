// Helpers shared by the split tests: small seeded decoders of each family, random batches, and the
// comparison of tensors in float64.
#pragma once
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <string>

#include "core/model/config.h"
#include "core/model/decoder.h"

namespace fedsplit::testing {

/// A 4-block model of `family` (vocab 64, hidden 32, 4 heads, 2 kv heads for llama), untied unless
/// `tied` (the family's default is overridden either way).
inline DecoderConfig small_config(ModelFamily family, bool tied) {
  auto c = family_config(family, 64, 32, 4, 4, family == ModelFamily::gpt2 ? 4 : 2, 0, 32);
  c.tie_embeddings = tied;
  return c;
}

/// init_weights(seed), then every parameter nudged by N(0, 0.05^2) noise from `seed`, so norms and
/// biases are not all 1 and 0 and a gradient that reached the wrong tensor would show. The same
/// config and seed give the same model.
inline Decoder seeded_model(const DecoderConfig& config, uint64_t seed) {
  Decoder model(config);
  model->init_weights(seed);
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed + 1000);
  for (auto& p : model->parameters()) p.add_(torch::randn(p.sizes(), gen, torch::kFloat) * 0.05);
  return model;
}

/// Random token ids [batch, time] in [0, vocab) from `seed`.
inline torch::Tensor random_ids(int64_t vocab, int64_t batch, int64_t time, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(vocab, {batch, time}, gen, torch::kLong);
}

/// max |a - b| in float64 (0 for empty tensors).
inline double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.numel() == 0) return 0;
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace fedsplit::testing
