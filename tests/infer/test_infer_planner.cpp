// labels: unit
// The inference partition planner (infer/infer_planner.h): the DP against brute force on 400 random
// small problems (2-4 devices, 3-8 layers, both objectives, memory limits, link overrides, a first
// device or none) -- the same objective to 4 ULP, since both add the same terms in the same order;
// tiny cases worked out by hand (exact to 1e-12 s); the memory error naming the device to raise and
// its least memory; and the one-line errors of malformed problems and plans.
#include <gtest/gtest.h>

#include <random>

#include "core/util/error.h"
#include "infer/infer_planner.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_one_line_error;

constexpr int64_t kMiB = int64_t{1} << 20;

/// Two layers of 1 s each, devices A (speed 1) and B (speed 4), a 8 Mbit/s link with 10 ms latency,
/// 1 MB (10^6 bytes) of activations: a transfer takes 1 s + 10 ms.
InferProblem two_devices() {
  InferProblem p;
  for (int i = 0; i < 2; ++i) p.layers.push_back({1.0, 100 * kMiB, 1 * kMiB});
  p.embed_weight_bytes = 5 * kMiB;
  p.head_weight_bytes = 7 * kMiB;
  p.activation_bytes = 1000000;
  p.return_token = false;
  p.devices = {{"A", 1.0, 0}, {"B", 4.0, 0}};
  p.default_link = {8, 10};
  p.context = 10;
  p.sequences = 2;
  return p;
}

TEST(InferPlanner, HandCheckedLatency) {
  InferProblem p = two_devices();
  // A alone 2 s, B alone 0.5 s, A then B 1 + 1.01 + 0.25: B alone.
  InferPlan plan = solve(p);
  ASSERT_EQ(plan.stages.size(), 1u);
  EXPECT_EQ(plan.stages[0].device, 1);
  EXPECT_NEAR(plan.latency_seconds, 0.5, 1e-12);
  // Everything on one device: weights 200 + embed 5 + head 7 + cache 2 layers x 1 MiB x 10 x 2.
  EXPECT_EQ(plan.stages[0].memory_bytes, (200 + 5 + 7 + 40) * kMiB);

  // The prompt lives on A: A alone (2 s) beats A then B (2.26 s).
  p.first_device = 0;
  plan = solve(p);
  ASSERT_EQ(plan.stages.size(), 1u);
  EXPECT_EQ(plan.stages[0].device, 0);
  EXPECT_NEAR(plan.objective, 2.0, 1e-12);
}

TEST(InferPlanner, HandCheckedMemoryForcesASplitAndTheTokenReturns) {
  InferProblem p = two_devices();
  p.first_device = 0;
  p.return_token = true;                // 4 bytes back: 32 / 8e6 s + 10 ms
  p.devices[0].memory_bytes = 130 * kMiB;  // one layer (100 + 20 cache + 5 embed = 125), not two
  const InferPlan plan = solve(p);
  ASSERT_EQ(plan.stages.size(), 2u);
  EXPECT_EQ(plan.stages[0].device, 0);
  EXPECT_EQ(plan.stages[0].layer_end, 1);
  EXPECT_EQ(plan.stages[1].device, 1);
  EXPECT_NEAR(plan.stages[0].compute_seconds, 1.0, 1e-12);
  EXPECT_NEAR(plan.stages[1].transfer_seconds, 1.01, 1e-12);
  EXPECT_NEAR(plan.stages[1].compute_seconds, 0.25, 1e-12);
  EXPECT_NEAR(plan.return_seconds, 0.010004, 1e-12);
  EXPECT_NEAR(plan.latency_seconds, 1.0 + 1.01 + 0.25 + 0.010004, 1e-12);
  EXPECT_NEAR(plan.bottleneck_seconds, 1.01, 1e-12);
  EXPECT_EQ(plan.stages[0].memory_bytes, 125 * kMiB);
  EXPECT_EQ(plan.stages[1].memory_bytes, 127 * kMiB);
  const auto ranges = plan.ranges(p);
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[1].layer_begin, 1);
  EXPECT_EQ(ranges[1].layer_end, 2);
  EXPECT_EQ(ranges[1].device, "B");
}

TEST(InferPlanner, TiedHeadCopyCountsOnlyOnALaterLastStage) {
  InferProblem p = two_devices();
  p.first_device = 0;
  p.head_copy_bytes = 3 * kMiB;
  p.devices[0].memory_bytes = 130 * kMiB;
  InferPlan plan = solve(p);
  ASSERT_EQ(plan.stages.size(), 2u);
  EXPECT_EQ(plan.stages[1].memory_bytes, (127 + 3) * kMiB);
  EXPECT_EQ(evaluate(p, {{0, 0, 2}}).stages[0].memory_bytes, 252 * kMiB);  // one stage: no copy
}

TEST(InferPlanner, HandCheckedThroughput) {
  InferProblem p = two_devices();
  p.first_device = 0;
  p.objective = InferObjective::throughput;
  // A alone: 2 s; A then B: max(1, 1.01, 0.25) = 1.01 s.
  const InferPlan plan = solve(p);
  ASSERT_EQ(plan.stages.size(), 2u);
  EXPECT_NEAR(plan.objective, 1.01, 1e-12);
  EXPECT_NEAR(plan.tokens_per_second(p.objective), 1 / 1.01, 1e-12);
  // A fast link makes the split pay off for latency too: 1 + 0 + 0.25 < 2.
  p.objective = InferObjective::latency;
  p.links = {{0, 1, {0, 0}}};
  EXPECT_EQ(solve(p).stages.size(), 2u);
  EXPECT_NEAR(solve(p).latency_seconds, 1.25, 1e-12);
}

TEST(InferPlanner, ThreeDevicesOrderIsChosen) {
  // C is fast but only reachable cheaply from B: the best order from A is A -> B -> C.
  InferProblem p;
  for (int i = 0; i < 3; ++i) p.layers.push_back({1.0, 10, 0});
  p.activation_bytes = 1000000;  // 1 s at 8 Mbit/s
  p.return_token = false;
  p.devices = {{"A", 1.0, 10}, {"B", 1.0, 10}, {"C", 1.0, 10}};  // one layer each
  p.default_link = {8, 0};
  p.links = {{0, 2, {0.8, 0}}};  // A-C: 10 s
  p.first_device = 0;
  const InferPlan plan = solve(p);
  ASSERT_EQ(plan.stages.size(), 3u);
  EXPECT_EQ(plan.stages[1].device, 1);
  EXPECT_EQ(plan.stages[2].device, 2);
  EXPECT_NEAR(plan.latency_seconds, 5.0, 1e-12);
}

TEST(InferPlanner, InfeasibleNamesTheDeviceToRaise) {
  InferProblem p = two_devices();
  p.devices[0].memory_bytes = 130 * kMiB;  // A holds [0,1) (125)
  p.devices[1].memory_bytes = 120 * kMiB;  // B cannot hold [1,2) (127)
  p.first_device = 0;
  try {
    solve(p);
    FAIL() << "no exception";
  } catch (const InfeasibleInferPlanError& e) {
    EXPECT_EQ(e.device, 1);
    EXPECT_EQ(e.needed_bytes, 127 * kMiB);
    EXPECT_NE(std::string(e.what()).find("raise [device B] memory_mb to at least 127 (it has 120.0 MB)"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
  }
  // Brute force refuses alike.
  EXPECT_THROW(brute_force(p), InfeasibleInferPlanError);
  // Both at 120: either must hold everything (252); ties go to the first device.
  p.devices[0].memory_bytes = 120 * kMiB;
  p.first_device = -1;
  try {
    solve(p);
    FAIL() << "no exception";
  } catch (const InfeasibleInferPlanError& e) {
    EXPECT_EQ(e.device, 0);
    EXPECT_EQ(e.needed_bytes, 252 * kMiB);
  }
}

InferProblem random_problem(std::mt19937& rng) {
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto integer = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  InferProblem p;
  const int n = integer(3, 8), d = integer(2, 4);
  for (int i = 0; i < n; ++i) p.layers.push_back({uniform(0.001, 0.05), integer(10, 100), integer(0, 3)});
  p.embed_seconds = uniform(0, 0.01);
  p.head_seconds = uniform(0, 0.02);
  p.embed_weight_bytes = integer(0, 50);
  p.head_weight_bytes = integer(0, 50);
  p.head_copy_bytes = integer(0, 1) == 0 ? 0 : integer(0, 50);
  p.activation_bytes = integer(1000, 100000);
  p.return_token = integer(0, 1) == 1;
  p.context = integer(0, 8);
  p.sequences = integer(1, 3);
  for (int i = 0; i < d; ++i)
    p.devices.push_back({"d" + std::to_string(i), uniform(0.2, 4), integer(0, 2) == 0 ? 0 : integer(60, 500)});
  p.default_link = {uniform(1, 100), uniform(0, 20)};
  for (int a = 0; a < d; ++a)
    for (int b = a + 1; b < d; ++b)
      if (integer(0, 2) == 0) p.links.push_back({a, b, {integer(0, 3) == 0 ? 0.0 : uniform(1, 1000), uniform(0, 5)}});
  p.objective = integer(0, 1) == 0 ? InferObjective::latency : InferObjective::throughput;
  p.first_device = integer(-1, d - 1);
  return p;
}

TEST(InferPlanner, DynamicProgrammingEqualsBruteForce) {
  std::mt19937 rng(2024);
  int solved = 0, split = 0, infeasible = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const InferProblem p = random_problem(rng);
    SCOPED_TRACE("trial " + std::to_string(trial));
    std::string dp_error, bf_error;
    InferPlan dp, bf;
    try {
      dp = solve(p);
    } catch (const InfeasibleInferPlanError& e) {
      dp_error = e.what();
    }
    try {
      bf = brute_force(p);
    } catch (const InfeasibleInferPlanError& e) {
      bf_error = e.what();
    }
    ASSERT_EQ(dp_error, bf_error);
    if (!dp_error.empty()) {
      ++infeasible;
      continue;
    }
    ++solved;
    if (dp.stages.size() > 1) ++split;
    EXPECT_TRUE(dp.feasible) << dp.limit;
    EXPECT_DOUBLE_EQ(dp.objective, bf.objective);
    if (p.first_device >= 0) {
      EXPECT_EQ(dp.stages[0].device, p.first_device);
    }
    // The DP's plan is a valid one whose re-evaluation gives the same numbers.
    EXPECT_DOUBLE_EQ(evaluate(p, dp.stages).objective, dp.objective);
  }
  // The random problems exercise splits and the memory error, not only one-device plans.
  EXPECT_GT(split, 50);
  EXPECT_GT(infeasible, 10);
  EXPECT_GT(solved, 200);
}

TEST(InferPlanner, EvaluateRefusesMalformedPlans) {
  const InferProblem p = two_devices();
  expect_one_line_error<ConfigError>([&] { evaluate(p, {}); }, {"no stages"});
  expect_one_line_error<ConfigError>([&] { evaluate(p, {{0, 0, 1}, {0, 1, 2}}); }, {"[device A] runs two stages"});
  expect_one_line_error<ConfigError>([&] { evaluate(p, {{0, 0, 1}, {1, 0, 2}}); }, {"must begin at 1"});
  expect_one_line_error<ConfigError>([&] { evaluate(p, {{0, 0, 1}}); }, {"end at layer 1 of 2"});
  expect_one_line_error<ConfigError>([&] { evaluate(p, {{5, 0, 2}}); }, {"names no device"});
  InferProblem first = p;
  first.first_device = 1;
  expect_one_line_error<ConfigError>([&] { evaluate(first, {{0, 0, 2}}); }, {"first device [device B]"});
  InferProblem tight = p;
  tight.devices[1].memory_bytes = 100 * kMiB;
  EXPECT_EQ(evaluate(tight, {{1, 0, 2}}).limit, "[device B] needs 252.0 MB > 100.0 MB");
}

TEST(InferPlanner, ValidateRefusesMalformedProblems) {
  const InferProblem good = two_devices();
  InferProblem p = good;
  p.layers.clear();
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"no layers"});
  p = good;
  p.devices.clear();
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"no devices"});
  p = good;
  for (int i = 0; i < 17; ++i) p.devices.push_back({"x" + std::to_string(i), 1, 0});
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"at most 16"});
  p = good;
  p.devices[1].speed = 0;
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"[device B] speed must be > 0"});
  p = good;
  p.devices[1].name = "A";
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"'A' is listed twice"});
  p = good;
  p.links = {{0, 0, {}}};
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"unknown device or the same device twice"});
  p = good;
  p.links = {{0, 1, {}}, {1, 0, {}}};
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"[link B A] is given twice"});
  p = good;
  p.first_device = 2;
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"first device 2 is not a device"});
  p = good;
  p.sequences = 0;
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"sequences must be >= 1"});
  p = good;
  p.layers[1].seconds = -1;
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"layer 1 seconds must be"});
  expect_one_line_error<ConfigError>([&] { parse_objective("speed", "--objective"); }, {"--objective 'speed'"});
}

TEST(InferPlanner, RefusesProblemsTooLargeToPlanExactly) {
  InferProblem p = two_devices();
  p.layers.assign(80, p.layers[0]);
  p.devices.clear();
  for (int i = 0; i < 16; ++i) p.devices.push_back({"x" + std::to_string(i), 1, 0});
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"too large"});
}

TEST(InferPlanner, EightDevicesThirtyTwoLayersSolves) {
  // A realistic size: the DP answers (timed in the commit message); the plan is valid.
  std::mt19937 rng(7);
  InferProblem p = two_devices();
  p.layers.clear();
  for (int i = 0; i < 32; ++i) p.layers.push_back({0.01 * (1 + i % 3), 50 * kMiB, 0});
  p.devices.clear();
  for (int i = 0; i < 8; ++i)
    p.devices.push_back({"x" + std::to_string(i), 0.5 + 0.25 * i, (400 + 100 * int64_t(i)) * kMiB});
  p.default_link = {1000, 1};
  p.objective = InferObjective::throughput;
  const InferPlan plan = solve(p);
  EXPECT_TRUE(plan.feasible);
  EXPECT_GT(plan.stages.size(), 1u);
}

TEST(InferPlanner, TableAndStagePlanJson) {
  InferProblem p = two_devices();
  p.first_device = 0;
  p.return_token = true;
  p.devices[0].memory_bytes = 130 * kMiB;
  const InferPlan plan = solve(p);
  const std::string table = plan_table(p, plan);
  EXPECT_NE(table.find("1     B                [1, 2)"), std::string::npos) << table;
  EXPECT_NE(table.find("125.0 / 130.0"), std::string::npos) << table;
  EXPECT_NE(table.find("127.0 / unlimited"), std::string::npos) << table;
  EXPECT_NE(table.find("per-token latency 2270.004 ms"), std::string::npos) << table;
  // What export's --plan reads back: the same ranges and device names.
  const auto ranges = parse_stage_plan(stage_plan_json(p, plan), 2, "plan.json");
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0].layer_begin, 0);
  EXPECT_EQ(ranges[0].layer_end, 1);
  EXPECT_EQ(ranges[0].device, "A");
  EXPECT_EQ(ranges[1].layer_end, 2);
  EXPECT_EQ(ranges[1].device, "B");
}

}  // namespace
}  // namespace fedsplit
