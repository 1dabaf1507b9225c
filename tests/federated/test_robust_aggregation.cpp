// labels: unit
// Byzantine-robust aggregation: each rule on small inputs whose answers are worked out by hand in the
// comments (tolerance 1e-5 on fp32 results of magnitude <= 100; 1e-12 on fp64 decision values), the
// point of the rules (2 of 10 clients sending 100x sign-flipped deltas cannot move the median, trimmed
// mean, Krum or Bulyan more than 10% from the honest mean, while WeightedMean is dragged far away),
// flattening of multi-tensor maps, the trust state, and the errors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/util/error.h"
#include "federated/aggregator.h"
#include "federated/robust_aggregation.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

constexpr double kTol = 1e-5;

TensorMap vec(std::vector<float> values) { return {{"w", torch::tensor(values)}}; }

RobustOptions rule(const std::string& name, int64_t f = 1) {
  RobustOptions o;
  o.rule = name;
  o.byzantine = f;
  return o;
}

// Aggregates 1-D updates global + v_i (one coordinate each, client ids 10, 11, ...) and returns the single result value.
double aggregate_1d(RobustAggregator& agg, float global, const std::vector<float>& values) {
  for (size_t i = 0; i < values.size(); ++i) agg.add(vec({global + values[i]}), UpdateInfo{static_cast<int64_t>(10 + i), 1.0});
  return agg.finalize().at("w")[0].item<double>();
}

double relative_error(const TensorMap& got, const TensorMap& want) {
  double num = 0, den = 0;
  for (const auto& [k, w] : want) {
    num += (got.at(k).to(torch::kFloat64) - w.to(torch::kFloat64)).square().sum().item<double>();
    den += w.to(torch::kFloat64).square().sum().item<double>();
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST(RobustAggregation, MedianOddEvenAndAnOutlier) {
  RobustAggregator agg(rule("median"), vec({5}));
  EXPECT_NEAR(aggregate_1d(agg, 5, {1, 3, 1e6}), 5 + 3, kTol);      // odd: the middle value
  EXPECT_NEAR(aggregate_1d(agg, 5, {3, 1, 2, 1e6}), 5 + 2.5, kTol);  // even: (2 + 3) / 2
  EXPECT_EQ(agg.count(), 0);
  // Per coordinate: the outlier of one coordinate does not decide the other.
  RobustAggregator two(rule("median"), vec({0, 0}));
  two.add(vec({1, 30}), {0});
  two.add(vec({2, 10}), {1});
  two.add(vec({1e6, 20}), {2});
  const auto out = two.finalize().at("w");
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(out[0].item<double>(), 2, kTol);
  EXPECT_NEAR(out[1].item<double>(), 20, kTol);
}

TEST(RobustAggregation, TrimmedMeanDropsKFromEachEnd) {
  RobustAggregator by_f(rule("trimmed_mean", 1), vec({-1}));
  EXPECT_NEAR(aggregate_1d(by_f, -1, {4, 1, 1e6, 3, 2}), -1 + 3, kTol);  // drop 1 and 1e6: (2+3+4)/3
  EXPECT_NEAR(aggregate_1d(by_f, -1, {1, 2, 3, 4, 5, 1e6}), -1 + 3.5, kTol);  // even n: (2+3+4+5)/4
  EXPECT_EQ(by_f.last_decision()["trimmed"], 1);
  // trimmed_share: client 15 (1e6) and client 10 (1) were cut on the one coordinate.
  const auto share = by_f.last_decision()["trimmed_share"].get<std::vector<double>>();
  EXPECT_EQ(share, (std::vector<double>{1, 0, 0, 0, 0, 1}));
  RobustOptions o = rule("trimmed_mean", 0);
  o.trim_fraction = 0.25;  // n = 6: k = floor(1.5) = 1; n = 8: k = 2
  RobustAggregator by_share(o, vec({0}));
  EXPECT_NEAR(aggregate_1d(by_share, 0, {1, 2, 3, 4, 5, 1e6}), 3.5, kTol);
  EXPECT_NEAR(aggregate_1d(by_share, 0, {-1e6, 1, 2, 3, 4, 6, 1e6, 1e6}), 3.75, kTol);  // drop -1e6, 1, 1e6, 1e6: (2+3+4+6)/4
}

TEST(RobustAggregation, KrumScoresByHand) {
  // n = 5, f = 1: each score sums the n - f - 2 = 2 smallest squared distances to the others.
  //   0: {1, 9, 25, 10000} -> 1 + 9 = 10      1: {1, 4, 16, 9801} -> 5      3: {9, 4, 4, 9409} -> 8
  //   5: {25, 16, 4, 9025} -> 20              100: {10000, 9801, 9409, 9025} -> 9025 + 9409 = 18434
  RobustAggregator krum(rule("krum"), vec({2}));
  EXPECT_NEAR(aggregate_1d(krum, 2, {0, 1, 3, 5, 100}), 2 + 1, kTol);
  const auto& d = krum.last_decision();
  EXPECT_EQ(d["selected"], nlohmann::json::array({11}));
  const auto scores = d["scores"].get<std::vector<double>>();
  const std::vector<double> want{10, 5, 8, 20, 18434};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(scores[i], want[i], 1e-12);
  // multi_krum: the plain mean of the m lowest scores (5, 8 -> values 1, 3); m = n - f = 4 drops only 100.
  RobustOptions o = rule("multi_krum");
  o.multi_krum_m = 2;
  RobustAggregator two(o, vec({2}));
  EXPECT_NEAR(aggregate_1d(two, 2, {0, 1, 3, 5, 100}), 2 + 2, kTol);
  EXPECT_EQ(two.last_decision()["selected"], nlohmann::json::array({11, 12}));
  RobustAggregator rest(rule("multi_krum"), vec({2}));
  EXPECT_NEAR(aggregate_1d(rest, 2, {0, 1, 3, 5, 100}), 2 + 2.25, kTol);  // (1 + 3 + 0 + 5) / 4
}

TEST(RobustAggregation, KrumPicksTheCentreOfTheHonestClusterPastFarOutliers) {
  // 8 honest deltas around (1, 1), client 5 exactly at the centre; clients 8 and 9 far away; f = 2.
  const std::vector<std::pair<float, float>> points{{1.1f, 1}, {0.9f, 1}, {1, 1.1f}, {1, 0.9f}, {1.1f, 1.1f},
                                                    {1, 1},    {0.9f, 0.9f}, {1.1f, 0.9f}, {1000, -1000}, {-900, 1000}};
  RobustAggregator krum(rule("krum", 2), vec({0, 0}));
  for (size_t i = 0; i < points.size(); ++i) krum.add(vec({points[i].first, points[i].second}), UpdateInfo{static_cast<int64_t>(i), 1});
  const auto out = krum.finalize().at("w");
  EXPECT_EQ(krum.last_decision()["selected"], nlohmann::json::array({5}));
  EXPECT_NEAR(out[0].item<double>(), 1, kTol);
  EXPECT_NEAR(out[1].item<double>(), 1, kTol);
}

TEST(RobustAggregation, BulyanByHand) {
  // n = 7, f = 1: θ = 5 chosen by repeated Krum (neighbours max(1, |R| - 3)), β = 3.
  //   R = {0,1,3,4,8,50,100}, 4 nbrs: 0:1+9+16+64=90  1:1+4+9+49=63  3:9+4+1+25=39  4:16+9+1+16=42 ... -> 3
  //   R = {0,1,4,8,50,100},   3 nbrs: 0:1+16+64=81  1:1+9+49=59  4:16+9+16=41  8:64+49+16=129 ...   -> 4
  //   R = {0,1,8,50,100},     2 nbrs: 0:1+64=65  1:1+49=50  8:64+49=113 ...                          -> 1
  //   R = {0,8,50,100},       1 nbr:  0:64  8:64  50:1764  100:2500 (tie: first arrival)             -> 0
  //   R = {8,50,100},         1 nbr:  8:1764  50:1764  100:2500                                       -> 8
  // Selected {0,1,3,4,8}: median 3, distances {3,2,0,1,5}, the β = 3 closest are 3, 4, 1: mean 8/3.
  // (Either tie broken the other way gives the same three values.)
  RobustAggregator bulyan(rule("bulyan"), vec({1}));
  EXPECT_NEAR(aggregate_1d(bulyan, 1, {0, 1, 3, 4, 8, 50, 100}), 1 + 8.0 / 3, kTol);
  EXPECT_EQ(bulyan.last_decision()["selected"], nlohmann::json::array({12, 13, 11, 10, 14}));
}

TEST(RobustAggregation, NormBoundClipsLargeDeltasOnly) {
  RobustOptions o = rule("norm_bound");
  o.norm_bound = 1;
  RobustAggregator agg(o, vec({1, 1}));
  agg.add(vec({1 + 6, 1 + 8}), UpdateInfo{7, 1});  // norm 10 -> (0.6, 0.8)
  auto out = agg.finalize().at("w");
  EXPECT_NEAR(out[0].item<double>(), 1.6, kTol);
  EXPECT_NEAR(out[1].item<double>(), 1.8, kTol);
  EXPECT_EQ(agg.last_decision()["clipped"], nlohmann::json::array({7}));
  agg.add(vec({1 + 0.3f, 1 + 0.4f}), UpdateInfo{8, 3});  // norm 0.5: untouched
  out = agg.finalize().at("w");
  EXPECT_NEAR(out[0].item<double>(), 1.3, kTol);
  EXPECT_NEAR(out[1].item<double>(), 1.4, kTol);
  EXPECT_EQ(agg.last_decision()["clipped"], nlohmann::json::array());
  // Both, weighted by samples 1 : 3: ((0.6, 0.8) + 3 (0.3, 0.4)) / 4 = (0.375, 0.5).
  agg.add(vec({7, 9}), UpdateInfo{7, 1});
  agg.add(vec({1.3f, 1.4f}), UpdateInfo{8, 3});
  out = agg.finalize().at("w");
  EXPECT_NEAR(out[0].item<double>(), 1.375, kTol);
  EXPECT_NEAR(out[1].item<double>(), 1.5, kTol);
  const auto norms = agg.last_decision()["norms"].get<std::vector<double>>();
  EXPECT_NEAR(norms[0], 10, 1e-6);
  EXPECT_NEAR(norms[1], 0.5, 1e-6);
}

TEST(RobustAggregation, TrustFallsForTheClientThatPullsAgainstTheOthers) {
  // 9 clients send δ = (1, 2, 3), client 9 sends -(1, 2, 3). The median is (1, 2, 3): quality 1 for the
  // honest, cos = -1 -> 0 for client 9. Trust before round r: t_9 = 0.5·0.9^(r-1), t_h = 1 - 0.5·0.9^(r-1);
  // weights 0.5·q + 0.5·t.
  const TensorMap global{{"a", torch::zeros({2})}, {"b", torch::zeros({1})}};
  RobustAggregator agg(rule("trust"), global);
  double last_bad = 0.5, last_good = 0.5, last_share = 1;
  TensorMap out;
  for (int r = 1; r <= 30; ++r) {
    for (int64_t c = 0; c < 10; ++c) {
      const float s = c == 9 ? -1.0f : 1.0f;
      agg.add({{"a", torch::tensor({s * 1, s * 2})}, {"b", torch::tensor({s * 3})}}, UpdateInfo{c, 100});
    }
    out = agg.finalize();
    const double bad = agg.trust().at(9), good = agg.trust().at(0);
    const double share = agg.last_decision()["weights"][9].get<double>();
    EXPECT_LT(bad, last_bad);
    EXPECT_GT(good, last_good);
    EXPECT_LT(share, last_share);
    const double before = 0.5 * std::pow(0.9, r - 1);
    EXPECT_NEAR(share, 0.5 * before / (0.5 * before + 9 * (0.5 + 0.5 * (1 - before))), 1e-12) << "round " << r;
    last_bad = bad, last_good = good, last_share = share;
  }
  EXPECT_NEAR(last_bad, 0.5 * std::pow(0.9, 30), 1e-12);
  EXPECT_NEAR(last_good, 1 - 0.5 * std::pow(0.9, 30), 1e-12);
  EXPECT_LT(last_share, 0.002);
  // The result is (1 - 2·share)·(1, 2, 3): within 0.5% of the honest delta.
  EXPECT_NEAR(out.at("b")[0].item<double>(), 3 * (1 - 2 * last_share), kTol);
  EXPECT_GT(out.at("a")[1].item<double>(), 2 * 0.995);

  // The state survives a checkpoint: a fresh aggregator with load_trust weighs the same.
  RobustAggregator resumed(rule("trust"), global);
  resumed.load_trust(agg.trust());
  EXPECT_EQ(resumed.trust(), agg.trust());
  expect_error<DataError>([&] { resumed.load_trust({{4, 1.5}}); }, {"client 4", "1.5"});
}

TEST(RobustAggregation, TrustFallsBackToTheMedianWhenNoWeightIsLeft) {
  RobustOptions o = rule("trust");
  o.trust_weight = 0;  // weights are quality only; the median of these four is 0, so every quality is 0
  RobustAggregator agg(o, vec({2, 2}));
  int64_t c = 0;
  for (const auto& d : std::vector<std::pair<float, float>>{{1, 0}, {-1, 0}, {0, 1}, {0, -1}}) agg.add(vec({2 + d.first, 2 + d.second}), {c++});
  const auto out = agg.finalize().at("w");
  EXPECT_TRUE(agg.last_decision()["fallback"].get<bool>());
  EXPECT_NEAR(out[0].item<double>(), 2, kTol);
  EXPECT_NEAR(out[1].item<double>(), 2, kTol);
}

TEST(RobustAggregation, AMinorityOfScaledSignFlippersCannotSteerTheRobustRules) {
  // 8 honest deltas μ + N(0, 0.05²) per coordinate (μ in [0.5, 1.5]), 2 attackers send -100 × the honest
  // mean. Bulyan needs n >= 4f + 3 = 11 for f = 2, so it gets one more honest client.
  torch::manual_seed(0);
  const TensorMap global{{"a", torch::randn({5, 5})}, {"b", torch::randn({25})}};
  TensorMap mu;
  for (const auto& [k, g] : global) mu[k] = torch::rand(g.sizes()) + 0.5;
  auto honest_updates = [&](int count) {
    std::vector<TensorMap> out;
    for (int i = 0; i < count; ++i) {
      TensorMap u;
      for (const auto& [k, g] : global) u[k] = g + mu.at(k) + 0.05 * torch::randn(g.sizes());
      out.push_back(u);
    }
    return out;
  };
  for (const int honest_count : {8, 9}) {
    const auto honest = honest_updates(honest_count);
    const TensorMap honest_mean = weighted_average(honest, std::vector<double>(honest.size(), 1.0));
    TensorMap attack;
    for (const auto& [k, g] : global) attack[k] = g - 100 * (honest_mean.at(k) - g);
    std::vector<TensorMap> all = honest;
    all.push_back(attack);
    all.push_back(attack);
    const std::vector<std::string> rules = honest_count == 8 ? std::vector<std::string>{"median", "trimmed_mean", "krum", "multi_krum"}
                                                              : std::vector<std::string>{"bulyan"};
    for (const auto& name : rules) {
      SCOPED_TRACE(name);
      RobustAggregator agg(rule(name, 2), global);
      WeightedMean mean;
      for (size_t i = 0; i < all.size(); ++i) {
        agg.add(all[i], UpdateInfo{static_cast<int64_t>(i), 100});
        mean.add(all[i], UpdateInfo{static_cast<int64_t>(i), 100});
      }
      // Compared on the deltas: global + δ, relative to the honest mean delta.
      TensorMap robust = agg.finalize(), plain = mean.finalize(), want;
      for (const auto& [k, g] : global) {
        robust[k] -= g, plain[k] -= g;
        want[k] = honest_mean.at(k) - g;
      }
      EXPECT_LT(relative_error(robust, want), 0.1);
      EXPECT_GT(relative_error(plain, want), 10);  // (8μ - 200μ) / 10 = -19.2μ
      // Krum never picks an attacker; Bulyan's last recursive Krum calls run on 5 updates with 1 neighbour,
      // where the two identical attackers may win one seat, which its per-coordinate step then trims.
      if (name == "krum" || name == "multi_krum") {
        for (const auto& id : agg.last_decision()["selected"]) EXPECT_LT(id.get<int64_t>(), honest_count);
      }
    }
  }
}

TEST(RobustAggregation, MultiTensorMapsFlattenInKeyOrder) {
  // Two keys behave exactly like one key holding their concatenation (a's 4 values, then b's 3).
  torch::manual_seed(1);
  const TensorMap global{{"a", torch::randn({2, 2})}, {"b", torch::randn({3})}};
  auto flat = [](const TensorMap& m) { return TensorMap{{"w", torch::cat({m.at("a").reshape(-1), m.at("b")})}}; };
  std::vector<TensorMap> updates;
  for (int i = 0; i < 7; ++i) updates.push_back({{"a", global.at("a") + torch::randn({2, 2})}, {"b", global.at("b") + torch::randn({3})}});
  for (const std::string name : {"median", "trimmed_mean", "krum", "multi_krum", "bulyan", "norm_bound", "trust"}) {
    SCOPED_TRACE(name);
    RobustAggregator split(rule(name), global), joined(rule(name), flat(global));
    for (size_t i = 0; i < updates.size(); ++i) {
      split.add(updates[i], UpdateInfo{static_cast<int64_t>(i), 1.0 + static_cast<double>(i)});
      joined.add(flat(updates[i]), UpdateInfo{static_cast<int64_t>(i), 1.0 + static_cast<double>(i)});
    }
    const auto out = split.finalize();
    const auto w = joined.finalize().at("w");
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out.at("a").sizes(), global.at("a").sizes());
    EXPECT_EQ(out.at("a").scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::allclose(out.at("a"), w.narrow(0, 0, 4).reshape({2, 2}), 0, 1e-6));
    EXPECT_TRUE(torch::allclose(out.at("b"), w.narrow(0, 4, 3), 0, 1e-6));
    EXPECT_EQ(split.last_decision(), joined.last_decision());
  }
}

TEST(RobustAggregation, TooFewUpdatesNameTheCountsAndKeepTheRound) {
  RobustAggregator krum(rule("krum", 1), vec({0}));
  expect_error<DataError>([&] { krum.finalize(); }, {"krum", "no updates"});
  for (int i = 0; i < 4; ++i) krum.add(vec({static_cast<float>(i)}), {i});
  expect_error<DataError>([&] { krum.finalize(); }, {"krum", "robust.byzantine = 1", "more than 4", "got 4"});
  EXPECT_EQ(krum.count(), 4);  // kept: one more update makes the round
  krum.add(vec({4}), {4});
  EXPECT_NO_THROW(krum.finalize());
  RobustAggregator bulyan(rule("bulyan", 1), vec({0}));
  for (int i = 0; i < 6; ++i) bulyan.add(vec({static_cast<float>(i)}), {i});
  expect_error<DataError>([&] { bulyan.finalize(); }, {"bulyan", "at least 7", "got 6"});
  RobustAggregator trimmed(rule("trimmed_mean", 2), vec({0}));
  for (int i = 0; i < 4; ++i) trimmed.add(vec({static_cast<float>(i)}), {i});
  expect_error<DataError>([&] { trimmed.finalize(); }, {"trimmed_mean", "2 from each end", "more than 4", "got 4"});
  RobustOptions o = rule("multi_krum", 1);
  o.multi_krum_m = 9;
  RobustAggregator multi(o, vec({0}));
  for (int i = 0; i < 5; ++i) multi.add(vec({static_cast<float>(i)}), {i});
  expect_error<DataError>([&] { multi.finalize(); }, {"robust.multi_krum_m = 9", "got 5"});
  expect_error<DataError>([&] { multi.set_global(vec({1})); }, {"5 updates", "pending"});
}

TEST(RobustAggregation, MismatchedUpdatesNameClientAndKey) {
  RobustAggregator agg(rule("median"), {{"a", torch::zeros({2})}, {"b", torch::zeros({3})}});
  expect_error<DataError>([&] { agg.add({{"a", torch::zeros({2})}, {"b", torch::zeros({3})}, {"c", torch::zeros({1})}}, {4}); },
                          {"client 4", "c", "global model lacks"});
  expect_error<DataError>([&] { agg.add({{"a", torch::zeros({2})}}, {5}); }, {"client 5", "lacks tensor b"});
  expect_error<DataError>([&] { agg.add({{"a", torch::zeros({2})}, {"b", torch::zeros({4})}}, {6}); }, {"client 6", "b", "[4]", "[3]"});
  expect_error<DataError>([&] { agg.add({{"a", torch::zeros({2})}, {"b", torch::zeros({3})}}, UpdateInfo{7, 0}); }, {"client 7", "positive"});
  expect_error<DataError>([&] { agg.add({{"a", torch::full({2}, NAN)}, {"b", torch::zeros({3})}}, {8}); }, {"client 8", "finite"});
  EXPECT_EQ(agg.count(), 0);
  expect_error<DataError>([] { RobustAggregator empty(rule("median"), TensorMap{}); }, {"no tensors"});
}

TEST(RobustAggregation, BadOptionsNameTheRecipeKey) {
  auto bad = [](std::function<void(RobustOptions&)> edit, const std::string& key) {
    RobustOptions o;
    edit(o);
    expect_one_line_error<ConfigError>([&] { check_robust_options(o); }, {key});
    expect_error<ConfigError>([&] { RobustAggregator agg(o, vec({0})); }, {key});
  };
  bad([](RobustOptions& o) { o.rule = "mean"; }, "robust.rule 'mean' is not one of median");
  bad([](RobustOptions& o) { o.byzantine = -1; }, "robust.byzantine");
  bad([](RobustOptions& o) { o.trim_fraction = 0.5; }, "robust.trim_fraction");
  bad([](RobustOptions& o) { o.trim_fraction = -0.1; }, "robust.trim_fraction");
  bad([](RobustOptions& o) { o.multi_krum_m = -1; }, "robust.multi_krum_m");
  bad([](RobustOptions& o) { o.norm_bound = 0; }, "robust.norm_bound");
  bad([](RobustOptions& o) { o.trust_quality = -1; }, "robust.trust_quality");
  bad([](RobustOptions& o) { o.trust_quality = o.trust_weight = 0; }, "robust.trust_weight");
  bad([](RobustOptions& o) { o.trust_decay = 1.5; }, "robust.trust_decay");
  EXPECT_NO_THROW(check_robust_options(RobustOptions{}));
}
