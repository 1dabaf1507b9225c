#include "split/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "core/util/log.h"

namespace fedsplit {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

std::string megabytes(int64_t bytes) {
  char text[48];
  std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / kMiB);
  return text;
}

bool required(const PlanProblem& p, size_t party) { return p.nonempty.empty() || p.nonempty[party]; }

/// Memory a stage needs on whichever machine holds it (see the header's cost model).
int64_t stage_memory(const PlanProblem& p, const StageCost& s) {
  return s.param_bytes + std::llround(static_cast<double>(s.trainable_bytes) * (1.0 + p.optimizer_state_copies)) +
         s.activation_bytes;
}

/// Seconds of hop k when the boundary between its parties sits before stage `pos`.
double hop_seconds(const PlanProblem& p, size_t k, int64_t pos) {
  const int64_t S = static_cast<int64_t>(p.stages.size());
  const Hop& hop = p.hops[k];
  if (pos == 0 || pos == S || !hop.link || p.parties[k] == p.parties[k + 1]) return 0.0;
  const StageCost& s = p.stages[static_cast<size_t>(pos - 1)];
  // A direction with nothing to send (inference has no backward) sends no message.
  return transfer_seconds(*hop.link, s.output_bytes, s.output_bytes > 0 ? 1 : 0, hop.forward_upward) +
         transfer_seconds(*hop.link, s.output_grad_bytes, s.output_grad_bytes > 0 ? 1 : 0, !hop.forward_upward) +
         transfer_seconds(*hop.link, hop.extra_forward_bytes, hop.extra_forward_bytes > 0 ? 1 : 0, hop.forward_upward);
}

/// Whether hop k may sit at boundary `pos`.
bool in_range(const PlanProblem& p, size_t k, int64_t pos) {
  return p.cut_range.empty() || (pos >= p.cut_range[k].first && pos <= p.cut_range[k].second);
}

/// Whether the machine of party k appears again later in the chain.
std::vector<bool> recurs_later(const PlanProblem& p) {
  std::vector<bool> later(p.parties.size(), false);
  for (size_t k = 0; k < p.parties.size(); ++k)
    for (size_t j = k + 1; j < p.parties.size(); ++j)
      if (p.parties[j] == p.parties[k]) later[k] = true;
  return later;
}

// A partial placement in the DP: parties 0..k-1 placed, covering stages [0, pos).
struct Label {
  double acc = 0;             // objective over what is closed (sum: everything so far)
  std::vector<int64_t> mem;   // memory placed on machines that recur later (0 for the others)
  std::vector<double> comp;   // bottleneck only: compute placed on machines that recur later
  int64_t prev_pos = -1;      // back pointer: the boundary before this party ...
  size_t prev_index = 0;      // ... and the label there
};

bool dominates(const Label& a, const Label& b) {
  if (a.acc > b.acc) return false;
  for (size_t m = 0; m < a.mem.size(); ++m)
    if (a.mem[m] > b.mem[m] || a.comp[m] > b.comp[m]) return false;
  return true;
}

/// Keeps `cell` a Pareto set: `label` enters unless an existing one is at least as good everywhere.
void insert(std::vector<Label>& cell, Label label) {
  for (const auto& e : cell)
    if (dominates(e, label)) return;
  cell.erase(std::remove_if(cell.begin(), cell.end(), [&](const Label& e) { return dominates(label, e); }), cell.end());
  cell.push_back(std::move(label));
}

/// The DP itself, on a validated problem (speeds may be +inf: compute-free machines, used by the
/// diagnosis). The cuts of the least-objective feasible placement, or nothing.
std::optional<std::vector<int64_t>> dp_cuts(const PlanProblem& p) {
  const size_t K = p.parties.size(), M = p.machines.size();
  const int64_t S = static_cast<int64_t>(p.stages.size());
  std::vector<double> work(static_cast<size_t>(S) + 1, 0.0);
  std::vector<int64_t> memory(static_cast<size_t>(S) + 1, 0);
  for (int64_t s = 0; s < S; ++s) {
    const auto& st = p.stages[static_cast<size_t>(s)];
    work[static_cast<size_t>(s) + 1] = work[static_cast<size_t>(s)] + st.forward_seconds + st.backward_seconds;
    memory[static_cast<size_t>(s) + 1] = memory[static_cast<size_t>(s)] + stage_memory(p, st);
  }
  const auto later = recurs_later(p);
  const bool bottleneck = p.objective == Objective::bottleneck;

  // cells[k][pos]: labels after parties 0..k-1 cover [0, pos).
  std::vector<std::vector<std::vector<Label>>> cells(K + 1, std::vector<std::vector<Label>>(static_cast<size_t>(S) + 1));
  Label start;
  start.mem.assign(M, 0);
  start.comp.assign(M, 0.0);
  cells[0][0].push_back(start);
  for (size_t k = 0; k < K; ++k) {
    const int m = p.parties[k];
    const Machine& machine = p.machines[static_cast<size_t>(m)];
    for (int64_t pos = 0; pos <= S; ++pos) {
      const auto& from = cells[k][static_cast<size_t>(pos)];
      if (from.empty()) continue;
      const double hop = k > 0 ? hop_seconds(p, k - 1, pos) : 0.0;
      const int64_t first_end = pos + (required(p, k) ? 1 : 0);
      for (int64_t end = k + 1 == K ? S : first_end; end <= S; ++end) {
        if (end < first_end || (k + 1 < K && !in_range(p, k, end))) continue;
        const double compute = (work[static_cast<size_t>(end)] - work[static_cast<size_t>(pos)]) / machine.speed;
        const int64_t mem = memory[static_cast<size_t>(end)] - memory[static_cast<size_t>(pos)];
        for (size_t i = 0; i < from.size(); ++i) {
          Label next = from[i];
          next.prev_pos = pos;
          next.prev_index = i;
          next.mem[static_cast<size_t>(m)] += mem;
          if (machine.memory_bytes > 0 && next.mem[static_cast<size_t>(m)] > machine.memory_bytes) continue;
          if (!later[k]) next.mem[static_cast<size_t>(m)] = 0;
          if (bottleneck) {
            next.acc = std::max(next.acc, hop);
            next.comp[static_cast<size_t>(m)] += compute;
            if (!later[k]) {
              next.acc = std::max(next.acc, next.comp[static_cast<size_t>(m)]);
              next.comp[static_cast<size_t>(m)] = 0;
            }
          } else {
            next.acc += hop + compute;
          }
          insert(cells[k + 1][static_cast<size_t>(end)], std::move(next));
        }
      }
    }
  }
  const auto& last = cells[K][static_cast<size_t>(S)];
  if (last.empty()) return std::nullopt;
  size_t best = 0;
  for (size_t i = 1; i < last.size(); ++i)
    if (last[i].acc < last[best].acc) best = i;
  // Walk the back pointers: the label in cells[k][pos] records where party k-1 began.
  std::vector<int64_t> cuts(K - 1);
  int64_t pos = S;
  size_t index = best;
  for (size_t k = K; k > 0; --k) {
    const Label& l = cells[k][static_cast<size_t>(pos)][index];
    if (k >= 2) cuts[k - 2] = l.prev_pos;
    pos = l.prev_pos;
    index = l.prev_index;
  }
  return cuts;
}

/// The error for a problem with no feasible placement: which machine's memory to raise, and to what.
[[noreturn]] void throw_infeasible(const PlanProblem& p) {
  PlanProblem unlimited = p;
  for (auto& m : unlimited.machines) m.memory_bytes = 0;
  const auto fastest = dp_cuts(unlimited);
  if (!fastest)
    throw ConfigError(cat("placement problem: no placement of ", p.stages.size(), " stages over ", p.parties.size(),
                          " parties satisfies the cut ranges and non-empty parties"));
  std::string options;
  int first = -1;
  int64_t first_need = 0;
  for (size_t m = 0; m < p.machines.size(); ++m) {
    if (p.machines[m].memory_bytes == 0) continue;
    // Lift this machine's limit; then minimise its memory alone (compute counted on it only, as memory).
    PlanProblem least = p;
    least.machines[m].memory_bytes = 0;
    least.objective = Objective::sum;
    for (auto& hop : least.hops) hop.link.reset();
    for (size_t j = 0; j < least.machines.size(); ++j)
      least.machines[j].speed = j == m ? 1.0 : std::numeric_limits<double>::infinity();
    for (auto& s : least.stages) {
      s.forward_seconds = static_cast<double>(stage_memory(p, s));
      s.backward_seconds = 0;
    }
    const auto cuts = dp_cuts(least);
    if (!cuts) continue;
    const int64_t need = evaluate(p, *cuts).memory_bytes[m];
    options += cat(options.empty() ? "" : ", or of ", p.machines[m].name, " to at least ", megabytes(need), " (has ",
                   megabytes(p.machines[m].memory_bytes), ")");
    if (first < 0) {
      first = static_cast<int>(m);
      first_need = need;
    }
  }
  if (first >= 0)
    throw InfeasiblePlanError(cat("no placement fits the memory limits: raise the memory of ", options), first, first_need);
  // No single machine suffices: report what the fastest unconstrained placement needs everywhere.
  const Plan plan = evaluate(p, *fastest);
  std::string needs;
  for (size_t m = 0; m < p.machines.size(); ++m)
    needs += cat(needs.empty() ? "" : ", ", p.machines[m].name, " ", megabytes(plan.memory_bytes[m]), " (has ",
                 p.machines[m].memory_bytes ? megabytes(p.machines[m].memory_bytes) : std::string("unlimited"), ")");
  throw InfeasiblePlanError(cat("no placement fits the memory limits, and raising one machine's is not enough: the "
                                "fastest placement needs ",
                                needs),
                            -1, 0);
}

}  // namespace

const char* to_string(Objective objective) { return objective == Objective::sum ? "sum" : "bottleneck"; }

void validate(const PlanProblem& p) {
  auto bad = [](const std::string& what) { throw ConfigError("placement problem: " + what); };
  if (p.stages.empty()) bad("no stages to place");
  if (p.machines.empty()) bad("no machines");
  if (p.parties.empty()) bad("no parties");
  if (p.hops.size() + 1 != p.parties.size())
    bad(cat(p.parties.size(), " parties need ", p.parties.size() - 1, " hops, got ", p.hops.size()));
  if (!p.nonempty.empty() && p.nonempty.size() != p.parties.size())
    bad(cat("nonempty has ", p.nonempty.size(), " entries for ", p.parties.size(), " parties"));
  for (const auto& m : p.machines) {
    if (!(m.speed > 0) || !std::isfinite(m.speed)) bad(cat("machine ", m.name, ": speed must be > 0, got ", m.speed));
    if (m.memory_bytes < 0) bad(cat("machine ", m.name, ": memory must be >= 0 (0 = unlimited)"));
  }
  for (int m : p.parties)
    if (m < 0 || static_cast<size_t>(m) >= p.machines.size()) bad(cat("party on machine ", m, ", which does not exist"));
  size_t needed = 0;
  for (size_t k = 0; k < p.parties.size(); ++k) needed += required(p, k) ? 1 : 0;
  if (needed > p.stages.size())
    bad(cat(needed, " parties must each hold a stage, but there are only ", p.stages.size(), " stages"));
  for (const auto& s : p.stages) {
    if (!(s.forward_seconds >= 0) || !(s.backward_seconds >= 0) || !std::isfinite(s.forward_seconds) ||
        !std::isfinite(s.backward_seconds))
      bad(cat("stage ", s.name, ": times must be finite and >= 0"));
    if (s.param_bytes < 0 || s.trainable_bytes < 0 || s.activation_bytes < 0 || s.output_bytes < 0 ||
        s.output_grad_bytes < 0)
      bad(cat("stage ", s.name, ": byte counts must be >= 0"));
  }
  if (!(p.optimizer_state_copies >= 0)) bad("optimizer_state_copies must be >= 0");
  if (!p.cut_range.empty() && p.cut_range.size() != p.hops.size())
    bad(cat("cut_range has ", p.cut_range.size(), " entries for ", p.hops.size(), " hops"));
  for (const auto& [first, last] : p.cut_range)
    if (first > last) bad(cat("empty cut range [", first, ", ", last, "]"));
  for (const auto& h : p.hops)
    if (h.extra_forward_bytes < 0) bad("extra_forward_bytes must be >= 0");
}

Plan evaluate(const PlanProblem& p, const std::vector<int64_t>& cuts) {
  validate(p);
  const size_t K = p.parties.size();
  const int64_t S = static_cast<int64_t>(p.stages.size());
  if (cuts.size() + 1 != K) throw ConfigError(cat("placement: ", K, " parties need ", K - 1, " cuts, got ", cuts.size()));
  std::vector<int64_t> bounds{0};
  bounds.insert(bounds.end(), cuts.begin(), cuts.end());
  bounds.push_back(S);
  for (size_t k = 0; k < K; ++k) {
    if (bounds[k + 1] < bounds[k] || bounds[k + 1] > S)
      throw ConfigError(cat("placement: cuts must be non-decreasing within 0..", S));
    if (required(p, k) && bounds[k + 1] == bounds[k])
      throw ConfigError(cat("placement: party ", k, " (", p.machines[static_cast<size_t>(p.parties[k])].name,
                            ") must hold at least one stage"));
    if (k + 1 < K && !in_range(p, k, bounds[k + 1]))
      throw ConfigError(cat("placement: cut ", k, " at ", bounds[k + 1], " is outside its range [", p.cut_range[k].first,
                            ", ", p.cut_range[k].second, "]"));
  }
  Plan plan;
  plan.cuts = cuts;
  plan.compute_seconds.assign(K, 0.0);
  plan.transfer_seconds.assign(K - 1, 0.0);
  plan.memory_bytes.assign(p.machines.size(), 0);
  std::vector<double> machine_compute(p.machines.size(), 0.0);
  for (size_t k = 0; k < K; ++k) {
    const size_t m = static_cast<size_t>(p.parties[k]);
    double work = 0;
    for (int64_t s = bounds[k]; s < bounds[k + 1]; ++s) {
      const auto& st = p.stages[static_cast<size_t>(s)];
      work += st.forward_seconds + st.backward_seconds;
      plan.memory_bytes[m] += stage_memory(p, st);
    }
    plan.compute_seconds[k] = work / p.machines[m].speed;
    machine_compute[m] += plan.compute_seconds[k];
    plan.step_seconds += plan.compute_seconds[k];
    if (k + 1 < K) {
      plan.transfer_seconds[k] = hop_seconds(p, k, bounds[k + 1]);
      plan.step_seconds += plan.transfer_seconds[k];
    }
  }
  if (p.objective == Objective::sum) {
    plan.objective = plan.step_seconds;
  } else {
    plan.objective = 0;
    for (double c : machine_compute) plan.objective = std::max(plan.objective, c);
    for (double t : plan.transfer_seconds) plan.objective = std::max(plan.objective, t);
  }
  plan.feasible = true;
  for (size_t m = 0; m < p.machines.size(); ++m) {
    const Machine& machine = p.machines[m];
    if (machine.memory_bytes > 0 && plan.memory_bytes[m] > machine.memory_bytes) {
      if (plan.feasible)
        plan.limit = cat(machine.name, " memory ", megabytes(plan.memory_bytes[m]), " > ", megabytes(machine.memory_bytes));
      plan.feasible = false;
    }
  }
  return plan;
}

std::vector<Plan> enumerate_plans(const PlanProblem& p) {
  validate(p);
  const size_t K = p.parties.size();
  const int64_t S = static_cast<int64_t>(p.stages.size());
  // Stages that parties k.. must at least hold, so that a prefix never strands a required party.
  std::vector<int64_t> reserve(K + 1, 0);
  for (size_t k = K; k-- > 0;) reserve[k] = reserve[k + 1] + (required(p, k) ? 1 : 0);
  std::vector<Plan> plans;
  std::vector<int64_t> cuts;
  std::function<void(size_t, int64_t)> place = [&](size_t k, int64_t pos) {
    if (k + 1 == K) {
      plans.push_back(evaluate(p, cuts));
      return;
    }
    for (int64_t end = pos + (required(p, k) ? 1 : 0); end + reserve[k + 1] <= S; ++end) {
      if (!in_range(p, k, end)) continue;
      cuts.push_back(end);
      place(k + 1, end);
      cuts.pop_back();
    }
  };
  place(0, 0);
  return plans;
}

Plan solve(const PlanProblem& p) {
  validate(p);
  const auto cuts = dp_cuts(p);
  if (!cuts) throw_infeasible(p);
  return evaluate(p, *cuts);
}

Plan brute_force(const PlanProblem& p) {
  std::optional<Plan> best;
  for (auto& plan : enumerate_plans(p))
    if (plan.feasible && (!best || plan.objective < best->objective)) best = std::move(plan);
  if (!best) throw_infeasible(p);
  return *best;
}

}  // namespace fedsplit
