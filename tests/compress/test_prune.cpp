// labels: unit
// Pruning masks (compress/prune.h): exact sparsity per row, 2:4 structure, Wanda's score on a
// hand-computed case, and Wanda against magnitude when input features differ widely in scale.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

#include "compress/prune.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

PruneOptions unstructured(double sparsity, bool per_row = true) {
  PruneOptions o;
  o.sparsity = sparsity;
  o.per_row = per_row;
  return o;
}

PruneOptions n_of_m(int64_t n, int64_t m) {
  PruneOptions o;
  o.n = n;
  o.m = m;
  return o;
}

// ||X W^T - X (W * mask)^T||_F
double reconstruction_error(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& mask) {
  return x.matmul((w - w * mask).t()).norm().item<double>();
}

TEST(Prune, UnstructuredRemovesExactlyTheLowestFractionOfEachRow) {
  torch::manual_seed(20);
  const auto w = torch::randn({8, 64});
  const auto norms = torch::rand({64}) + 0.1;
  for (double sparsity : {0.5, 0.25, 0.3, 0.0}) {
    for (bool wanda : {false, true}) {
      SCOPED_TRACE("sparsity " + std::to_string(sparsity) + (wanda ? " wanda" : " magnitude"));
      const auto scores = wanda ? wanda_scores(w, norms) : magnitude_scores(w);
      const auto mask = prune_mask(scores, unstructured(sparsity));
      ASSERT_EQ(mask.scalar_type(), torch::kBool);
      const auto pruned_per_row = (~mask).sum(1);
      const auto expected = static_cast<int64_t>(std::floor(sparsity * 64));  // 0.3 * 64 = 19.2 -> 19
      EXPECT_TRUE((pruned_per_row == expected).all().item<bool>()) << pruned_per_row;
      if (expected == 0) continue;
      // Everything kept in a row scores at least as high as everything removed from it.
      const auto kept_min = scores.masked_fill(~mask, INFINITY).amin(1);
      const auto pruned_max = scores.masked_fill(mask, -INFINITY).amax(1);
      EXPECT_TRUE((kept_min >= pruned_max).all().item<bool>());
    }
  }
  // Across the whole matrix: the count is exact overall, not per row.
  auto skewed = w.clone();
  skewed[0].copy_(w[0].abs() + 10);  // above every other weight (|randn| < 10): row 0 keeps all
  const auto mask = prune_mask(magnitude_scores(skewed), unstructured(0.5, false));
  EXPECT_EQ((~mask).sum().item<int64_t>(), 8 * 64 / 2);
  EXPECT_TRUE(mask[0].all().item<bool>());
}

TEST(Prune, TwoFourKeepsTheTwoBestOfEachFour) {
  torch::manual_seed(21);
  const auto w = torch::randn({16, 64});
  const auto norms = torch::exp(torch::randn({64}));
  for (bool wanda : {false, true}) {
    SCOPED_TRACE(wanda ? "wanda" : "magnitude");
    const auto scores = wanda ? wanda_scores(w, norms) : magnitude_scores(w);
    const auto mask = prune_mask(scores, n_of_m(2, 4));
    const auto per_group = mask.reshape({16, 16, 4}).sum(-1);
    EXPECT_TRUE((per_group == 2).all().item<bool>());
    const auto grouped_scores = scores.reshape({16, 16, 4});
    const auto grouped_mask = mask.reshape({16, 16, 4});
    const auto kept_min = grouped_scores.masked_fill(~grouped_mask, INFINITY).amin(-1);
    const auto pruned_max = grouped_scores.masked_fill(grouped_mask, -INFINITY).amax(-1);
    EXPECT_TRUE((kept_min >= pruned_max).all().item<bool>());
  }
  EXPECT_TRUE((prune_mask(magnitude_scores(w), n_of_m(1, 4)).reshape({16, 16, 4}).sum(-1) == 1).all().item<bool>());
}

TEST(Prune, WandaWeighsMagnitudesByInputNorms) {
  // Two tokens over 4 features: norms sqrt(3^2) = 3, 1, 0.5, sqrt(6^2 + 8^2) = 10.
  InputNormCollector collector(4);
  collector.add_batch(torch::tensor({3.0f, 0.0f, 0.0f, 6.0f}).reshape({1, 4}));
  collector.add_batch(torch::tensor({0.0f, 1.0f, 0.5f, 8.0f}).reshape({1, 1, 4}));
  EXPECT_EQ(collector.tokens(), 2);
  const auto norms = collector.norms();
  EXPECT_TRUE(torch::allclose(norms, torch::tensor({3.0f, 1.0f, 0.5f, 10.0f})));
  const auto w = torch::tensor({1.0f, -2.0f, 3.0f, 0.5f, 0.2f, 1.0f, -1.0f, 2.0f}).reshape({2, 4});
  // Wanda scores: row 0 [3, 2, 1.5, 5] keeps inputs 0 and 3; row 1 [0.6, 1, 0.5, 20] keeps 1 and 3.
  EXPECT_TRUE(torch::allclose(wanda_scores(w, norms),
                              torch::tensor({3.0f, 2.0f, 1.5f, 5.0f, 0.6f, 1.0f, 0.5f, 20.0f}).reshape({2, 4})));
  const auto wanda = prune_mask(wanda_scores(w, norms), unstructured(0.5));
  EXPECT_TRUE(torch::equal(wanda, torch::tensor({1, 0, 0, 1, 0, 1, 0, 1}).to(torch::kBool).reshape({2, 4})));
  // Magnitude alone: row 0 [1, 2, 3, 0.5] keeps 1 and 2; row 1 [0.2, 1, 1, 2] keeps 3 and, of the
  // tie between 1 and 2, input 2 (the lower index is pruned first).
  const auto magnitude = prune_mask(magnitude_scores(w), unstructured(0.5));
  EXPECT_TRUE(torch::equal(magnitude, torch::tensor({0, 1, 1, 0, 0, 0, 1, 1}).to(torch::kBool).reshape({2, 4})));
  InputNormCollector empty(4);
  testing::expect_one_line_error<Error>([&] { empty.norms(); }, {"no calibration inputs"});
  testing::expect_one_line_error<ConfigError>([&] { empty.add_batch(torch::ones({2, 3})); }, {"4", "3"});
}

TEST(Prune, WandaReconstructsBetterThanMagnitudeWhenFeatureScalesDiffer) {
  // Feature scales spread over e^-3 .. e^3: a weight's magnitude says little about its effect.
  torch::manual_seed(22);
  const int64_t in = 256, out = 64;
  const auto feature_scale = torch::exp(torch::rand({in}) * 6 - 3);
  const auto calibration = torch::randn({1024, in}) * feature_scale;
  const auto held_out = torch::randn({512, in}) * feature_scale;
  const auto w = torch::randn({out, in});
  InputNormCollector collector(in);
  collector.add_batch(calibration);
  const auto wanda_s = wanda_scores(w, collector.norms()), magnitude_s = magnitude_scores(w);
  for (const auto& options : {unstructured(0.5), n_of_m(2, 4)}) {
    SCOPED_TRACE(options.m > 0 ? "2:4" : "50% unstructured");
    const double e_wanda = reconstruction_error(held_out, w, prune_mask(wanda_s, options));
    const double e_magnitude = reconstruction_error(held_out, w, prune_mask(magnitude_s, options));
    std::cout << (options.m > 0 ? "2:4" : "50%") << ": Wanda " << e_wanda << ", magnitude " << e_magnitude << "\n";
    EXPECT_LT(e_wanda, 0.7 * e_magnitude);
  }
}

TEST(Prune, BadOptionsAreOneLineConfigErrors) {
  const auto scores = torch::rand({4, 8});
  testing::expect_one_line_error<ConfigError>([&] { prune_mask(scores, unstructured(1.0)); }, {"sparsity", "1"});
  testing::expect_one_line_error<ConfigError>([&] { prune_mask(scores, unstructured(-0.1)); }, {"sparsity"});
  testing::expect_one_line_error<ConfigError>([&] { prune_mask(scores, n_of_m(4, 4)); }, {"4:4"});
  testing::expect_one_line_error<ConfigError>([&] { prune_mask(scores, n_of_m(2, 3)); }, {"3", "8"});
  testing::expect_one_line_error<ConfigError>([&] { wanda_scores(scores, torch::ones({7})); }, {"[8]"});
}

}  // namespace
}  // namespace fedsplit
