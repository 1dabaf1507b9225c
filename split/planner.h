// Placement planner: splits a chain of stages (embedding, blocks, head) into contiguous ranges, one per
// party of a chain (device -> server for split learning; device -> server -> device for the U-shaped
// scheme; K pipeline stages for inference), to minimise the time of one step.
//
// Cost model (per training step; times measured on a profiling machine, scaled by each machine's speed):
//   compute(party)  = sum over its stages of (forward_seconds + backward_seconds) / speed(machine)
//   transfer(hop k) = activations forward + gradients backward across the boundary between party k and
//                     k+1, one message each way, over that hop's link (core/comm/link_model.h), plus the
//                     hop's fixed per-step message if any (vanilla split learning's labels); nothing
//                     crosses at position 0 or at the end of the chain (the token ids and the loss are not
//                     modelled), and a hop between parties on the same machine, or without a link, is free.
//   memory(machine) = sum over the stages its parties hold of
//                       param_bytes + trainable_bytes * (1 + optimizer_state_copies) + activation_bytes
//                     i.e. weights, a gradient per trainable weight, the optimizer's state (AdamW keeps 2
//                     copies: first and second moments) and the activations kept for backward. A machine
//                     that appears twice in the chain (U-shaped: the device) holds both ranges at once.
//   objective sum        = sum of every compute and transfer (sequential split learning: nothing overlaps)
//   objective bottleneck = max over machines of their summed compute and over hops of their transfer
//                          (the steady-state period of a pipeline, where all of them work at once)
//
// Constraints: memory, parties that must hold a stage, and for each hop an optional range of boundaries
// (split learning keeps a block on each side).
//
// solve() is dynamic programming over (party, boundary); machines that recur later in the chain make
// the memory constraint non-local, so each DP cell keeps the Pareto set of (objective so far, memory and
// compute already placed on recurring machines) -- exact, and a single label per cell when no machine
// recurs. brute_force() evaluates every placement and is the reference the tests hold the DP to.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/comm/link_model.h"
#include "core/util/error.h"

namespace fedsplit {

/// One stage of the chain, as measured on the profiling machine.
struct StageCost {
  std::string name;               ///< e.g. "embed", "block 3", "head"
  double forward_seconds = 0;     ///< forward time per step on the profiling machine
  double backward_seconds = 0;    ///< backward time per step on the profiling machine (0 for inference)
  int64_t param_bytes = 0;        ///< weights the party holding this stage stores
  int64_t trainable_bytes = 0;    ///< of those, the bytes that train (each gets a gradient and optimizer state)
  int64_t activation_bytes = 0;   ///< memory kept from forward until backward (0 for inference)
  int64_t output_bytes = 0;       ///< bytes sent forward when a cut follows this stage
  int64_t output_grad_bytes = 0;  ///< bytes sent back (gradient of the output) when a cut follows this stage
};

/// A machine some parties run on.
struct Machine {
  std::string name;          ///< e.g. "device", "server"
  double speed = 1;          ///< compute speed relative to the profiling machine (2 = twice as fast); > 0
  int64_t memory_bytes = 0;  ///< memory available for the model's state; 0 = unlimited
};

/// The connection from party k to party k+1 of the chain.
struct Hop {
  std::optional<LinkClass> link;  ///< none: free (same machine, or not modelled)
  bool forward_upward = true;     ///< activations travel on the link's uplink (device -> server), gradients down
  int64_t extra_forward_bytes = 0;  ///< sent forward once per step wherever the cut is, in a message of its
                                    ///< own (vanilla split learning's labels); 0 = no such message
};

enum class Objective { sum, bottleneck };

struct PlanProblem {
  std::vector<StageCost> stages;   ///< the chain of stages, in execution order
  std::vector<Machine> machines;   ///< the machines
  std::vector<int> parties;        ///< machine index of each party, in chain order (K >= 1)
  std::vector<Hop> hops;           ///< K - 1 hops; hops[k] connects parties k and k+1
  std::vector<bool> nonempty;      ///< per party: must hold at least one stage (empty vector = all must)
  /// Per hop: the boundaries [first, last] it may sit at (boundary b: the next party starts at stage b);
  /// empty vector = anywhere.
  std::vector<std::pair<int64_t, int64_t>> cut_range;
  Objective objective = Objective::sum;
  double optimizer_state_copies = 2;  ///< optimizer state per trainable byte, in copies (AdamW: 2)
};

/// One placement and what it costs.
struct Plan {
  /// K - 1 boundaries: party k holds stages [bounds[k-1], bounds[k]) (with bounds[-1] = 0, bounds[K-1] = S).
  std::vector<int64_t> cuts;
  std::vector<double> compute_seconds;   ///< per party
  std::vector<double> transfer_seconds;  ///< per hop, forward + backward
  std::vector<int64_t> memory_bytes;     ///< per machine
  double step_seconds = 0;               ///< sum of every compute and transfer
  double objective = 0;                  ///< step_seconds (sum) or the bottleneck
  bool feasible = false;                 ///< every machine within its memory
  std::string limit;                     ///< why not: "device memory 612.0 MB > 512.0 MB"; empty if feasible
};

/// No placement fits the memory limits. `machine` is the machine whose limit to raise (-1: no single
/// one suffices) and `needed_bytes` the least memory it needs in a placement that fits the others.
struct InfeasiblePlanError : ConfigError {
  InfeasiblePlanError(const std::string& message, int machine, int64_t needed_bytes)
      : ConfigError(message), machine(machine), needed_bytes(needed_bytes) {}
  int machine;
  int64_t needed_bytes;
};

/// Throws ConfigError for a malformed problem (sizes, speeds, no stages, more non-empty parties than
/// stages, negative costs, empty cut ranges).
void validate(const PlanProblem& problem);

/// The costs of the placement `cuts` (K - 1 non-decreasing boundaries in 0..S). Throws ConfigError if
/// `cuts` is malformed, leaves a non-empty party empty or puts a cut outside its range.
Plan evaluate(const PlanProblem& problem, const std::vector<int64_t>& cuts);

/// Every placement that respects the non-empty constraints and cut ranges, feasible or not, in lexicographic order of
/// their cuts (for printing; its size grows as S^(K-1)).
std::vector<Plan> enumerate_plans(const PlanProblem& problem);

/// The feasible placement of least objective, by dynamic programming. Throws InfeasiblePlanError
/// (one line, naming the machine whose memory to raise and by how much) when none fits, ConfigError
/// when the cut ranges and non-empty parties admit no placement at all.
Plan solve(const PlanProblem& problem);

/// The same by evaluating every placement (the reference for solve; ties go to the first in order).
Plan brute_force(const PlanProblem& problem);

const char* to_string(Objective objective);

}  // namespace fedsplit
