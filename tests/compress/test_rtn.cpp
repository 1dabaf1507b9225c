// labels: unit
// RTN weight quantization (compress/rtn.h): error bound, per-group scales, code range, and the
// straight-through fake quantization's forward and gradient.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/rtn.h"
#include "core/util/error.h"
#include "peft/quantized.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

torch::Tensor random_weight(int64_t out, int64_t in, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn({out, in});
}

// scales [out, groups] repeated over each group's inputs: [out, in].
torch::Tensor per_input(const torch::Tensor& scales, int64_t in) {
  return scales.repeat_interleave(in / scales.size(1), 1);
}

double mse(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).square().mean().item<double>(); }

TEST(Rtn, ErrorWithinHalfAScaleAndCodesInRange) {
  const auto w = random_weight(16, 128, 1);
  for (int bits : {4, 8}) {
    for (int64_t group : {0, 32, 64, 128}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group));
      const auto q = rtn_quantize(w, {bits, group});
      const int64_t groups = group == 0 ? 1 : 128 / group;
      ASSERT_EQ(q.scales.sizes(), (std::vector<int64_t>{16, groups}));
      ASSERT_EQ(q.codes.scalar_type(), torch::kInt8);
      ASSERT_EQ(q.codes.sizes(), w.sizes());
      const auto s = per_input(q.scales, 128);
      // |w - q| <= scale / 2, up to fp32 rounding of w / scale (relative 1e-6 of the scale).
      EXPECT_TRUE(((w - q.weight).abs() <= s * (0.5 + 1e-6)).all().item<bool>());
      const int64_t qmax = bits == 8 ? 127 : 7;
      EXPECT_LE(q.codes.abs().max().item<int64_t>(), qmax);
      // absmax maps to +-qmax: every group of random data uses the end of the range.
      const auto group_max = q.codes.abs().reshape({16, groups, -1}).amax(-1);
      EXPECT_TRUE((group_max == qmax).all().item<bool>());
      // The dequantized weight is exactly codes * scale.
      EXPECT_TRUE(torch::equal(q.weight, q.codes.to(torch::kFloat32) * s));
    }
  }
}

TEST(Rtn, ScalesAreComputedOnEachGroup) {
  auto w = random_weight(4, 128, 2).clamp(-1, 1);
  // One outlier per row, in a different group for each row: only that group's scale grows.
  for (int64_t r = 0; r < 4; ++r) w.index_put_({r, r * 32 + 5}, 50.0 + r);
  const auto q = rtn_quantize(w, {4, 32});
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t g = 0; g < 4; ++g) {
      const float expected = w[r].slice(0, g * 32, g * 32 + 32).abs().max().item<float>() / 7.0f;
      EXPECT_FLOAT_EQ(q.scales[r][g].item<float>(), expected) << "row " << r << " group " << g;
      if (g == r)
        EXPECT_FLOAT_EQ(q.scales[r][g].item<float>(), (50.0f + r) / 7.0f);
      else
        EXPECT_LE(q.scales[r][g].item<float>(), 1.0f / 7.0f);
    }
  }
  // Per channel, the outlier's scale (> 7) rounds the rest of its row (|w| <= 1) to 0: all 4 groups
  // of the row are lost instead of 1, so the error is ~4x the grouped one.
  const auto channel = rtn_quantize(w, {4, 0});
  EXPECT_GT(mse(channel.weight, w), 3 * mse(q.weight, w));
}

TEST(Rtn, EightBitsBeatFourAndSmallerGroupsBeatLarger) {
  const auto w = random_weight(32, 256, 3);
  for (int64_t group : {0, 32, 128}) {
    const double e8 = mse(rtn_quantize(w, {8, group}).weight, w);
    const double e4 = mse(rtn_quantize(w, {4, group}).weight, w);
    // The step shrinks 127/7 = 18x, the squared error ~330x; ask for 100x.
    EXPECT_LT(e8 * 100, e4) << "group " << group;
  }
  EXPECT_LT(mse(rtn_quantize(w, {4, 32}).weight, w), mse(rtn_quantize(w, {4, 0}).weight, w));
}

TEST(Rtn, MatchesPeftQuantizerAndHandlesZeroGroups) {
  auto w = random_weight(3, 64, 4);
  w[1].zero_();
  const auto q = rtn_quantize(w, {4, 32});
  const auto peft = quantize_weight(w, 4, 32);
  EXPECT_TRUE(torch::equal(pack_int4(q.codes), peft.data));
  EXPECT_TRUE(torch::equal(q.scales, peft.scales));
  EXPECT_TRUE((q.scales[1] == 0).all().item<bool>());
  EXPECT_TRUE((q.codes[1] == 0).all().item<bool>());
  EXPECT_TRUE((q.weight[1] == 0).all().item<bool>());
  EXPECT_FALSE(torch::isnan(q.weight).any().item<bool>());
}

TEST(Rtn, StraightThroughGradientPassesUnchanged) {
  const auto w = random_weight(8, 64, 5).requires_grad_(true);
  const auto y = fake_quantize(w, {4, 32});
  EXPECT_TRUE(torch::equal(y.detach(), rtn_quantize(w.detach(), {4, 32}).weight));
  const auto upstream = torch::randn({8, 64});
  (y * upstream).sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), upstream));
}

TEST(Rtn, StraightThroughWithFixedScalesZeroesClippedGradients) {
  const auto w0 = random_weight(8, 64, 6);
  // Half the absmax scales: values above half of each group's max are clipped to +-qmax * scale.
  const auto scales = rtn_quantize(w0, {4, 32}).scales * 0.5;
  const auto s = per_input(scales, 64);
  const auto clipped = w0.abs() > s * 7;
  ASSERT_GT(clipped.sum().item<int64_t>(), 0);
  ASSERT_LT(clipped.sum().item<int64_t>(), w0.numel());
  const auto upstream = torch::randn({8, 64});
  for (bool zero_clipped : {false, true}) {
    SCOPED_TRACE(zero_clipped ? "zero clipped" : "pass all");
    const auto w = w0.clone().requires_grad_(true);
    const auto y = fake_quantize_with_scales(w, scales, {4, 32}, zero_clipped);
    // Clipped values sit at the end of the range.
    EXPECT_TRUE(torch::allclose(y.detach().masked_select(clipped), (w0.sign() * s * 7).masked_select(clipped)));
    (y * upstream).sum().backward();
    const auto expected = zero_clipped ? upstream * (~clipped).to(torch::kFloat32) : upstream;
    EXPECT_TRUE(torch::equal(w.grad(), expected));
  }
}

TEST(Rtn, BadOptionsAreOneLineConfigErrors) {
  const auto w = random_weight(4, 128, 7);
  testing::expect_one_line_error<ConfigError>([&] { rtn_quantize(w, {3, 32}); }, {"bits", "3"});
  testing::expect_one_line_error<ConfigError>([&] { rtn_quantize(w, {4, 48}); }, {"48", "128"});
  testing::expect_one_line_error<ConfigError>([&] { rtn_quantize(random_weight(4, 63, 8), {4, 0}); }, {"63", "odd"});
  testing::expect_one_line_error<ConfigError>(
      [&] {
        fake_quantize_with_scales(w, torch::ones({4, 2}), {4, 32}, true);
      },
      {"[4, 4]"});
}

}  // namespace
}  // namespace fedsplit
