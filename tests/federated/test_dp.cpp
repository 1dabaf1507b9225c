// labels: unit
// DP-FedAvg building blocks: clipping across several tensors (to 1e-6 of the bound), Gaussian noise
// (mean 0 and std σC within 2% over 1e6 draws, reproducible from the seed), adaptive clipping that finds
// the target quantile of a known norm distribution, and DP-SGD's per-example clipping (exact at σ = 0).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/util/error.h"
#include "federated/dp.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

double l2_norm(const TensorMap& m) {
  double sq = 0;
  for (const auto& [name, t] : m) sq += t.to(torch::kFloat64).pow(2).sum().item<double>();
  return std::sqrt(sq);
}

TensorMap three_tensors(double scale) {
  torch::manual_seed(7);
  return {{"a.weight", scale * torch::randn({3, 4})},
          {"a.bias", scale * torch::randn({5})},
          {"b.lora_A", scale * torch::randn({2, 2, 2})}};
}

/// Uniform draw in [0, 1) from 53 bits.
double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1p-53; }

}  // namespace

TEST(ClipUpdate, SmallUpdateUnchanged) {
  TensorMap delta = three_tensors(0.01);
  const TensorMap before = delta;
  const double norm = l2_norm(delta);
  ASSERT_LT(norm, 1.0);
  EXPECT_NEAR(clip_update(delta, 1.0), norm, 1e-12);
  for (const auto& [name, t] : before) EXPECT_TRUE(torch::equal(delta.at(name), t)) << name;
}

TEST(ClipUpdate, LargeUpdateScaledToClipAcrossTensors) {
  TensorMap delta = three_tensors(10);
  const TensorMap original = delta;
  std::vector<torch::Tensor> copies;
  for (const auto& [name, t] : original) copies.push_back(t.clone());
  const double norm = l2_norm(delta);
  ASSERT_GT(norm, 2.5);
  EXPECT_NEAR(clip_update(delta, 2.5), norm, 1e-9 * norm);
  EXPECT_NEAR(l2_norm(delta), 2.5, 1e-6);
  // One factor for all tensors (the direction of the whole update is kept), and the caller's tensors untouched.
  size_t i = 0;
  for (const auto& [name, t] : original) {
    EXPECT_EQ(delta.at(name).scalar_type(), torch::kFloat32) << name;
    EXPECT_TRUE(torch::allclose(delta.at(name), t * (2.5 / norm), 1e-6, 1e-7)) << name;
    EXPECT_TRUE(torch::equal(t, copies[i++])) << name;
  }
  expect_one_line_error<ConfigError>([&] { clip_update(delta, 0); }, {"clip = 0"});
}

TEST(GaussianNoise, StandardDeviationIsSigmaTimesClip) {
  const int64_t n = 1000000;
  const double sigma = 1.3, clip = 0.7;
  TensorMap sum = {{"w", torch::zeros({1000, 1000}, torch::kFloat64)}};
  add_gaussian_noise(sum, sigma, clip, 42);
  const torch::Tensor x = sum.at("w");
  EXPECT_EQ(x.numel(), n);
  EXPECT_NEAR(x.mean().item<double>(), 0, 5 * sigma * clip / std::sqrt(n));  // 5 standard errors
  EXPECT_NEAR(x.std().item<double>(), sigma * clip, 0.02 * sigma * clip);
  // Gaussian tails: about 4.55% of draws lie beyond 2 std.
  const double beyond = (x.abs() > 2 * sigma * clip).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(beyond, 0.0455, 0.002);
}

TEST(GaussianNoise, ReproducibleFromSeedAndKeepsDtype) {
  auto make = [] {
    return TensorMap{{"a", torch::ones({64, 3})}, {"b", torch::zeros({1000}, torch::kFloat64)}};
  };
  TensorMap x = make(), y = make(), z = make();
  add_gaussian_noise(x, 1.0, 1.0, 123);
  add_gaussian_noise(y, 1.0, 1.0, 123);
  add_gaussian_noise(z, 1.0, 1.0, 124);
  for (const auto& name : {"a", "b"}) {
    EXPECT_TRUE(torch::equal(x.at(name), y.at(name))) << name;
    EXPECT_FALSE(torch::equal(x.at(name), z.at(name))) << name;
  }
  EXPECT_EQ(x.at("a").scalar_type(), torch::kFloat32);
  EXPECT_EQ(x.at("b").scalar_type(), torch::kFloat64);
  // Noise is added to the values: a = 1 + noise.
  EXPECT_NEAR(x.at("a").mean().item<double>(), 1, 0.3);
  // σ = 0 adds nothing.
  TensorMap w = make();
  add_gaussian_noise(w, 0, 1.0, 1);
  EXPECT_TRUE(torch::equal(w.at("a"), torch::ones({64, 3})));
}

TEST(AdaptiveClipping, GeometricUpdateRule) {
  // Too many updates unclipped: C shrinks; too few: C grows.
  EXPECT_DOUBLE_EQ(adaptive_clip_update(2.0, 0.8, 0.5, 0.2), 2.0 * std::exp(-0.2 * 0.3));
  EXPECT_DOUBLE_EQ(adaptive_clip_update(2.0, 0.1, 0.5, 0.2), 2.0 * std::exp(0.2 * 0.4));
  EXPECT_EQ(adaptive_clip_update(2.0, 0.5, 0.5, 0.2), 2.0);
  expect_one_line_error<ConfigError>([] { adaptive_clip_update(1, 0.5, 1.5, 0.2); }, {"target quantile"});
}

// Update norms uniform in [0, 10]: the median is 5. From far below and far above, with the fraction
// b̄ noised as in Andrew et al. (σ_b = 2 over 100 clients), C settles near 5.
TEST(AdaptiveClipping, ConvergesToTargetQuantile) {
  for (const double start : {0.1, 50.0}) {
    std::mt19937_64 rng(2021);
    double clip = start, late_sum = 0;
    const int rounds = 600, clients = 100;
    for (int round = 0; round < rounds; ++round) {
      int unclipped = 0;
      for (int c = 0; c < clients; ++c) unclipped += 10 * uniform(rng) <= clip;
      const double gauss = std::sqrt(-2 * std::log(1 - uniform(rng))) * std::cos(2 * M_PI * uniform(rng));
      const double fraction = (unclipped + 2.0 * gauss) / clients;
      clip = adaptive_clip_update(clip, fraction, 0.5, 0.2);
      if (round >= rounds - 200) late_sum += clip;
    }
    EXPECT_NEAR(late_sum / 200, 5.0, 0.3) << "from " << start;
    EXPECT_NEAR(clip, 5.0, 1.0) << "from " << start;
  }
}

TEST(DpSgdGradient, NoNoiseIsMeanOfClippedRowsExactly) {
  // Rows of norm 10, 1.25, 0 and 40 against clip 5: factors 1/2, 1, 1 and 1/8, all exact in binary.
  for (const auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const torch::Tensor g =
        torch::tensor({6.0, 8.0, 0.75, 1.0, 0.0, 0.0, 24.0, 32.0}, torch::kFloat64).reshape({4, 2}).to(dtype);
    const torch::Tensor got = dp_sgd_gradient(g, 5.0, 0.0, 9);
    const torch::Tensor want = torch::tensor({(3.0 + 0.75 + 0 + 3.0) / 4, (4.0 + 1.0 + 0 + 4.0) / 4}, dtype);
    EXPECT_TRUE(torch::equal(got, want)) << got;
  }
}

TEST(DpSgdGradient, MatchesPerRowReference) {
  torch::manual_seed(3);
  const torch::Tensor scales = torch::linspace(0.1, 3, 8, torch::kFloat64).view({8, 1, 1});
  const torch::Tensor g = torch::randn({8, 3, 5}, torch::kFloat64) * scales;  // norms below and above the clip
  const double clip = 2.0;
  torch::Tensor want = torch::zeros({3, 5}, torch::kFloat64);
  for (int64_t i = 0; i < 8; ++i) {
    const torch::Tensor row = g[i];
    const double norm = std::sqrt(row.pow(2).sum().item<double>());
    want += row * std::min(1.0, clip / norm);
  }
  want /= 8;
  const torch::Tensor got = dp_sgd_gradient(g, clip, 0.0, 1);
  EXPECT_EQ(got.sizes().vec(), std::vector<int64_t>({3, 5}));
  EXPECT_TRUE(torch::allclose(got, want, 0, 1e-14));
}

TEST(DpSgdGradient, NoiseIsSigmaClipOverBatchAndMatchesAddGaussianNoise) {
  const int64_t batch = 4, dim = 250000;
  const double sigma = 2.0, clip = 0.5;
  const torch::Tensor zeros = torch::zeros({batch, dim}, torch::kFloat64);
  const torch::Tensor got = dp_sgd_gradient(zeros, clip, sigma, 77);
  EXPECT_NEAR(got.std().item<double>(), sigma * clip / batch, 0.02 * sigma * clip / batch);
  EXPECT_TRUE(torch::equal(got, dp_sgd_gradient(zeros, clip, sigma, 77)));
  // The same generator as add_gaussian_noise: the sum's noise, divided by B.
  TensorMap sum = {{"g", torch::zeros({dim}, torch::kFloat64)}};
  add_gaussian_noise(sum, sigma, clip, 77);
  EXPECT_TRUE(torch::equal(got * batch, sum.at("g")));
}
