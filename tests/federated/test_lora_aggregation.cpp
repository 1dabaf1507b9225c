// labels: unit
// Heterogeneous-rank LoRA aggregation, one test per defining property: truncation, HetLoRA's padded
// and norm-weighted mean (weights checked against values worked out by hand), FLoRA's exact
// stacking and FFA-LoRA's shared-A averaging against Σ w_i s_i B_i A_i computed in fp64 (relative
// Frobenius error 1e-5), and the errors. Elementwise tolerances are 1e-6 unless stated.
#include <gtest/gtest.h>

#include <cmath>

#include "core/util/error.h"
#include "federated/lora_aggregation.h"
#include "federated/aggregator.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

const std::string kQ = "layers.0.self_attn.q_proj", kV = "layers.0.self_attn.v_proj";
constexpr int64_t kIn = 12, kOut = 10, kR = 8;

// A random rank-r LoRA on q_proj [kOut, kIn] and v_proj [kOut / 2, kIn], plus a DoRA magnitude.
LoraUpdate random_update(int64_t r, double weight, double scaling, uint64_t seed) {
  torch::manual_seed(seed);
  LoraUpdate u;
  u.tensors[kQ + ".lora_A.weight"] = torch::randn({r, kIn});
  u.tensors[kQ + ".lora_B.weight"] = torch::randn({kOut, r});
  u.tensors[kV + ".lora_A.weight"] = torch::randn({r, kIn});
  u.tensors[kV + ".lora_B.weight"] = torch::randn({kOut / 2, r});
  u.tensors[kQ + ".lora_magnitude"] = torch::rand({kOut});
  u.weight = weight;
  u.rank = r;
  u.scaling = scaling;
  return u;
}

// A one-module LoRA "m" from explicit A and B.
LoraUpdate tiny(torch::Tensor a, torch::Tensor b, double weight, double scaling) {
  LoraUpdate u;
  u.rank = a.size(0);
  u.tensors = {{"m.lora_A.weight", a}, {"m.lora_B.weight", b}};
  u.weight = weight;
  u.scaling = scaling;
  return u;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

double relative_error(const torch::Tensor& got, const torch::Tensor& want) {
  const torch::Tensor w = want.to(torch::kFloat64);
  return ((got.to(torch::kFloat64) - w).norm() / w.norm()).item<double>();
}

}  // namespace

TEST(LoraModules, ListsModulesWithTheirRanks) {
  const auto modules = lora_modules(random_update(3, 1, 1, 1).tensors);
  EXPECT_EQ(modules, (std::map<std::string, int64_t>{{kQ, 3}, {kV, 3}}));
  expect_error<DataError>(
      [] { lora_modules({{"m.lora_A.weight", torch::zeros({2, 4})}, {"m.lora_B.weight", torch::zeros({4, 3})}}); },
      {"module m", "2", "3"});
}

TEST(TruncateLora, ThenZeroPaddingGivesBackTheLeadingRowsAndColumns) {
  const TensorMap global = random_update(kR, 1, 1, 2).tensors;
  for (const int64_t r : {int64_t{1}, int64_t{3}, kR}) {
    SCOPED_TRACE(r);
    TensorMap part = truncate_lora(global, r);
    EXPECT_EQ(lora_modules(part), (std::map<std::string, int64_t>{{kQ, r}, {kV, r}}));
    EXPECT_TRUE(torch::equal(part.at(kQ + ".lora_magnitude"), global.at(kQ + ".lora_magnitude")));
    // One client holding the truncation, padded back by HetLoRA with weight 1: the zero padding.
    LoraUpdate u;
    u.tensors = part;
    u.rank = r;
    const TensorMap padded = aggregate_hetlora({u}, kR, false);
    for (const auto& module : {kQ, kV}) {
      const torch::Tensor a = padded.at(module + ".lora_A.weight"), b = padded.at(module + ".lora_B.weight");
      ASSERT_EQ(a.sizes(), global.at(module + ".lora_A.weight").sizes());
      ASSERT_EQ(b.sizes(), global.at(module + ".lora_B.weight").sizes());
      EXPECT_TRUE(torch::equal(a.narrow(0, 0, r), global.at(module + ".lora_A.weight").narrow(0, 0, r)));
      EXPECT_TRUE(torch::equal(b.narrow(1, 0, r), global.at(module + ".lora_B.weight").narrow(1, 0, r)));
      EXPECT_EQ(a.narrow(0, r, kR - r).abs().sum().item<double>(), 0.0);
      EXPECT_EQ(b.narrow(1, r, kR - r).abs().sum().item<double>(), 0.0);
    }
    // Copies: writing into the client's part leaves the global LoRA alone.
    const torch::Tensor before = global.at(kQ + ".lora_A.weight").clone();
    part.at(kQ + ".lora_A.weight").fill_(7);
    EXPECT_TRUE(torch::equal(global.at(kQ + ".lora_A.weight"), before));
  }
  expect_error<DataError>([&] { truncate_lora(global, kR + 1); }, {kQ + ".lora_A.weight"});
}

TEST(HetLora, EqualRanksWithoutNormWeightingIsTheWeightedAverage) {
  const std::vector<LoraUpdate> updates{random_update(4, 3, 2.0, 3), random_update(4, 1, 4.0, 4),
                                        random_update(4, 2, 1.0, 5)};
  std::vector<TensorMap> maps;
  std::vector<double> weights;
  for (const auto& u : updates) {
    maps.push_back(u.tensors);
    weights.push_back(u.weight);
  }
  const TensorMap want = weighted_average(maps, weights);
  const TensorMap got = aggregate_hetlora(updates, 4, false);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [key, t] : want) {
    SCOPED_TRACE(key);
    EXPECT_EQ(got.at(key).scalar_type(), torch::kFloat32);
    EXPECT_LE(max_diff(got.at(key), t), 1e-6);
  }
}

TEST(HetLora, RowsBeyondAClientsRankComeOnlyFromLargerRanks) {
  std::vector<LoraUpdate> updates{random_update(8, 2, 1, 6), random_update(4, 1, 1, 7), random_update(2, 1, 1, 8)};
  for (auto& [key, t] : updates[2].tensors) t.mul_(1e6);
  const TensorMap first = aggregate_hetlora(updates, kR, false);
  for (auto& [key, t] : updates[2].tensors) t.mul_(-3);
  const TensorMap second = aggregate_hetlora(updates, kR, false);
  for (const auto& module : {kQ, kV}) {
    SCOPED_TRACE(module);
    const std::string a = module + ".lora_A.weight", b = module + ".lora_B.weight";
    EXPECT_TRUE(torch::equal(first.at(a).narrow(0, 2, kR - 2), second.at(a).narrow(0, 2, kR - 2)));
    EXPECT_TRUE(torch::equal(first.at(b).narrow(1, 2, kR - 2), second.at(b).narrow(1, 2, kR - 2)));
    EXPECT_FALSE(torch::equal(first.at(a).narrow(0, 0, 2), second.at(a).narrow(0, 0, 2)));
    // Rows 4..7 only the rank-8 client has: its share n_0 / Σ n = 2 / 4 of them.
    EXPECT_LE(max_diff(second.at(a).narrow(0, 4, 4), updates[0].tensors.at(a).narrow(0, 4, 4) * 0.5), 1e-6);
    EXPECT_LE(max_diff(second.at(b).narrow(1, 4, 4), updates[0].tensors.at(b).narrow(1, 4, 4) * 0.5), 1e-6);
  }
}

TEST(HetLora, NormWeightingByHand) {
  // Client 0: A = [3, 4], B = [1], s = 1, n = 1  -> n ‖s B A‖ = 1 · 5 = 5.
  // Client 1: A = [1, 0], B = [2], s = 0.5, n = 5 -> n ‖s B A‖ = 5 · 1 = 5.   Weights 1/2, 1/2.
  std::vector<LoraUpdate> updates{tiny(torch::tensor({{3.0f, 4.0f}}), torch::tensor({{1.0f}}), 1, 1),
                                  tiny(torch::tensor({{1.0f, 0.0f}}), torch::tensor({{2.0f}}), 5, 0.5)};
  TensorMap got = aggregate_hetlora(updates, 1);
  EXPECT_LE(max_diff(got.at("m.lora_A.weight"), torch::tensor({{2.0f, 2.0f}})), 1e-6);
  EXPECT_LE(max_diff(got.at("m.lora_B.weight"), torch::tensor({{1.5f}})), 1e-6);
  // B_0 times 3 triples client 0's term: 15 against 5, weights 3/4, 1/4.
  updates[0].tensors.at("m.lora_B.weight").mul_(3);
  got = aggregate_hetlora(updates, 1);
  EXPECT_LE(max_diff(got.at("m.lora_A.weight"), torch::tensor({{2.5f, 3.0f}})), 1e-6);  // 3/4 [3, 4] + 1/4 [1, 0]
  EXPECT_LE(max_diff(got.at("m.lora_B.weight"), torch::tensor({{2.75f}})), 1e-6);       // 3/4 · 3 + 1/4 · 2
  // Every product zero: back to n_i, weights 1/6, 5/6.
  for (auto& u : updates) u.tensors.at("m.lora_B.weight").zero_();
  got = aggregate_hetlora(updates, 1);
  EXPECT_LE(max_diff(got.at("m.lora_A.weight"), torch::tensor({{8.0f / 6, 4.0f / 6}})), 1e-6);
}

TEST(HetLora, NormWeightsMatchTheDenseProductsForMixedRanks) {
  // The implementation takes ‖BA‖ from r×r Gram matrices; here it is the dense product's norm.
  const std::vector<LoraUpdate> updates{random_update(4, 2, 4.0, 9), random_update(2, 3, 8.0, 10)};
  const TensorMap got = aggregate_hetlora(updates, 4);
  for (const auto& module : {kQ, kV}) {
    SCOPED_TRACE(module);
    const std::string a = module + ".lora_A.weight", b = module + ".lora_B.weight";
    std::vector<double> w;
    for (const auto& u : updates) {
      const auto prod = u.tensors.at(b).to(torch::kFloat64).mm(u.tensors.at(a).to(torch::kFloat64)) * u.scaling;
      w.push_back(u.weight * prod.norm().item<double>());
    }
    const double total = w[0] + w[1];
    torch::Tensor want_a = updates[0].tensors.at(a).to(torch::kFloat64) * (w[0] / total);
    want_a.narrow(0, 0, 2).add_(updates[1].tensors.at(a).to(torch::kFloat64), w[1] / total);
    torch::Tensor want_b = updates[0].tensors.at(b).to(torch::kFloat64) * (w[0] / total);
    want_b.narrow(1, 0, 2).add_(updates[1].tensors.at(b).to(torch::kFloat64), w[1] / total);
    EXPECT_LE(max_diff(got.at(a), want_a), 1e-6);
    EXPECT_LE(max_diff(got.at(b), want_b), 1e-6);
  }
  // The magnitude is averaged by n_i only: (2 m_0 + 3 m_1) / 5.
  const std::string m = kQ + ".lora_magnitude";
  EXPECT_LE(max_diff(got.at(m), (updates[0].tensors.at(m) * 2 + updates[1].tensors.at(m) * 3) / 5), 1e-6);
}

TEST(StackLora, ProductIsTheWeightedSumOfClientProducts) {
  // Ranks 8, 4, 2 with LoRA scaling 16 / r, and one rsLoRA-style 16 / sqrt(r).
  const std::vector<LoraUpdate> updates{random_update(8, 3, 2.0, 11), random_update(4, 1, 4.0, 12),
                                        random_update(2, 2, 8.0, 13), random_update(2, 4, 16 / std::sqrt(2.0), 14)};
  const double total = 3 + 1 + 2 + 4;
  const TensorMap stacked = stack_lora(updates);
  EXPECT_EQ(lora_modules(stacked), (std::map<std::string, int64_t>{{kQ, 16}, {kV, 16}}));
  EXPECT_EQ(stacked.at(kQ + ".lora_A.weight").sizes(), (std::vector<int64_t>{16, kIn}));
  EXPECT_EQ(stacked.at(kQ + ".lora_B.weight").sizes(), (std::vector<int64_t>{kOut, 16}));
  EXPECT_EQ(stacked.at(kV + ".lora_B.weight").sizes(), (std::vector<int64_t>{kOut / 2, 16}));
  const TensorMap delta = stacked_delta(stacked);
  ASSERT_EQ(delta.size(), 2u);
  for (const auto& module : {kQ, kV}) {
    SCOPED_TRACE(module);
    torch::Tensor want;
    for (const auto& u : updates) {
      const TensorMap p = lora_products(u.tensors, u.scaling);
      const torch::Tensor term = p.at(module).to(torch::kFloat64) * (u.weight / total);
      want = want.defined() ? want + term : term;
    }
    EXPECT_EQ(delta.at(module).sizes(), want.sizes());
    EXPECT_LE(relative_error(delta.at(module), want), 1e-5);
  }
  // lora_products itself against the dense product of one client.
  const auto& u = updates[1].tensors;
  EXPECT_LE(relative_error(lora_products(u, 4.0).at(kQ),
                           u.at(kQ + ".lora_B.weight").mm(u.at(kQ + ".lora_A.weight")) * 4.0),
            1e-6);
  const std::string m = kQ + ".lora_magnitude";
  torch::Tensor want_m = torch::zeros({kOut});
  for (const auto& c : updates) want_m += c.tensors.at(m) * (c.weight / total);
  EXPECT_LE(max_diff(stacked.at(m), want_m), 1e-6);
}

TEST(FfaLora, AveragedBTimesTheSharedAIsTheMeanProduct) {
  torch::manual_seed(15);
  const torch::Tensor shared_a = torch::randn({kR, kIn});
  std::vector<LoraUpdate> updates;
  const std::vector<int64_t> ranks{8, 4, 2};
  const std::vector<double> weights{5, 2, 3};
  for (size_t i = 0; i < ranks.size(); ++i) {
    LoraUpdate u;
    u.tensors[kQ + ".lora_B.weight"] = torch::randn({kOut, ranks[i]});
    u.tensors[kQ + ".bias"] = torch::randn({kOut});
    u.weight = weights[i];
    u.rank = ranks[i];
    updates.push_back(u);
  }
  const TensorMap got = aggregate_ffa(updates, kR);
  ASSERT_EQ(got.at(kQ + ".lora_B.weight").sizes(), (std::vector<int64_t>{kOut, kR}));
  torch::Tensor want = torch::zeros({kOut, kIn}, torch::kFloat64);
  for (const auto& u : updates)
    want += u.tensors.at(kQ + ".lora_B.weight").to(torch::kFloat64).mm(shared_a.narrow(0, 0, u.rank).to(torch::kFloat64)) *
            (u.weight / 10);
  EXPECT_LE(relative_error(got.at(kQ + ".lora_B.weight").mm(shared_a), want), 1e-5);
  EXPECT_LE(max_diff(got.at(kQ + ".bias"), (updates[0].tensors.at(kQ + ".bias") * 5 +
                                            updates[1].tensors.at(kQ + ".bias") * 2 +
                                            updates[2].tensors.at(kQ + ".bias") * 3) / 10),
            1e-6);
  updates[1].tensors[kQ + ".lora_A.weight"] = shared_a.narrow(0, 0, 4).clone();
  expect_error<DataError>([&] { aggregate_ffa(updates, kR); }, {"client 1", kQ + ".lora_A.weight", "B only"});
}

TEST(LoraAggregation, ErrorsNameTheClientAndKey) {
  const auto three = [] {
    return std::vector<LoraUpdate>{random_update(4, 1, 1, 16), random_update(4, 1, 1, 17), random_update(2, 1, 1, 18)};
  };
  // Mismatched module sets, both ways round.
  auto u = three();
  u[1].tensors.erase(kV + ".lora_A.weight");
  u[1].tensors.erase(kV + ".lora_B.weight");
  expect_error<DataError>([&] { aggregate_hetlora(u, 4); }, {"client 1", kV + ".lora_"});
  expect_error<DataError>([&] { stack_lora(u); }, {"client 1", kV + ".lora_"});
  u = three();
  u[2].tensors["extra.lora_A.weight"] = torch::zeros({2, 3});
  expect_error<DataError>([&] { stack_lora(u); }, {"client 2", "extra.lora_A.weight"});
  // A module with A but no B.
  u = three();
  for (auto& c : u) c.tensors.erase(kV + ".lora_B.weight");
  expect_error<DataError>([&] { aggregate_hetlora(u, 4); }, {"client 0", kV + ".lora_B.weight"});
  // Wrong shapes: another input width, a rank that disagrees with the tensors, a non-LoRA key.
  u = three();
  u[2].tensors[kQ + ".lora_A.weight"] = torch::zeros({2, kIn + 1});
  expect_error<DataError>([&] { aggregate_hetlora(u, 4); }, {"client 2", kQ + ".lora_A.weight", "shape"});
  u = three();
  u[1].rank = 3;
  expect_error<DataError>([&] { stack_lora(u); }, {"client 1", "rank is 3"});
  u = three();
  u[2].tensors[kQ + ".lora_magnitude"] = torch::zeros({kOut + 1});
  expect_error<DataError>([&] { stack_lora(u); }, {"client 2", kQ + ".lora_magnitude", "shape"});
  // Rank above R.
  expect_error<DataError>([&] { aggregate_hetlora(three(), 3); }, {"client 0", "rank 4", "global rank 3"});
  // Weights that are not positive.
  u = three();
  u[1].weight = 0;
  expect_error<DataError>([&] { aggregate_hetlora(u, 4); }, {"client 1", "positive"});
  expect_error<DataError>([&] { stack_lora(u); }, {"client 1", "positive"});
  u[1].weight = -2;
  expect_error<DataError>([&] { aggregate_hetlora(u, 4, false); }, {"client 1", "positive"});
  // FFA: rank above R and zero weight as well.
  std::vector<LoraUpdate> ffa(2);
  for (auto& c : ffa) {
    c.tensors[kQ + ".lora_B.weight"] = torch::zeros({kOut, 4});
    c.rank = 4;
  }
  expect_error<DataError>([&] { aggregate_ffa(ffa, 2); }, {"client 0", "global rank 2"});
  ffa[1].weight = 0;
  expect_error<DataError>([&] { aggregate_ffa(ffa, 4); }, {"client 1", "positive"});
  expect_error<DataError>([] { stack_lora({}); }, {"no client updates"});
}
