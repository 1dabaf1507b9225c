// labels: unit
// Server-side aggregation: the weighted average, and each server optimizer against its update rule
// written out per element in double precision over three rounds (tolerance 1e-6, fp32 state).
#include <gtest/gtest.h>

#include <cmath>

#include "core/util/error.h"
#include "federated/aggregator.h"
#include "federated/server_optimizer.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

TensorMap model_of(std::vector<float> values) {
  return {{"w", torch::tensor(values)}};
}

// The rule of server_optimizer.h for one scalar, rounds of deltas d, from x0.
double reference(const ServerOptimizerOptions& o, double x, const std::vector<double>& deltas) {
  double m = 0, v = o.tau * o.tau;
  for (const double d : deltas) {
    if (o.rule == "fedavg") {
      x += o.lr * d;
    } else if (o.rule == "fedavgm") {
      m = o.beta1 * m + d;
      x += o.lr * m;
    } else {
      m = o.beta1 * m + (1 - o.beta1) * d;
      if (o.rule == "fedadagrad") v += d * d;
      else if (o.rule == "fedyogi") v -= (1 - o.beta2) * d * d * ((v - d * d) > 0 ? 1 : (v - d * d) < 0 ? -1 : 0);
      else v = o.beta2 * v + (1 - o.beta2) * d * d;
      x += o.lr * m / (std::sqrt(v) + o.tau);
    }
  }
  return x;
}

}  // namespace

TEST(WeightedAverage, WeightsBySamples) {
  const auto avg = weighted_average({model_of({1, 2}), model_of({4, 8})}, {1, 2});
  EXPECT_NEAR(avg.at("w")[0].item<double>(), 3.0, 1e-7);  // (1 + 2*4) / 3
  EXPECT_NEAR(avg.at("w")[1].item<double>(), 6.0, 1e-7);  // (2 + 2*8) / 3
}

TEST(WeightedAverage, MismatchesNameTheClient) {
  expect_error<DataError>([] { weighted_average({model_of({1}), {{"u", torch::ones({1})}}}, {1, 1}); },
                          {"client 1", "w"});
  expect_error<DataError>([] { weighted_average({model_of({1}), model_of({1, 2})}, {1, 1}); }, {"client 1", "shape"});
  expect_error<DataError>([] { weighted_average({model_of({1})}, {0}); }, {"client 0", "positive"});
}

TEST(ServerOptimizer, EveryRuleFollowsItsFormulaOverThreeRounds) {
  const std::vector<std::vector<double>> deltas{{0.5, -0.2}, {0.1, -0.4}, {-0.3, 0.05}};
  for (const std::string rule : {"fedavg", "fedavgm", "fedadagrad", "fedyogi", "fedadam"}) {
    SCOPED_TRACE(rule);
    ServerOptimizerOptions o;
    o.rule = rule;
    o.lr = rule == "fedavg" || rule == "fedavgm" ? 0.7 : 0.05;
    o.tau = 0.01;
    ServerOptimizer opt(o);
    TensorMap global = model_of({1.0f, -2.0f});
    for (const auto& d : deltas) opt.step(global, model_of({static_cast<float>(d[0]), static_cast<float>(d[1])}));
    EXPECT_EQ(opt.rounds(), 3);
    for (int j = 0; j < 2; ++j) {
      std::vector<double> column;
      for (const auto& d : deltas) column.push_back(static_cast<float>(d[j]));
      EXPECT_NEAR(global.at("w")[j].item<double>(), reference(o, j == 0 ? 1.0 : -2.0, column), 1e-6);
    }
  }
}

TEST(ServerOptimizer, FedAvgWithUnitRateIsTheWeightedMeanOfTheClientModels) {
  const TensorMap global = model_of({1, 1});
  const std::vector<TensorMap> clients{model_of({2, 0}), model_of({5, 3})};
  std::vector<TensorMap> deltas;
  for (const auto& c : clients) deltas.push_back({{"w", c.at("w") - global.at("w")}});
  TensorMap x = {{"w", global.at("w").clone()}};
  ServerOptimizer(ServerOptimizerOptions{}).step(x, weighted_average(deltas, {3, 1}));
  EXPECT_TRUE(torch::allclose(x.at("w"), weighted_average(clients, {3, 1}).at("w")));
}

TEST(ServerOptimizer, StateRoundTripContinuesExactly) {
  ServerOptimizerOptions o;
  o.rule = "fedadam";
  ServerOptimizer a(o), b(o);
  TensorMap xa = model_of({0.3f, 0.7f}), xb;
  a.step(xa, model_of({0.2f, -0.1f}));
  xb = {{"w", xa.at("w").clone()}};
  b.load_state(a.state(), a.rounds());
  a.step(xa, model_of({-0.05f, 0.4f}));
  b.step(xb, model_of({-0.05f, 0.4f}));
  EXPECT_TRUE(torch::equal(xa.at("w"), xb.at("w")));
  EXPECT_EQ(b.rounds(), 2);
}

TEST(ServerOptimizer, BadOptionsNameTheKey) {
  ServerOptimizerOptions o;
  o.rule = "fedsgd";
  expect_error<ConfigError>([&] { ServerOptimizer s(o); }, {"federated.server_optimizer", "fedsgd"});
  o.rule = "fedadam";
  o.tau = 0;
  expect_error<ConfigError>([&] { ServerOptimizer s(o); }, {"federated.server_tau"});
}
