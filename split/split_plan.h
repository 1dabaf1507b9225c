// The cut planner for split learning: turns a layer profile and a devices.ini into a placement
// problem (split/planner.h), and prints the per-cut table the choice was made from.
//
// The placements are those split/cut.h runs (SplitCut: 1 <= cut < tail_cut <= L):
// vanilla:  device [embed, blocks 0 .. c-1] -> server [blocks c .. L-1, head]; activations go up,
//           gradients come down, and the labels go up (B x T int32 token ids, a message of their own,
//           as split/split_step.h sends them).
// ushaped:  device [embed, blocks 0 .. c-1] -> server [blocks c .. c2-1] -> device [blocks c2 .. L-1,
//           head]; the device holds both of its ranges in memory at once and keeps the labels.
// Per step the planner adds compute on each side and one message each way per cut; the codec's
// message header (tens of bytes) and the int8 codec's per-token scales are left out. With a tied
// head, a server that holds the head without the embedding keeps (and trains) its own copy of the
// embedding matrix.
#pragma once
#include <string>
#include <vector>

#include "split/devices_profile.h"
#include "split/layer_profile.h"
#include "split/planner.h"

namespace fedsplit {

enum class SplitScheme { vanilla, ushaped };

const char* to_string(SplitScheme scheme);
/// Parses vanilla|ushaped; ConfigError naming `where` otherwise.
SplitScheme parse_scheme(const std::string& name, const std::string& where);

/// The placement problem: machines device (0) and server (1), parties by scheme, objective sum.
/// ConfigError if the model has fewer than 2 blocks (each side needs one).
PlanProblem split_problem(const LayerProfile& profile, const DevicesProfile& devices, SplitScheme scheme);

/// "after block 3" (vanilla) or "after embed; after block 5" (ushaped): where the cuts of a plan sit.
std::string describe_cuts(const PlanProblem& problem, const Plan& plan);

/// One row per placement: cut, device s, server s, transfer s, total s, device MB, server MB, fits.
std::string plan_table(const PlanProblem& problem, const std::vector<Plan>& plans);

/// The chosen plan on one line, with its breakdown and the recipe keys split.cut (and split.tail_cut).
std::string describe_choice(const PlanProblem& problem, const Plan& plan);

/// The planner's infeasible error in the words of devices.ini: which memory_mb key to raise, to what.
std::string infeasible_message(const InfeasiblePlanError& error, const DevicesProfile& devices);

}  // namespace fedsplit
