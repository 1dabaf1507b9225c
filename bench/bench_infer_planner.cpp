// The inference partition planner (infer/infer_planner.h): its chosen plan against brute force on
// small random problems (the objectives must be equal, and both must refuse the same problems), then
// the DP's time at deployment sizes, where brute force is out of reach. Exit status 1 on any mismatch.
//
//   bench_infer_planner [problems per size, default 40]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "infer/infer_planner.h"

namespace {

using fedsplit::InferObjective;
using fedsplit::InferPlan;
using fedsplit::InferProblem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// A random problem: per-layer costs of a small model, devices of mixed speed with memory limits
/// often tight enough to force splits or refusals, Wi-Fi-like links with some faster pairs.
InferProblem random_problem(std::mt19937& rng, int devices, int layers, bool first) {
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto integer = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  InferProblem p;
  for (int i = 0; i < layers; ++i) p.layers.push_back({uniform(0.001, 0.05), integer(10, 100), integer(0, 3)});
  p.embed_seconds = uniform(0, 0.01);
  p.head_seconds = uniform(0, 0.02);
  p.embed_weight_bytes = integer(0, 50);
  p.head_weight_bytes = integer(0, 50);
  p.head_copy_bytes = integer(0, 1) == 0 ? 0 : integer(0, 50);
  p.activation_bytes = integer(1000, 100000);
  p.context = integer(0, 8);
  p.sequences = integer(1, 3);
  for (int i = 0; i < devices; ++i)
    p.devices.push_back({"d" + std::to_string(i), uniform(0.2, 4), integer(0, 2) == 0 ? 0 : integer(30 * layers / devices, 60 * layers)});
  p.default_link = {uniform(1, 100), uniform(0, 20)};
  for (int a = 0; a < devices; ++a)
    for (int b = a + 1; b < devices; ++b)
      if (integer(0, 2) == 0) p.links.push_back({a, b, {uniform(1, 1000), uniform(0, 5)}});
  p.objective = integer(0, 1) == 0 ? InferObjective::latency : InferObjective::throughput;
  p.first_device = first ? int(integer(0, devices - 1)) : -1;
  return p;
}

/// The plan's objective, or -1 when it refuses (no plan fits the memory).
double objective_of(InferPlan (*planner)(const InferProblem&), const InferProblem& p, double& seconds) {
  const auto start = Clock::now();
  double value = -1;
  try {
    value = planner(p).objective;
  } catch (const fedsplit::InfeasibleInferPlanError&) {
  }
  seconds += seconds_since(start);
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  const int per_size = argc > 1 ? std::atoi(argv[1]) : 40;
  std::mt19937 rng(12345);
  int mismatches = 0;
  std::printf("DP vs brute force, %d random problems per size (both objectives, memory limits, first device half the time)\n",
              per_size);
  std::printf("%7s %6s %9s %7s %10s %10s %12s %12s\n", "devices", "layers", "problems", "equal", "refused", "split",
              "dp ms", "brute ms");
  for (int devices = 2; devices <= 5; ++devices)
    for (int layers : {3, 6, 10}) {
      int equal = 0, refused = 0, split = 0;
      double dp_seconds = 0, bf_seconds = 0;
      for (int i = 0; i < per_size; ++i) {
        const InferProblem p = random_problem(rng, devices, layers, i % 2 == 0);
        const double dp = objective_of(fedsplit::solve, p, dp_seconds);
        const double bf = objective_of(fedsplit::brute_force, p, bf_seconds);
        if (dp == bf) ++equal;  // exact: both add the same terms in the same order
        else ++mismatches, std::printf("MISMATCH devices %d layers %d problem %d: dp %.17g, brute force %.17g\n", devices, layers, i, dp, bf);
        if (dp < 0) ++refused;
        else if (fedsplit::solve(p).stages.size() > 1) ++split;
      }
      std::printf("%7d %6d %9d %7d %10d %10d %12.3f %12.3f\n", devices, layers, per_size, equal, refused, split,
                  dp_seconds * 1e3, bf_seconds * 1e3);
    }

  std::printf("\nDP time at deployment sizes (median of 3; brute force not run)\n");
  std::printf("%7s %6s %6s %12s %8s\n", "devices", "layers", "first", "dp ms", "stages");
  struct Size {
    int devices, layers;
    bool first;
  };
  for (const Size s : {Size{4, 32, false}, Size{8, 32, false}, Size{8, 80, false}, Size{8, 80, true}, Size{10, 32, true},
                       Size{12, 32, true}, Size{12, 80, true}}) {
    InferProblem p = random_problem(rng, s.devices, s.layers, s.first);
    for (auto& d : p.devices) d.memory_bytes = 0;  // nothing pruned by memory: the worst case
    std::vector<double> times;
    size_t stages = 0;
    for (int r = 0; r < 3; ++r) {
      const auto start = Clock::now();
      stages = fedsplit::solve(p).stages.size();
      times.push_back(seconds_since(start));
    }
    std::sort(times.begin(), times.end());
    std::printf("%7d %6d %6s %12.1f %8zu\n", s.devices, s.layers, s.first ? "yes" : "no", times[1] * 1e3, stages);
  }
  std::printf("\n%s\n", mismatches == 0 ? "all equal" : "MISMATCHES");
  return mismatches == 0 ? 0 : 1;
}
