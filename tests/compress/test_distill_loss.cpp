// labels: unit
// The distillation loss (compress/distill_loss.h) against explicit formulas: alpha = 0 is the
// cross-entropy exactly; forward and reverse KL against softmax sums computed in double (1e-6); the
// tau^2 scaling; zero KL for identical logits; the KL part's gradient against the analytic
// alpha * tau * (p_S - p_T) / N (1e-5); hidden-state projections' MSE; layer maps and option errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "compress/distill_loss.h"
#include "core/util/error.h"
#include "tests/test_support.h"
#include "train/trainer.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_error;

torch::Tensor logits(uint64_t seed, std::vector<int64_t> shape, double scale = 2.0) {
  torch::manual_seed(seed);
  return torch::randn(shape, torch::kFloat64).mul(scale).to(torch::kFloat32);
}

// KL(p || q) at temperature tau, times tau^2, per row, in double with explicit loops.
std::vector<double> explicit_kl(const torch::Tensor& p_logits, const torch::Tensor& q_logits, double tau) {
  const auto p2 = p_logits.reshape({-1, p_logits.size(-1)}).to(torch::kFloat64);
  const auto q2 = q_logits.reshape({-1, q_logits.size(-1)}).to(torch::kFloat64);
  std::vector<double> out;
  for (int64_t r = 0; r < p2.size(0); ++r) {
    const int64_t v = p2.size(1);
    std::vector<double> p(v), q(v);
    double zp = 0, zq = 0;
    for (int64_t k = 0; k < v; ++k) {
      p[k] = std::exp(p2[r][k].item<double>() / tau);
      q[k] = std::exp(q2[r][k].item<double>() / tau);
      zp += p[k];
      zq += q[k];
    }
    double kl = 0;
    for (int64_t k = 0; k < v; ++k) kl += p[k] / zp * std::log((p[k] / zp) / (q[k] / zq));
    out.push_back(kl * tau * tau);
  }
  return out;
}

DistillLossOptions options(double alpha, double tau, const std::string& divergence = "forward") {
  DistillLossOptions o;
  o.alpha = alpha;
  o.temperature = tau;
  o.divergence = divergence;
  return o;
}

TEST(DistillLoss, AlphaZeroIsTheCrossEntropyExactly) {
  const auto zs = logits(1, {2, 3, 7});
  const auto zt = logits(2, {2, 3, 7});
  const auto targets = torch::tensor({0, 3, 6, 2, 5, 1}, torch::kInt64).reshape({2, 3});
  const auto parts = distill_logit_loss(zs, zt, targets, options(0.0, 2.0));
  EXPECT_TRUE(torch::equal(parts.total, next_token_loss(zs, targets)));
  EXPECT_TRUE(torch::equal(parts.ce, next_token_loss(zs, targets)));
}

TEST(DistillLoss, ForwardAndReverseKlMatchTheExplicitFormula) {
  const auto zs = logits(3, {2, 4, 6});
  const auto zt = logits(4, {2, 4, 6});
  for (double tau : {1.0, 2.0, 0.5}) {
    SCOPED_TRACE("tau " + std::to_string(tau));
    const auto fwd = soft_kl_per_token(zs, zt, options(1, tau, "forward"));
    const auto rev = soft_kl_per_token(zs, zt, options(1, tau, "reverse"));
    const auto want_fwd = explicit_kl(zt, zs, tau);  // KL(p_T || p_S)
    const auto want_rev = explicit_kl(zs, zt, tau);  // KL(p_S || p_T)
    ASSERT_EQ(fwd.numel(), 8);
    for (int64_t i = 0; i < 8; ++i) {
      EXPECT_NEAR(fwd[i].item<double>(), want_fwd[static_cast<size_t>(i)], 1e-6);
      EXPECT_NEAR(rev[i].item<double>(), want_rev[static_cast<size_t>(i)], 1e-6);
    }
    // The loss: mean over tokens, alpha-weighted, plus (1 - alpha) CE.
    const auto targets = torch::randint(0, 6, {2, 4}, torch::kInt64);
    double mean = 0;
    for (double v : want_fwd) mean += v / 8;
    const auto parts = distill_logit_loss(zs, zt, targets, options(0.3, tau));
    EXPECT_NEAR(parts.kl.item<double>(), mean, 1e-6);
    EXPECT_NEAR(parts.total.item<double>(), 0.7 * next_token_loss(zs, targets).item<double>() + 0.3 * mean, 1e-6);
  }
}

TEST(DistillLoss, TemperatureSquaredScaling) {
  // tau^2 * KL of the softened distributions: the same softened KL at tau = 3 computed at tau = 1 on
  // logits divided by 3, times 9.
  const auto zs = logits(5, {3, 9});
  const auto zt = logits(6, {3, 9});
  const auto at3 = soft_kl_per_token(zs, zt, options(1, 3.0));
  const auto at1 = soft_kl_per_token(zs / 3.0, zt / 3.0, options(1, 1.0));
  EXPECT_TRUE(torch::allclose(at3, at1 * 9.0, 1e-5, 1e-7)) << at3 << at1;
}

TEST(DistillLoss, IdenticalLogitsHaveNoSoftLoss) {
  const auto z = logits(7, {2, 5, 11}, 5.0);
  const auto targets = torch::randint(0, 11, {2, 5}, torch::kInt64);
  for (const char* div : {"forward", "reverse"}) {
    const auto parts = distill_logit_loss(z, z.clone(), targets, options(0.6, 2.0, div));
    EXPECT_NEAR(parts.kl.item<double>(), 0.0, 1e-7) << div;
    EXPECT_NEAR(parts.total.item<double>(), 0.4 * parts.ce.item<double>(), 1e-6) << div;
  }
}

TEST(DistillLoss, KlGradientIsAlphaTauTimesTheProbabilityGap) {
  const double alpha = 0.7, tau = 2.0;
  auto zs = logits(8, {2, 3, 5}).requires_grad_(true);
  const auto zt = logits(9, {2, 3, 5});
  // One ignored token: it gets no gradient, and N counts the 5 others.
  auto targets = torch::randint(0, 5, {2, 3}, torch::kInt64);
  targets[1][2] = -100;
  const auto parts = distill_logit_loss(zs, zt, targets, options(alpha, tau));
  (parts.kl * alpha).backward();
  const auto ps = torch::softmax(zs.detach().to(torch::kFloat64) / tau, -1);
  const auto pt = torch::softmax(zt.to(torch::kFloat64) / tau, -1);
  auto want = (ps - pt) * (alpha * tau / 5.0);
  want[1][2].zero_();
  EXPECT_TRUE(torch::allclose(zs.grad().to(torch::kFloat64), want, 0, 1e-5)) << zs.grad() << want;
  // The ignored token does not count in the KL mean either.
  const auto per_token = soft_kl_per_token(zs.detach(), zt, options(alpha, tau));
  EXPECT_NEAR(parts.kl.item<double>(), (per_token.sum() - per_token[5]).item<double>() / 5.0, 1e-6);
}

TEST(DistillLoss, HiddenProjectionsMse) {
  // Student width 4, teacher width 6, student 2 layers, teacher 4: default pairs 0:1 and 1:3.
  const LayerMap map = even_layer_map(2, 4);
  ASSERT_EQ(map, (LayerMap{{0, 1}, {1, 3}}));
  HiddenProjector proj(4, 6, map, 11);
  std::vector<torch::Tensor> hs, ht;
  for (int i = 0; i < 2; ++i) hs.push_back(logits(20 + i, {2, 3, 4}));
  for (int j = 0; j < 4; ++j) ht.push_back(logits(30 + j, {2, 3, 6}));
  const auto params = proj->named_parameters();
  double want = 0;
  for (int k = 0; k < 2; ++k) {
    const auto w = params["proj." + std::to_string(k) + ".weight"].to(torch::kFloat64);
    const auto b = params["proj." + std::to_string(k) + ".bias"].to(torch::kFloat64);
    const auto y = torch::matmul(hs[static_cast<size_t>(k)].to(torch::kFloat64), w.t()) + b;
    want += (y - ht[static_cast<size_t>(map[static_cast<size_t>(k)].second)].to(torch::kFloat64)).square().mean().item<double>() / 2;
  }
  EXPECT_NEAR(proj->forward(hs, ht).item<double>(), want, 1e-6);

  // Equal widths start at the identity: the MSE of the raw states; masked tokens are left out.
  HiddenProjector same(4, 4, LayerMap{{0, 0}});
  auto valid = torch::ones({2, 3}, torch::kBool);
  valid[0][1] = false;
  const auto a = logits(40, {2, 3, 4}), c = logits(41, {2, 3, 4});
  const auto keep = valid.reshape({-1}).nonzero().reshape({-1});
  const double raw = (a.reshape({6, 4}).index_select(0, keep) - c.reshape({6, 4}).index_select(0, keep))
                         .square().mean().item<double>();
  EXPECT_NEAR(same->forward({a}, {c}, valid).item<double>(), raw, 1e-6);

  // The whole loss adds beta times it; the projector's parameters get gradients.
  DistillLossOptions o = options(0.5, 1.0);
  o.hidden_weight = 0.25;
  const auto zs = logits(50, {2, 3, 5}), zt = logits(51, {2, 3, 5});
  const auto targets = torch::randint(0, 5, {2, 3}, torch::kInt64);
  const auto parts = distill_loss(zs, zt, targets, o, proj.get(), hs, ht);
  EXPECT_NEAR(parts.total.item<double>(),
              distill_logit_loss(zs, zt, targets, o).total.item<double>() + 0.25 * want, 1e-6);
  parts.total.backward();
  for (const auto& p : proj->parameters()) EXPECT_TRUE(p.grad().defined() && p.grad().abs().sum().item<double>() > 0);
}

TEST(DistillLoss, LayerMapsAndOptionErrors) {
  EXPECT_EQ(even_layer_map(3, 6), (LayerMap{{0, 1}, {1, 3}, {2, 5}}));
  EXPECT_EQ(even_layer_map(4, 4), (LayerMap{{0, 0}, {1, 1}, {2, 2}, {3, 3}}));
  EXPECT_EQ(parse_layer_map("0:0, 1:5", 2, 6), (LayerMap{{0, 0}, {1, 5}}));
  EXPECT_EQ(parse_layer_map("", 3, 6), even_layer_map(3, 6));
  expect_error<ConfigError>([] { parse_layer_map("0:6", 2, 6); }, {"distill.layer_map", "'0:6'"});
  expect_error<ConfigError>([] { parse_layer_map("0-1", 2, 6); }, {"distill.layer_map"});
  expect_error<ConfigError>([] { validate(options(1.5, 1.0)); }, {"distill.alpha"});
  expect_error<ConfigError>([] { validate(options(0.5, 0.0)); }, {"distill.temperature"});
  expect_error<ConfigError>([] { validate(options(0.5, 1.0, "js")); }, {"distill.divergence"});
  auto o = options(0.5, 1.0);
  o.hidden_weight = -1;
  expect_error<ConfigError>([&] { validate(o); }, {"distill.hidden_weight"});
}

}  // namespace
}  // namespace fedsplit
