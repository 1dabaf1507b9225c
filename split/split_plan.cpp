#include "split/split_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/util/error.h"
#include "core/util/format.h"
#include "core/util/log.h"

namespace fedsplit {

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr int kDevice = 0, kServer = 1;

}  // namespace

const char* to_string(SplitScheme scheme) { return scheme == SplitScheme::vanilla ? "vanilla" : "ushaped"; }

SplitScheme parse_scheme(const std::string& name, const std::string& where) {
  if (name == "vanilla") return SplitScheme::vanilla;
  if (name == "ushaped") return SplitScheme::ushaped;
  throw ConfigError(where + ": scheme '" + name + "' is not one of vanilla|ushaped");
}

PlanProblem split_problem(const LayerProfile& profile, const DevicesProfile& devices, SplitScheme scheme) {
  // Stages: embed, block 0 .. block L-1, head; boundary b means the next party starts at stage b.
  const auto L = static_cast<int64_t>(profile.stages.size()) - 2;
  if (L < 2)
    throw ConfigError(cat("split learning needs a model of at least 2 blocks (one per side), this one has ",
                          std::max<int64_t>(L, 0)));
  PlanProblem p;
  for (const auto& s : profile.stages) {
    StageCost c;
    c.name = s.name;
    c.forward_seconds = s.forward_seconds;
    c.backward_seconds = s.backward_seconds;
    c.param_bytes = s.param_bytes;
    c.trainable_bytes = s.trainable_bytes;
    c.activation_bytes = s.activation_bytes;
    c.output_bytes = c.output_grad_bytes = s.cut_bytes;
    p.stages.push_back(c);
  }
  // Vanilla puts the head on the server, the embedding on the device: the server needs its own copy of
  // a tied matrix (trained as the embedding is). U-shaped keeps both ends on the device.
  if (scheme == SplitScheme::vanilla && !profile.stages.empty()) {
    const StageProfile& embed = profile.stages.front();
    StageCost& head = p.stages.back();
    head.param_bytes += profile.stages.back().tied_bytes;
    if (embed.trainable_bytes > 0) head.trainable_bytes += profile.stages.back().tied_bytes;
  }
  const auto mib = [](int64_t mb) { return mb * (int64_t{1} << 20); };
  p.machines = {Machine{"device", devices.device_speed, mib(devices.device_memory_mb)},
                Machine{"server", devices.server_speed, mib(devices.server_memory_mb)}};
  // Each side keeps at least one block: split.cut = c in 1 .. L-1 (vanilla), and for U-shape
  // split.tail_cut = c2 in c+1 .. L (the tail may be the head alone).
  if (scheme == SplitScheme::vanilla) {
    p.parties = {kDevice, kServer};
    const int64_t labels = profile.options.batch_size * profile.options.seq_len * 4;  // int32 token ids
    p.hops = {Hop{devices.link, true, labels}};
    p.cut_range = {{2, L}};
  } else {
    p.parties = {kDevice, kServer, kDevice};
    p.hops = {Hop{devices.link, true, 0}, Hop{devices.link, false, 0}};
    p.cut_range = {{2, L}, {3, L + 1}};
  }
  p.nonempty.assign(p.parties.size(), true);
  p.objective = Objective::sum;  // split learning runs device and server one after the other
  return p;
}

std::string describe_cuts(const PlanProblem& problem, const Plan& plan) {
  std::string text;
  for (int64_t cut : plan.cuts)
    text += (text.empty() ? "after " : "; after ") + problem.stages[static_cast<size_t>(cut - 1)].name;
  return text;
}

std::string plan_table(const PlanProblem& problem, const std::vector<Plan>& plans) {
  size_t width = 3;
  for (const auto& plan : plans) width = std::max(width, describe_cuts(problem, plan).size());
  char line[256];
  const int w = static_cast<int>(width);
  std::snprintf(line, sizeof line, "%-*s %10s %10s %10s %10s %11s %11s  %s\n", w, "cut", "device s", "server s",
                "transfer s", "total s", "device MB", "server MB", "fits");
  std::string out = line;
  for (const auto& plan : plans) {
    double device = 0, server = 0, transfer = 0;
    for (size_t k = 0; k < plan.compute_seconds.size(); ++k)
      (problem.parties[k] == kDevice ? device : server) += plan.compute_seconds[k];
    for (double t : plan.transfer_seconds) transfer += t;
    std::snprintf(line, sizeof line, "%-*s %10.4f %10.4f %10.4f %10.4f %11.1f %11.1f  %s\n", w,
                  describe_cuts(problem, plan).c_str(), device, server, transfer, plan.step_seconds,
                  plan.memory_bytes[kDevice] / kMiB, plan.memory_bytes[kServer] / kMiB,
                  plan.feasible ? "yes" : ("no: " + plan.limit).c_str());
    out += line;
  }
  return out;
}

std::string describe_choice(const PlanProblem& problem, const Plan& plan) {
  double device = 0, server = 0, transfer = 0;
  for (size_t k = 0; k < plan.compute_seconds.size(); ++k)
    (problem.parties[k] == kDevice ? device : server) += plan.compute_seconds[k];
  for (double t : plan.transfer_seconds) transfer += t;
  // Boundary b starts the next party at stage b = block b-1: split.cut = b - 1.
  std::string keys = cat("split.cut = ", plan.cuts.at(0) - 1);
  if (plan.cuts.size() > 1) keys += cat(", split.tail_cut = ", plan.cuts[1] - 1);
  return cat("chosen cut: ", describe_cuts(problem, plan), " (", keys, "): ", fixed(plan.step_seconds, 4),
             " s per step (device ",
             fixed(device, 4), " s, server ", fixed(server, 4), " s, transfer ", fixed(transfer, 4), " s; device ",
             fixed(plan.memory_bytes[kDevice] / kMiB, 1), " MB, server ", fixed(plan.memory_bytes[kServer] / kMiB, 1),
             " MB)");
}

std::string infeasible_message(const InfeasiblePlanError& error, const DevicesProfile& devices) {
  const char* section = error.machine == kDevice ? "device" : "server";
  if (error.machine < 0)
    return cat(devices.path, ": ", error.what(), "; raise device.memory_mb and server.memory_mb");
  const auto needed_mb = static_cast<int64_t>(std::ceil(static_cast<double>(error.needed_bytes) / kMiB));
  const int64_t has = error.machine == kDevice ? devices.device_memory_mb : devices.server_memory_mb;
  return cat(devices.path, ": ", error.what(), ", i.e. set ", section, ".memory_mb to at least ", needed_mb, " (it is ",
             has, ")");
}

}  // namespace fedsplit
