// The cut planner for split learning: turns a layer profile and a devices.ini into a placement
// problem (split/planner.h), and prints the per-cut table the choice was made from.
//
// vanilla:  device [embed .. cut) -> server [cut .. head]; activations go up, gradients come down.
// ushaped:  device [embed .. a) -> server [a .. b) -> device [b .. head]; the device keeps the head and
//           the labels; it holds both of its ranges in memory at once.
// Every party holds at least one stage. Per step the planner adds compute on each side, one message
// each way per cut, and nothing else: the labels that vanilla split learning sends the server
// (B x T token ids, the same for every cut) are left out. With a tied head, a server that holds the
// head without the embedding keeps (and trains) its own copy of the embedding matrix.
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
PlanProblem split_problem(const LayerProfile& profile, const DevicesProfile& devices, SplitScheme scheme);

/// "after block 3" (vanilla) or "after embed; after block 5" (ushaped): where the cuts of a plan sit.
std::string describe_cuts(const PlanProblem& problem, const Plan& plan);

/// One row per placement: cut, device s, server s, transfer s, total s, device MB, server MB, fits.
std::string plan_table(const PlanProblem& problem, const std::vector<Plan>& plans);

/// The chosen plan on one line, with its breakdown.
std::string describe_choice(const PlanProblem& problem, const Plan& plan);

/// The planner's infeasible error in the words of devices.ini: which memory_mb key to raise, to what.
std::string infeasible_message(const InfeasiblePlanError& error, const DevicesProfile& devices);

}  // namespace fedsplit
