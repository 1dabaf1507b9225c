// labels: unit
// GPTQ (compress/gptq.h) against RTN on a random linear layer: lower output error when the
// calibration inputs are correlated, exactly RTN when H is diagonal, act_order, dead inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

#include "compress/gptq.h"
#include "compress/rtn.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

constexpr int64_t kIn = 128, kOut = 64;

// Inputs Z A with Z Gaussian and one random mixing A: features strongly correlated, H far from
// diagonal. `calibration` and `held_out` come from the same A.
struct CorrelatedInputs {
  torch::Tensor calibration, held_out;
};

CorrelatedInputs correlated_inputs(uint64_t seed) {
  torch::manual_seed(seed);
  const auto mixing = torch::randn({kIn, kIn}) / std::sqrt(static_cast<double>(kIn));
  return {torch::randn({2048, kIn}).matmul(mixing), torch::randn({1024, kIn}).matmul(mixing)};
}

torch::Tensor hessian_of(const torch::Tensor& x) {
  GptqHessian h(x.size(1));
  h.add_batch(x);
  return h.hessian();
}

// ||X W^T - X Q^T||_F
double output_error(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& q) {
  return x.matmul((w - q).t()).norm().item<double>();
}

GptqOptions gptq_options(int bits, int64_t group, bool act_order = false) {
  GptqOptions o;
  o.quant = {bits, group};
  o.act_order = act_order;
  return o;
}

// codes[:, j] * scales[:, g_idx[j]]
torch::Tensor decode(const GptqResult& r) { return r.codes.to(torch::kFloat32) * r.scales.index_select(1, r.g_idx); }

// The group of each of `in` input columns in order: j / group.
torch::Tensor groups_in_order(int64_t in, int64_t group) { return torch::div(torch::arange(in), group, "floor"); }

// A Sylvester Hadamard matrix [n, n] of +-1 (n a power of 2): its columns are exactly orthogonal.
torch::Tensor hadamard(int64_t n) {
  auto h = torch::ones({1, 1});
  while (h.size(0) < n) h = torch::cat({torch::cat({h, h}, 1), torch::cat({h, -h}, 1)}, 0);
  return h;
}

TEST(GptqHessian, AccumulatesTwoOverNSumOfOuterProducts) {
  torch::manual_seed(10);
  const auto x = torch::randn({300, 16});
  GptqHessian h(16);
  h.add_batch(x.slice(0, 0, 100));
  h.add_batch(x.slice(0, 100, 160).reshape({3, 20, 16}));  // [..., in] batches flatten
  h.add_batch(x.slice(0, 160).to(torch::kFloat64));
  EXPECT_EQ(h.tokens(), 300);
  const auto expected = x.t().matmul(x) * (2.0 / 300);
  EXPECT_TRUE(torch::allclose(h.hessian(), expected, 1e-5, 1e-5));
  GptqHessian empty(16);
  testing::expect_one_line_error<Error>([&] { empty.hessian(); }, {"no calibration inputs"});
  testing::expect_one_line_error<ConfigError>([&] { h.add_batch(torch::ones({4, 15})); }, {"16", "15"});
}

TEST(Gptq, BeatsRtnOnCorrelatedInputs) {
  const auto inputs = correlated_inputs(11);
  torch::manual_seed(12);
  const auto w = torch::randn({kOut, kIn});
  const auto h = hessian_of(inputs.calibration);
  for (int64_t group : {32, 0}) {
    SCOPED_TRACE("group " + std::to_string(group));
    const auto gptq = gptq_quantize(w, h, gptq_options(4, group));
    const auto rtn = rtn_quantize(w, {4, group});
    const double e_gptq = output_error(inputs.held_out, w, gptq.weight);
    const double e_rtn = output_error(inputs.held_out, w, rtn.weight);
    std::cout << "group " << group << ": held-out output error GPTQ " << e_gptq << ", RTN " << e_rtn << "\n";
    EXPECT_LT(e_gptq, 0.8 * e_rtn);
    // The result is what its codes, scales and g_idx say, codes in the 4-bit range.
    EXPECT_TRUE(torch::equal(gptq.weight, decode(gptq)));
    EXPECT_LE(gptq.codes.abs().max().item<int64_t>(), 7);
    EXPECT_TRUE(torch::equal(gptq.g_idx, groups_in_order(kIn, group == 0 ? kIn : group)));
    EXPECT_EQ(gptq.scales.size(1), group == 0 ? 1 : kIn / group);
  }
}

TEST(Gptq, LazyBlockUpdatesMatchOneBlock) {
  // Blocks of 32 columns apply the feedback to later blocks in one product per block; the result
  // is the one-block (128) result up to fp32 reassociation, which can flip a rare rounding tie.
  const auto inputs = correlated_inputs(23);
  torch::manual_seed(24);
  const auto w = torch::randn({kOut, kIn});
  const auto h = hessian_of(inputs.calibration);
  auto blocked = gptq_options(4, 32);
  blocked.block_size = 32;
  const auto a = gptq_quantize(w, h, gptq_options(4, 32));
  const auto b = gptq_quantize(w, h, blocked);
  const double same = (a.codes == b.codes).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(same, 0.99);
  const double e_a = output_error(inputs.held_out, w, a.weight), e_b = output_error(inputs.held_out, w, b.weight);
  EXPECT_NEAR(e_b / e_a, 1.0, 0.02);
}

TEST(Gptq, TwoInputsGetTheLeastSquaresCompensation) {
  // With two correlated inputs, quantizing w0 to q0 leaves e0 = w0 - q0; the w1 that minimises
  // E[(e0 x0 + (w1 - w1') x1)^2] is w1' = w1 + e0 H01 / H11, which GPTQ then rounds (no damping,
  // per-channel 8-bit scale). A third, independent input holds each row's absmax (10), so that
  // neither of the first two sits at the end of the range. Expected values computed here in fp64.
  torch::manual_seed(19);
  const auto w = torch::cat({torch::randn({32, 2}), torch::full({32, 1}, 10.0f)}, 1);
  const auto h = torch::tensor({2.0f, 1.2f, 0.0f, 1.2f, 1.5f, 0.0f, 0.0f, 0.0f, 1.0f}).reshape({3, 3});
  GptqOptions o = gptq_options(8, 0);
  o.percdamp = 0;
  const auto r = gptq_quantize(w, h, o);
  const auto wd = w.to(torch::kFloat64);
  const double scale = 10.0 / 127;
  const auto q0 = torch::round(wd.select(1, 0) / scale);
  const auto w1 = wd.select(1, 1) + (wd.select(1, 0) - q0 * scale) * (1.2 / 1.5);
  const auto q1 = torch::round(w1 / scale);
  EXPECT_TRUE(torch::equal(r.codes.select(1, 0).to(torch::kFloat64), q0));
  EXPECT_TRUE(torch::equal(r.codes.select(1, 1).to(torch::kFloat64), q1));
  EXPECT_TRUE((r.codes.select(1, 2) == 127).all().item<bool>());
  // The compensation moved some second-column codes away from plain rounding.
  EXPECT_FALSE(torch::equal(r.codes.select(1, 1), rtn_quantize(w, {8, 0}).codes.select(1, 1)));
}

TEST(Gptq, EqualsRtnWhenTheHessianIsDiagonal) {
  // Hadamard rows with each feature scaled by a power of two: X^T X is exactly diagonal (in fp32
  // too), with unequal entries. Then U = chol(H^-1) is diagonal, every error-feedback term is 0,
  // and GPTQ rounds each weight as RTN does, damping or not.
  torch::manual_seed(13);
  const auto powers = torch::randint(-2, 3, {kIn}).to(torch::kFloat32);
  const auto x = hadamard(kIn) * torch::pow(2.0, powers).unsqueeze(0);
  const auto h = hessian_of(x);
  ASSERT_TRUE(torch::equal(h, torch::diag(h.diagonal())));
  const auto w = torch::randn({kOut, kIn});
  for (int bits : {4, 8}) {
    for (int64_t group : {0, 32, 128}) {
      for (bool act_order : {false, true}) {
        if (act_order && group != 0) continue;  // act_order regroups the columns: not RTN's groups
        SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group) +
                     (act_order ? " act_order" : ""));
        const auto gptq = gptq_quantize(w, h, gptq_options(bits, group, act_order));
        const auto rtn = rtn_quantize(w, {bits, group});
        EXPECT_TRUE(torch::equal(gptq.codes, rtn.codes));
        EXPECT_TRUE(torch::equal(gptq.scales, rtn.scales));
        EXPECT_TRUE(torch::equal(gptq.weight, rtn.weight));
      }
    }
  }
}

TEST(Gptq, NearRtnOnUncorrelatedInputs) {
  // Independent Gaussian features: H ~ 2 I up to sampling noise, so there is little to gain; GPTQ
  // stays within 10% of RTN on held-out inputs (and never far worse).
  torch::manual_seed(14);
  const auto calibration = torch::randn({4096, kIn}), held_out = torch::randn({1024, kIn});
  const auto w = torch::randn({kOut, kIn});
  const auto h = hessian_of(calibration);
  const double e_gptq = output_error(held_out, w, gptq_quantize(w, h, gptq_options(4, 32)).weight);
  const double e_rtn = output_error(held_out, w, rtn_quantize(w, {4, 32}).weight);
  std::cout << "uncorrelated: GPTQ " << e_gptq << ", RTN " << e_rtn << "\n";
  EXPECT_NEAR(e_gptq / e_rtn, 1.0, 0.1);
}

TEST(Gptq, ActOrderQuantizesByDescendingHessianDiagonal) {
  auto inputs = correlated_inputs(15);
  // Features of very different energy, so the order matters.
  torch::manual_seed(16);
  const auto loudness = torch::exp(torch::rand({kIn}) * 4 - 2);
  inputs.calibration *= loudness;
  inputs.held_out *= loudness;
  const auto w = torch::randn({kOut, kIn});
  const auto h = hessian_of(inputs.calibration);
  const auto plain = gptq_quantize(w, h, gptq_options(4, 32));
  const auto ordered = gptq_quantize(w, h, gptq_options(4, 32, true));
  const double e_rtn = output_error(inputs.held_out, w, rtn_quantize(w, {4, 32}).weight);
  const double e_plain = output_error(inputs.held_out, w, plain.weight);
  const double e_ordered = output_error(inputs.held_out, w, ordered.weight);
  std::cout << "act_order: RTN " << e_rtn << ", GPTQ " << e_plain << ", GPTQ act_order " << e_ordered << "\n";
  EXPECT_LT(e_ordered, 0.8 * e_rtn);
  // Loud inputs first, while the most columns are left to absorb their error: here it also beats
  // GPTQ in column order (by 25%; ask for 10%).
  EXPECT_LT(e_ordered, 0.9 * e_plain);
  EXPECT_TRUE(torch::equal(ordered.weight, decode(ordered)));
  // Group k holds the k-th 32 inputs by descending diag(H), each group 32 columns.
  const auto by_energy = std::get<1>(torch::sort(h.diagonal(), /*stable=*/true, 0, /*descending=*/true));
  EXPECT_TRUE(torch::equal(ordered.g_idx.index_select(0, by_energy), groups_in_order(kIn, 32)));
  EXPECT_FALSE(torch::equal(ordered.g_idx, plain.g_idx));
  EXPECT_TRUE(torch::equal(torch::bincount(ordered.g_idx), torch::full({kIn / 32}, 32, torch::kLong)));
}

TEST(Gptq, DeadInputsGiveZeroWeightsAndNoNan) {
  auto inputs = correlated_inputs(17);
  auto dead = torch::zeros({kIn}, torch::kBool);
  dead.index_put_({torch::tensor({0, 5, 6, 40, 127}, torch::kLong)}, true);
  inputs.calibration.masked_fill_(dead, 0.0);
  inputs.held_out.masked_fill_(dead, 0.0);
  torch::manual_seed(18);
  const auto w = torch::randn({kOut, kIn});
  const auto h = hessian_of(inputs.calibration);
  ASSERT_TRUE((h.diagonal().masked_select(dead) == 0).all().item<bool>());
  const double e_rtn = output_error(inputs.held_out, w, rtn_quantize(w, {4, 32}).weight);
  for (bool act_order : {false, true}) {
    SCOPED_TRACE(act_order ? "act_order" : "in order");
    const auto r = gptq_quantize(w, h, gptq_options(4, 32, act_order));
    EXPECT_TRUE(torch::isfinite(r.weight).all().item<bool>());
    EXPECT_TRUE(torch::isfinite(r.scales).all().item<bool>());
    EXPECT_TRUE((r.weight.index_select(1, dead.nonzero().squeeze(1)) == 0).all().item<bool>());
    EXPECT_LT(output_error(inputs.held_out, w, r.weight), 0.8 * e_rtn);
  }
}

TEST(Gptq, BadInputsAreOneLineErrors) {
  const auto w = torch::randn({4, 64});
  const auto h = torch::eye(64);
  auto o = gptq_options(4, 32);
  o.block_size = 48;
  testing::expect_one_line_error<ConfigError>([&] { gptq_quantize(w, h, o); }, {"block_size 48", "32"});
  testing::expect_one_line_error<ConfigError>([&] { gptq_quantize(w, torch::eye(32), gptq_options(4, 32)); },
                                              {"[64, 64]"});
  testing::expect_one_line_error<ConfigError>([&] { gptq_quantize(w, h, gptq_options(5, 32)); }, {"bits", "5"});
  testing::expect_one_line_error<Error>([&] { gptq_quantize(w, -h, gptq_options(4, 32)); },
                                        {"not positive definite", "percdamp"});
}

}  // namespace
}  // namespace fedsplit
