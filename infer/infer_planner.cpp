#include "infer/infer_planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/comm/link_model.h"

namespace fedsplit {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kMiB = 1024.0 * 1024.0;
constexpr int kMaxDevices = 16;
// The DP keeps a value and a back pointer per (layers placed, devices used, last device): 12 bytes.
constexpr double kMaxStates = double(int64_t{1} << 24);
// Transitions beyond this take minutes; the user can pin the first device or drop devices instead.
constexpr double kMaxWork = 2e10;

std::string megabytes(int64_t bytes) {
  char text[48];
  std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / kMiB);
  return text;
}

std::string device_label(const InferProblem& p, int d) { return "[device " + p.devices[size_t(d)].name + "]"; }

/// Prefix sums over the layers, so that any range's totals cost O(1) and the DP, brute force and
/// evaluate add them in the same order (equal plans give bit-equal numbers).
struct Prefix {
  std::vector<double> seconds{0};
  std::vector<int64_t> weights{0};
  std::vector<int64_t> kv{0};
  explicit Prefix(const InferProblem& p) {
    for (const auto& l : p.layers) {
      seconds.push_back(seconds.back() + l.seconds);
      weights.push_back(weights.back() + l.weight_bytes);
      kv.push_back(kv.back() + l.kv_bytes_per_token);
    }
  }
};

int64_t num_layers(const InferProblem& p) { return static_cast<int64_t>(p.layers.size()); }

double stage_compute(const InferProblem& p, const Prefix& pre, int d, int64_t b, int64_t e) {
  double s = pre.seconds[size_t(e)] - pre.seconds[size_t(b)];
  if (b == 0) s += p.embed_seconds;
  if (e == num_layers(p)) s += p.head_seconds;
  return s / p.devices[size_t(d)].speed;
}

int64_t stage_memory(const InferProblem& p, const Prefix& pre, int64_t b, int64_t e) {
  int64_t m = pre.weights[size_t(e)] - pre.weights[size_t(b)] +
              (pre.kv[size_t(e)] - pre.kv[size_t(b)]) * p.context * p.sequences;
  if (b == 0) m += p.embed_weight_bytes;
  if (e == num_layers(p)) m += p.head_weight_bytes;
  if (e == num_layers(p) && b > 0) m += p.head_copy_bytes;
  return m;
}

bool fits(const InferProblem& p, int d, int64_t bytes) {
  const int64_t limit = p.devices[size_t(d)].memory_bytes;
  return limit == 0 || bytes <= limit;
}

double combine(InferObjective o, double a, double b) { return o == InferObjective::latency ? a + b : std::max(a, b); }

/// What one DP run minimises, as tables: stage[(d * (N+1) + b) * (N+1) + e] (+inf: not allowed),
/// hop[a * D + b] (activations a -> b), back[a * D + b] (the token from last stage a to first b).
struct DpTables {
  std::vector<double> stage, hop, back;
  InferObjective combine = InferObjective::latency;
};

struct DpBest {
  double value = kInf;
  std::vector<InferStage> stages;  // device and range only
};

void check_size(const InferProblem& p) {
  const double N = double(num_layers(p)), D = double(p.devices.size());
  const double firsts = p.first_device >= 0 ? 1 : D;
  const double states = (N + 1) * std::ldexp(1.0, int(D)) * D;
  const double work = firsts * states * D * N / 2;
  if (states > kMaxStates || work > kMaxWork)
    throw ConfigError("planning " + std::to_string(p.devices.size()) + " devices over " + std::to_string(num_layers(p)) +
                      " layers exactly is too large (" + std::to_string(int64_t(states)) +
                      " DP states); mark the source device with first = true or list fewer devices");
}

DpBest run_dp(const InferProblem& p, const DpTables& t) {
  const int64_t N = num_layers(p);
  const int D = static_cast<int>(p.devices.size());
  const size_t masks = size_t{1} << D;
  const auto index = [&](int64_t n, size_t mask, int last) { return (size_t(n) * masks + mask) * size_t(D) + size_t(last); };
  const auto stage = [&](int d, int64_t b, int64_t e) { return t.stage[(size_t(d) * size_t(N + 1) + size_t(b)) * size_t(N + 1) + size_t(e)]; };
  std::vector<double> value(size_t(N + 1) * masks * size_t(D));
  std::vector<int32_t> from(value.size());  // previous (n * 32 + last), -1 at stage 0
  DpBest best;
  for (int f = 0; f < D; ++f) {
    if (p.first_device >= 0 && f != p.first_device) continue;
    std::fill(value.begin(), value.end(), kInf);
    const size_t fbit = size_t{1} << f;
    for (int64_t e = 1; e <= N; ++e) {
      const double c = stage(f, 0, e);
      if (!std::isfinite(c)) break;  // memory only grows with the range
      value[index(e, fbit, f)] = c;
      from[index(e, fbit, f)] = -1;
    }
    for (int64_t n = 1; n < N; ++n)
      for (size_t mask = fbit; mask < masks; ++mask) {
        if (!(mask & fbit)) continue;
        for (int last = 0; last < D; ++last) {
          if (!(mask >> last & 1)) continue;
          const double v = value[index(n, mask, last)];
          if (!(v < best.value)) continue;  // values only grow along a path
          for (int d = 0; d < D; ++d) {
            if (mask >> d & 1) continue;
            const double in = combine(t.combine, v, t.hop[size_t(last * D + d)]);
            const size_t next_mask = mask | size_t{1} << d;
            for (int64_t e = n + 1; e <= N; ++e) {
              const double c = stage(d, n, e);
              if (!std::isfinite(c)) break;
              const double w = combine(t.combine, in, c);
              const size_t to = index(e, next_mask, d);
              if (w < value[to]) {
                value[to] = w;
                from[to] = int32_t(n * 32 + last);
              }
            }
          }
        }
      }
    // Close the loop: the token goes back from the last stage to stage 0's device.
    size_t best_state = 0;
    bool found = false;
    for (size_t mask = fbit; mask < masks; ++mask)
      for (int last = 0; last < D; ++last) {
        if (!(mask & fbit) || !(mask >> last & 1)) continue;
        double v = value[index(N, mask, last)];
        if (last != f) v = combine(t.combine, v, t.back[size_t(last * D + f)]);
        if (v < best.value) {
          best.value = v;
          best_state = index(N, mask, last);
          found = true;
        }
      }
    if (!found) continue;
    best.stages.clear();
    int64_t n = int64_t(best_state / size_t(D) / masks);
    size_t mask = (best_state / size_t(D)) % masks;
    int last = int(best_state % size_t(D));
    while (true) {
      const int32_t prev = from[index(n, mask, last)];
      InferStage s;
      s.device = last;
      s.layer_end = n;
      s.layer_begin = prev < 0 ? 0 : prev / 32;
      best.stages.insert(best.stages.begin(), s);
      if (prev < 0) break;
      mask &= ~(size_t{1} << last);
      n = prev / 32;
      last = prev % 32;
    }
  }
  return best;
}

/// Tables for the problem's own objective: memory over a device's limit is not allowed.
DpTables objective_tables(const InferProblem& p, const Prefix& pre) {
  const int64_t N = num_layers(p);
  const int D = static_cast<int>(p.devices.size());
  DpTables t;
  t.combine = p.objective;
  t.stage.assign(size_t(D) * size_t(N + 1) * size_t(N + 1), kInf);
  for (int d = 0; d < D; ++d)
    for (int64_t b = 0; b < N; ++b)
      for (int64_t e = b + 1; e <= N; ++e)
        if (fits(p, d, stage_memory(p, pre, b, e)))
          t.stage[(size_t(d) * size_t(N + 1) + size_t(b)) * size_t(N + 1) + size_t(e)] = stage_compute(p, pre, d, b, e);
  t.hop.assign(size_t(D * D), 0.0);
  t.back.assign(size_t(D * D), 0.0);
  for (int a = 0; a < D; ++a)
    for (int b = 0; b < D; ++b)
      if (a != b) {
        t.hop[size_t(a * D + b)] = link_seconds(p, a, b, p.activation_bytes);
        t.back[size_t(a * D + b)] = p.return_token ? link_seconds(p, a, b, p.token_bytes) : 0.0;
      }
  return t;
}

/// The least memory device x needs when it is unlimited and the others keep their limits (the DP
/// with x's stage memory as the cost); +inf when even that does not fit.
double least_memory_on(const InferProblem& p, const Prefix& pre, int x) {
  const int64_t N = num_layers(p);
  const int D = static_cast<int>(p.devices.size());
  DpTables t;
  t.stage.assign(size_t(D) * size_t(N + 1) * size_t(N + 1), kInf);
  for (int d = 0; d < D; ++d)
    for (int64_t b = 0; b < N; ++b)
      for (int64_t e = b + 1; e <= N; ++e) {
        const int64_t m = stage_memory(p, pre, b, e);
        const size_t i = (size_t(d) * size_t(N + 1) + size_t(b)) * size_t(N + 1) + size_t(e);
        if (d == x) t.stage[i] = double(m);
        else if (fits(p, d, m)) t.stage[i] = 0.0;
      }
  t.hop.assign(size_t(D * D), 0.0);
  t.back.assign(size_t(D * D), 0.0);
  return run_dp(p, t).value;
}

[[noreturn]] void throw_infeasible(const InferProblem& p, const Prefix& pre) {
  const std::string what = "no plan of the " + std::to_string(num_layers(p)) + " layers fits the devices' memory (context " +
                           std::to_string(p.context) + " x " + std::to_string(p.sequences) + " sequences)";
  int best = -1;
  double best_extra = kInf, best_needed = 0;
  for (int d = 0; d < int(p.devices.size()); ++d) {
    if (p.devices[size_t(d)].memory_bytes == 0) continue;
    const double needed = least_memory_on(p, pre, d);
    const double extra = needed - double(p.devices[size_t(d)].memory_bytes);
    if (extra < best_extra) {
      best = d;
      best_extra = extra;
      best_needed = needed;
    }
  }
  // One device with unlimited memory can hold the whole model, and raising the first device (or any,
  // without one) lets it do so, so some device always qualifies.
  if (best < 0) throw Error(what + " (planner bug: no device to raise)");
  const int64_t needed = int64_t(best_needed);
  const int64_t needed_mb = (needed + (int64_t{1} << 20) - 1) >> 20;
  throw InfeasibleInferPlanError(what + ": raise " + device_label(p, best) + " memory_mb to at least " +
                                     std::to_string(needed_mb) + " (it has " +
                                     megabytes(p.devices[size_t(best)].memory_bytes) +
                                     "), or lower --context / --sequences",
                                 best, needed);
}

void check_finite(double v, const std::string& what) {
  if (!std::isfinite(v) || v < 0) throw ConfigError("inference planner: " + what + " must be a finite number >= 0");
}

void check_link(const InferLink& l, const std::string& what) {
  check_finite(l.mbps, what + " mbps");
  check_finite(l.latency_ms, what + " latency_ms");
}

}  // namespace

void validate(const InferProblem& p) {
  if (p.layers.empty()) throw ConfigError("inference planner: the model has no layers");
  if (p.devices.empty()) throw ConfigError("inference planner: no devices: list at least one [device NAME]");
  if (p.devices.size() > size_t(kMaxDevices))
    throw ConfigError("inference planner: " + std::to_string(p.devices.size()) + " devices; at most " +
                      std::to_string(kMaxDevices) + " can be planned (the DP is exponential in them): drop some");
  std::set<std::string> names;
  for (const auto& d : p.devices) {
    if (d.name.empty()) throw ConfigError("inference planner: a device has no name");
    if (!names.insert(d.name).second) throw ConfigError("inference planner: device '" + d.name + "' is listed twice");
    if (!std::isfinite(d.speed) || d.speed <= 0)
      throw ConfigError("inference planner: [device " + d.name + "] speed must be > 0");
    if (d.memory_bytes < 0) throw ConfigError("inference planner: [device " + d.name + "] memory must be >= 0");
  }
  for (size_t i = 0; i < p.layers.size(); ++i) {
    check_finite(p.layers[i].seconds, "layer " + std::to_string(i) + " seconds");
    if (p.layers[i].weight_bytes < 0 || p.layers[i].kv_bytes_per_token < 0)
      throw ConfigError("inference planner: layer " + std::to_string(i) + " has negative bytes");
  }
  check_finite(p.embed_seconds, "embed seconds");
  check_finite(p.head_seconds, "head seconds");
  if (p.embed_weight_bytes < 0 || p.head_weight_bytes < 0 || p.head_copy_bytes < 0 || p.activation_bytes < 0 ||
      p.token_bytes < 0)
    throw ConfigError("inference planner: negative embed/head/activation/token bytes");
  check_link(p.default_link, "[link]");
  std::set<std::pair<int, int>> pairs;
  for (const auto& o : p.links) {
    if (o.a < 0 || o.b < 0 || o.a >= int(p.devices.size()) || o.b >= int(p.devices.size()) || o.a == o.b)
      throw ConfigError("inference planner: a link override names an unknown device or the same device twice");
    if (!pairs.insert({std::min(o.a, o.b), std::max(o.a, o.b)}).second)
      throw ConfigError("inference planner: [link " + p.devices[size_t(o.a)].name + " " + p.devices[size_t(o.b)].name +
                        "] is given twice");
    check_link(o.link, "[link " + p.devices[size_t(o.a)].name + " " + p.devices[size_t(o.b)].name + "]");
  }
  if (p.first_device < -1 || p.first_device >= int(p.devices.size()))
    throw ConfigError("inference planner: first device " + std::to_string(p.first_device) + " is not a device");
  if (p.context < 0) throw ConfigError("inference planner: context must be >= 0");
  if (p.sequences < 1) throw ConfigError("inference planner: sequences must be >= 1");
}

double link_seconds(const InferProblem& p, int a, int b, int64_t bytes) {
  InferLink l = p.default_link;
  for (const auto& o : p.links)
    if ((o.a == a && o.b == b) || (o.a == b && o.b == a)) l = o.link;
  return transfer_seconds(LinkClass{"", l.mbps, l.mbps, l.latency_ms}, bytes, 1, true);
}

InferPlan evaluate(const InferProblem& p, std::vector<InferStage> stages) {
  validate(p);
  const int64_t N = num_layers(p);
  if (stages.empty()) throw ConfigError("inference plan: no stages");
  std::set<int> used;
  int64_t expected = 0;
  for (size_t k = 0; k < stages.size(); ++k) {
    const InferStage& s = stages[k];
    const std::string at = "inference plan: stage " + std::to_string(k);
    if (s.device < 0 || s.device >= int(p.devices.size())) throw ConfigError(at + " names no device");
    if (!used.insert(s.device).second)
      throw ConfigError(at + ": " + device_label(p, s.device) + " runs two stages (each device runs at most one)");
    if (s.layer_begin != expected || s.layer_end <= s.layer_begin || s.layer_end > N)
      throw ConfigError(at + ": layers [" + std::to_string(s.layer_begin) + ", " + std::to_string(s.layer_end) +
                        ") must begin at " + std::to_string(expected) + ", be non-empty and end by " + std::to_string(N));
    expected = s.layer_end;
  }
  if (expected != N) throw ConfigError("inference plan: the stages end at layer " + std::to_string(expected) + " of " + std::to_string(N));
  if (p.first_device >= 0 && stages[0].device != p.first_device)
    throw ConfigError("inference plan: stage 0 must run on the first device " + device_label(p, p.first_device));

  const Prefix pre(p);
  InferPlan plan;
  plan.feasible = true;
  for (size_t k = 0; k < stages.size(); ++k) {
    InferStage& s = stages[k];
    s.compute_seconds = stage_compute(p, pre, s.device, s.layer_begin, s.layer_end);
    s.transfer_seconds = k == 0 ? 0.0 : link_seconds(p, stages[k - 1].device, s.device, p.activation_bytes);
    s.memory_bytes = stage_memory(p, pre, s.layer_begin, s.layer_end);
    // Same order of operations as the DP: (previous + transfer) + compute.
    if (k == 0) {
      plan.latency_seconds = s.compute_seconds;
      plan.bottleneck_seconds = s.compute_seconds;
    } else {
      plan.latency_seconds = plan.latency_seconds + s.transfer_seconds + s.compute_seconds;
      plan.bottleneck_seconds = std::max(std::max(plan.bottleneck_seconds, s.transfer_seconds), s.compute_seconds);
    }
    if (plan.feasible && !fits(p, s.device, s.memory_bytes)) {
      plan.feasible = false;
      plan.limit = device_label(p, s.device) + " needs " + megabytes(s.memory_bytes) + " > " +
                   megabytes(p.devices[size_t(s.device)].memory_bytes);
    }
  }
  if (stages.size() > 1 && p.return_token) {
    plan.return_seconds = link_seconds(p, stages.back().device, stages.front().device, p.token_bytes);
    plan.latency_seconds += plan.return_seconds;
    plan.bottleneck_seconds = std::max(plan.bottleneck_seconds, plan.return_seconds);
  }
  plan.objective = p.objective == InferObjective::latency ? plan.latency_seconds : plan.bottleneck_seconds;
  plan.stages = std::move(stages);
  return plan;
}

InferPlan solve(const InferProblem& p) {
  validate(p);
  check_size(p);
  const Prefix pre(p);
  const DpBest best = run_dp(p, objective_tables(p, pre));
  if (best.stages.empty()) throw_infeasible(p, pre);
  return evaluate(p, best.stages);
}

InferPlan brute_force(const InferProblem& p) {
  validate(p);
  const int64_t N = num_layers(p);
  const int D = static_cast<int>(p.devices.size());
  InferPlan best;
  bool found = false;
  std::vector<InferStage> stages;
  // Every ordered choice of unused devices, each with every range starting where the last ended.
  std::function<void(int64_t, unsigned)> place = [&](int64_t n, unsigned used) {
    if (n == N) {
      InferPlan plan = evaluate(p, stages);
      if (plan.feasible && (!found || plan.objective < best.objective)) {
        best = std::move(plan);
        found = true;
      }
      return;
    }
    for (int d = 0; d < D; ++d) {
      if (used >> d & 1) continue;
      if (stages.empty() && p.first_device >= 0 && d != p.first_device) continue;
      for (int64_t e = n + 1; e <= N; ++e) {
        InferStage s;
        s.device = d;
        s.layer_begin = n;
        s.layer_end = e;
        stages.push_back(s);
        place(e, used | 1u << d);
        stages.pop_back();
      }
    }
  };
  place(0, 0);
  if (!found) throw_infeasible(p, Prefix(p));
  return best;
}

std::vector<StageRange> InferPlan::ranges(const InferProblem& problem) const {
  std::vector<StageRange> out;
  for (const auto& s : stages) out.push_back({s.layer_begin, s.layer_end, problem.devices.at(size_t(s.device)).name});
  return out;
}

double InferPlan::tokens_per_second(InferObjective objective) const {
  const double seconds = objective == InferObjective::latency ? latency_seconds : bottleneck_seconds;
  return seconds > 0 ? 1.0 / seconds : 0.0;
}

std::string plan_table(const InferProblem& p, const InferPlan& plan) {
  std::string out;
  char line[200];
  std::snprintf(line, sizeof line, "%-5s %-16s %-10s %12s %12s %22s\n", "stage", "device", "layers", "compute ms",
                "transfer ms", "memory MB / limit");
  out += line;
  for (size_t k = 0; k < plan.stages.size(); ++k) {
    const InferStage& s = plan.stages[k];
    const InferDevice& d = p.devices[size_t(s.device)];
    const std::string layers = "[" + std::to_string(s.layer_begin) + ", " + std::to_string(s.layer_end) + ")";
    char limit[32];
    if (d.memory_bytes > 0) std::snprintf(limit, sizeof limit, "%.1f", double(d.memory_bytes) / kMiB);
    else std::snprintf(limit, sizeof limit, "unlimited");
    char memory[64];
    std::snprintf(memory, sizeof memory, "%.1f / %s", double(s.memory_bytes) / kMiB, limit);
    std::snprintf(line, sizeof line, "%-5zu %-16s %-10s %12.3f %12.3f %22s\n", k, d.name.c_str(), layers.c_str(),
                  s.compute_seconds * 1e3, s.transfer_seconds * 1e3, memory);
    out += line;
  }
  if (plan.stages.size() > 1 && p.return_token) {
    std::snprintf(line, sizeof line, "token back to %s: %.3f ms\n", p.devices[size_t(plan.stages[0].device)].name.c_str(),
                  plan.return_seconds * 1e3);
    out += line;
  }
  std::snprintf(line, sizeof line,
                "predicted per-token latency %.3f ms (%.2f tokens/s, one sequence); bottleneck %.3f ms (%.2f tokens/s "
                "pipelined over sequences); objective: %s\n",
                plan.latency_seconds * 1e3, plan.tokens_per_second(InferObjective::latency), plan.bottleneck_seconds * 1e3,
                plan.tokens_per_second(InferObjective::throughput), to_string(p.objective));
  out += line;
  return out;
}

std::string stage_plan_json(const InferProblem& p, const InferPlan& plan) {
  // One stage a line, for people reading or editing the file; the names go through the JSON writer
  // for escaping.
  std::string out = "{\"stages\": [\n";
  const auto ranges = plan.ranges(p);
  for (size_t k = 0; k < ranges.size(); ++k)
    out += "  {\"layers\": [" + std::to_string(ranges[k].layer_begin) + ", " + std::to_string(ranges[k].layer_end) +
           "], \"device\": " + nlohmann::json(ranges[k].device).dump() + "}" + (k + 1 < ranges.size() ? ",\n" : "\n");
  return out + "]}\n";
}

const char* to_string(InferObjective objective) {
  return objective == InferObjective::latency ? "latency" : "throughput";
}

InferObjective parse_objective(const std::string& text, const std::string& key) {
  if (text == "latency") return InferObjective::latency;
  if (text == "throughput") return InferObjective::throughput;
  throw ConfigError(key + " '" + text + "': expected latency (per-token time) or throughput (the bottleneck stage)");
}

}  // namespace fedsplit
