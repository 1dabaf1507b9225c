// labels: unit
// The cut planner: its dynamic programme against brute force on seeded random chains (both objectives,
// 2-3 parties, a recurring device as in the U-shaped scheme), memory limits, the infeasible errors, and a
// case computed by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "split/planner.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

constexpr int64_t kMiB = 1 << 20;

/// A random chain of 2..8 stages over 2..3 parties: device -> server, device -> server -> device
/// (U-shaped, the device's memory shared by two ranges) or three machines in a row.
PlanProblem random_problem(std::mt19937_64& rng, Objective objective) {
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto integer = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  PlanProblem p;
  p.objective = objective;
  const int64_t S = integer(2, 8);
  for (int64_t s = 0; s < S; ++s) {
    StageCost c;
    c.name = "stage " + std::to_string(s);
    c.forward_seconds = uniform(0.001, 0.1);
    c.backward_seconds = uniform(0.0, 0.2);
    c.param_bytes = integer(0, 100) * kMiB;
    c.trainable_bytes = integer(0, c.param_bytes);
    c.activation_bytes = integer(0, 50) * kMiB;
    c.output_bytes = integer(1, 20) * kMiB;
    c.output_grad_bytes = integer(0, 1) ? c.output_bytes : integer(0, 20) * kMiB;
    p.stages.push_back(c);
  }
  const int shape = static_cast<int>(integer(0, 2));  // 0: two parties, 1: U-shaped, 2: three machines
  const int machines = shape == 2 ? 3 : 2;
  for (int m = 0; m < machines; ++m) p.machines.push_back({"machine " + std::to_string(m), uniform(0.1, 10), 0});
  p.parties = shape == 0 ? std::vector<int>{0, 1} : shape == 1 ? std::vector<int>{0, 1, 0} : std::vector<int>{0, 1, 2};
  for (size_t k = 0; k + 1 < p.parties.size(); ++k) {
    Hop hop;
    if (integer(0, 5) > 0) hop.link = LinkClass{"link", uniform(1, 1000), uniform(1, 1000), uniform(0, 100)};
    hop.forward_upward = integer(0, 1) == 1;
    if (integer(0, 3) == 0) hop.extra_forward_bytes = integer(1, 5) * kMiB;
    p.hops.push_back(hop);
  }
  // Sometimes each cut may only sit in a range (as split learning's "each side keeps a block").
  if (integer(0, 2) == 0)
    for (size_t k = 0; k < p.hops.size(); ++k) {
      const int64_t first = integer(0, S);
      p.cut_range.emplace_back(first, integer(first, S));
    }
  // Sometimes a party may stay empty, as long as the required ones still fit.
  p.nonempty.assign(p.parties.size(), true);
  for (size_t k = 0; k < p.parties.size(); ++k)
    if (integer(0, 3) == 0) p.nonempty[k] = false;
  if (std::count(p.nonempty.begin(), p.nonempty.end(), true) > S) p.nonempty.assign(p.parties.size(), false);
  // Memory: unlimited, or a random share of what the whole chain needs (so that limits bind or break).
  int64_t total = 0;
  for (const auto& s : p.stages) total += s.param_bytes + 3 * s.trainable_bytes + s.activation_bytes;
  for (auto& m : p.machines)
    if (integer(0, 4) > 0) m.memory_bytes = std::max<int64_t>(1, static_cast<int64_t>(uniform(0.1, 1.0) * total));
  return p;
}

}  // namespace

TEST(Planner, DynamicProgrammeMatchesBruteForce) {
  std::mt19937_64 rng(20261121);
  int compared = 0, unique = 0, infeasible = 0, binding = 0, unplaceable = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    for (Objective objective : {Objective::sum, Objective::bottleneck}) {
      const PlanProblem p = random_problem(rng, objective);
      SCOPED_TRACE("trial " + std::to_string(trial) + ", objective " + to_string(objective));
      const auto plans = enumerate_plans(p);
      if (plans.empty()) {  // the ranges and non-empty parties leave nothing to choose from
        ++unplaceable;
        expect_one_line_error<ConfigError>([&] { solve(p); }, {"satisfies the cut ranges"});
        expect_one_line_error<ConfigError>([&] { brute_force(p); }, {"satisfies the cut ranges"});
        continue;
      }
      const bool any_feasible = std::any_of(plans.begin(), plans.end(), [](const Plan& x) { return x.feasible; });
      if (!any_feasible) {
        ++infeasible;
        EXPECT_THROW(solve(p), InfeasiblePlanError);
        EXPECT_THROW(brute_force(p), InfeasiblePlanError);
        continue;
      }
      const Plan dp = solve(p), brute = brute_force(p);
      ++compared;
      const double scale = std::max(1.0, std::abs(brute.objective));
      ASSERT_NEAR(dp.objective, brute.objective, 1e-9 * scale);
      // The DP's plan is a real, feasible placement whose costs evaluate() confirms.
      ASSERT_TRUE(dp.feasible);
      EXPECT_DOUBLE_EQ(evaluate(p, dp.cuts).objective, dp.objective);
      for (size_t m = 0; m < p.machines.size(); ++m)
        if (p.machines[m].memory_bytes > 0) { EXPECT_LE(dp.memory_bytes[m], p.machines[m].memory_bytes); }
      // Same cuts when the optimum is unique (by more than rounding).
      const auto near_best = std::count_if(plans.begin(), plans.end(), [&](const Plan& x) {
        return x.feasible && x.objective <= brute.objective + 1e-9 * scale;
      });
      if (near_best == 1) {
        ++unique;
        EXPECT_EQ(dp.cuts, brute.cuts);
      }
      // Count the cases where a memory limit changed the answer.
      const auto fastest = std::min_element(plans.begin(), plans.end(),
                                            [](const Plan& a, const Plan& b) { return a.objective < b.objective; });
      if (!fastest->feasible) ++binding;
    }
  }
  // The generator must exercise every branch, or this test proves little.
  std::printf("compared %d unique %d infeasible %d binding %d unplaceable %d\n", compared, unique, infeasible, binding,
              unplaceable);
  EXPECT_GT(compared, 800);
  EXPECT_GT(unique, 600);
  EXPECT_GT(infeasible, 200);
  EXPECT_GT(binding, 200);
  EXPECT_GT(unplaceable, 100);
}

// Three stages on device (speed 0.5) -> server (speed 2) over 8 Mbit/s up, 16 Mbit/s down, 100 ms latency.
PlanProblem hand_problem() {
  PlanProblem p;
  const int64_t MB = 1000000;  // the link counts decimal megabits
  auto stage = [&](const char* name, double seconds, int64_t params_mib, int64_t act_mib) {
    StageCost s;
    s.name = name;
    s.forward_seconds = seconds;
    s.backward_seconds = seconds;
    s.param_bytes = s.trainable_bytes = params_mib * kMiB;
    s.activation_bytes = act_mib * kMiB;
    s.output_bytes = s.output_grad_bytes = MB;
    return s;
  };
  p.stages = {stage("embed", 1, 100, 10), stage("block", 2, 1000, 50), stage("head", 1, 100, 20)};
  p.machines = {{"device", 0.5, 0}, {"server", 2, 0}};
  p.parties = {0, 1};
  p.hops = {Hop{LinkClass{"client", 8, 16, 100}, true}};
  return p;
}

TEST(Planner, HandComputedCase) {
  PlanProblem p = hand_problem();
  // Cut 1: device 2 s / 0.5 = 4 s; server 6 s / 2 = 3 s; 1 MB up at 8 Mbit/s = 1 s, back down at 16 = 0.5 s,
  // plus 2 x 100 ms: 1.7 s. Total 8.7 s. Cut 2: 12 + 1 + 1.7 = 14.7 s.
  Plan plan = solve(p);
  EXPECT_EQ(plan.cuts, std::vector<int64_t>{1});
  EXPECT_NEAR(plan.step_seconds, 8.7, 1e-12);
  EXPECT_NEAR(plan.compute_seconds[0], 4.0, 1e-12);
  EXPECT_NEAR(plan.compute_seconds[1], 3.0, 1e-12);
  EXPECT_NEAR(plan.transfer_seconds[0], 1.7, 1e-12);
  // Memory: weights + gradient + 2 AdamW moments = 4 x params, plus activations.
  EXPECT_EQ(plan.memory_bytes[0], 410 * kMiB);
  EXPECT_EQ(plan.memory_bytes[1], (4000 + 50 + 400 + 20) * kMiB);
  const auto plans = enumerate_plans(p);
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_NEAR(plans[1].step_seconds, 14.7, 1e-12);

  // A server of 1000 MB holds only the head: the planner must move the block to the device.
  p.machines[1].memory_bytes = 1000 * kMiB;
  plan = solve(p);
  EXPECT_EQ(plan.cuts, std::vector<int64_t>{2});
  EXPECT_NEAR(plan.objective, 14.7, 1e-12);
  EXPECT_EQ(plan.memory_bytes[1], 420 * kMiB);
  EXPECT_FALSE(enumerate_plans(p)[0].feasible);
  EXPECT_NE(enumerate_plans(p)[0].limit.find("server memory 4470.0 MB > 1000.0 MB"), std::string::npos);

  // Bottleneck: the slowest of device compute, server compute and the link, i.e. 12 s at cut 2.
  p.objective = Objective::bottleneck;
  EXPECT_NEAR(solve(p).objective, 12.0, 1e-12);
  p.machines[1].memory_bytes = 0;
  EXPECT_NEAR(solve(p).objective, 4.0, 1e-12);
}

TEST(Planner, CutRangesAndPerStepMessages) {
  PlanProblem p = hand_problem();
  // Labels of 2 MB go up with every step in a message of their own: 2 s + 100 ms more at any cut.
  p.hops[0].extra_forward_bytes = 2000000;
  EXPECT_NEAR(solve(p).step_seconds, 8.7 + 2.1, 1e-12);
  // The cut may only follow the block: the slower placement is the only one.
  p.cut_range = {{2, 2}};
  const Plan plan = solve(p);
  EXPECT_EQ(plan.cuts, std::vector<int64_t>{2});
  EXPECT_NEAR(plan.step_seconds, 14.7 + 2.1, 1e-12);
  EXPECT_EQ(enumerate_plans(p).size(), 1u);
  expect_one_line_error<ConfigError>([&] { evaluate(p, {1}); }, {"cut 0 at 1 is outside its range [2, 2]"});
  p.cut_range = {{3, 3}};  // the server would be empty
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"no placement of 3 stages over 2 parties"});
  p.cut_range = {{2, 1}};
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"empty cut range [2, 1]"});
}

TEST(Planner, UShapedDeviceHoldsBothEnds) {
  PlanProblem p = hand_problem();
  p.machines = {{"device", 0.5, 0}, {"server", 2, 0}};
  p.parties = {0, 1, 0};
  p.hops = {Hop{LinkClass{"client", 8, 16, 100}, true}, Hop{LinkClass{"client", 8, 16, 100}, false}};
  // The only placement: embed | block | head. Device 2/0.5 + 2/0.5 = 8 s; server 4/2 = 2 s; each cut 1.7 s.
  const Plan plan = solve(p);
  EXPECT_EQ(plan.cuts, (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(plan.step_seconds, 8 + 2 + 3.4, 1e-12);
  EXPECT_EQ(plan.memory_bytes[0], (410 + 420) * kMiB);  // both device ranges at once
  p.machines[0].memory_bytes = 800 * kMiB;              // fits either range, not both
  expect_one_line_error<InfeasiblePlanError>([&] { solve(p); }, {"device", "830.0 MB", "800.0 MB"});
}

TEST(Planner, InfeasibleSaysWhichLimitToRaise) {
  PlanProblem p = hand_problem();
  p.machines[0].memory_bytes = 100 * kMiB;  // the device cannot even hold the embedding (410 MB)
  try {
    solve(p);
    ADD_FAILURE() << "no exception";
  } catch (const InfeasiblePlanError& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.machine, 0);
    EXPECT_EQ(e.needed_bytes, 410 * kMiB);
    EXPECT_NE(what.find("raise the memory of device to at least 410.0 MB (has 100.0 MB)"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos);
  }
  EXPECT_THROW(brute_force(p), InfeasiblePlanError);

  // Both too small: raising one is not enough, and the message says what each needs.
  p.machines[1].memory_bytes = 100 * kMiB;
  try {
    solve(p);
    ADD_FAILURE() << "no exception";
  } catch (const InfeasiblePlanError& e) {
    EXPECT_EQ(e.machine, -1);
    const std::string what = e.what();
    EXPECT_NE(what.find("raising one machine's is not enough"), std::string::npos) << what;
    EXPECT_NE(what.find("device 410.0 MB (has 100.0 MB)"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos);
  }
}

TEST(Planner, RejectsMalformedProblems) {
  PlanProblem p = hand_problem();
  p.machines[1].speed = 0;
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"server", "speed"});
  p = hand_problem();
  p.parties = {0, 1, 0, 1};
  p.hops.resize(3);
  expect_one_line_error<ConfigError>([&] { solve(p); }, {"4 parties must each hold a stage", "only 3 stages"});
  p = hand_problem();
  expect_one_line_error<ConfigError>([&] { evaluate(p, {0}); }, {"party 0 (device) must hold at least one stage"});
  expect_one_line_error<ConfigError>([&] { evaluate(p, {1, 2}); }, {"2 parties need 1 cuts"});
}
