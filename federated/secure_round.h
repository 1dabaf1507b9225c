// Secure aggregation inside a federated round (`[secure] aggregation = secagg`). After the round
// message, the sampled clients train as usual, but each one encodes its update (minus the round's
// global values, times its FedAvg weight) on the ring (federated/fixed_point.h) and takes part in the
// protocol of federated/secagg.h; rank 0 learns only the survivors' sum. Every rank runs the same
// four exchanges, whatever clients it hosts: one bundle per rank and step goes to rank 0 and rank 0's
// key list, forwarded shares and survivors list come back, so the ranks stay in step.
//
// With `privacy.dp = distributed`, each client clips its delta to privacy.clip and adds Gaussian noise
// of std σ·C/√m (m = federated.min_clients) before encoding: a round whose sum is revealed has at least
// m survivors, so the sum carries noise of std >= σ·C, as central DP-FedAvg's does. A round with fewer
// than m survivors is aborted before any unmasking share is asked for.
// Simulated dropouts (secure.dropout_fraction) stop a seeded share of the sampled clients at a stage.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "federated/fixed_point.h"

namespace fedsplit {

class Recipe;
class World;
class UpdateSource;
struct ClientRoster;
struct PrivacyOptions;

struct SecureOptions {
  std::string aggregation = "none";      ///< none | secagg
  int64_t neighbours = 0;                ///< SecAgg+ neighbours per client; 0 = all (Bonawitz)
  double threshold = 0.5;                ///< share of a client's neighbours that must survive to rebuild its secrets
  double range = 1.0;                    ///< largest |value| of an update delta; larger ones are clamped (and counted)
  double dropout_fraction = 0;           ///< simulation: share of sampled clients that drop mid-round
  std::string dropout_stage = "masked";  ///< advertise | share | masked | unmask: the step they fail to send
};

/// Registers the [secure] keys.
void bind_secure_options(Recipe& recipe, SecureOptions& options);

/// What rank 0 knows of one client besides the sum: its protocol traffic, its reported compute (for
/// bytes and simulated time) and, under local DP-SGD, the steps it charges to its privacy ledger.
struct SecureClientReport {
  int64_t bytes_up = 0, bytes_down = 0;
  double tokens = 0, wall_s = 0;
  nlohmann::json dp_sgd;  ///< {"q", "sigma", "steps"} (null without local DP-SGD)
};

/// What rank 0 learns from one secure round.
struct SecureOutcome {
  std::vector<int64_t> survivors;       ///< clients whose input is in the sum
  std::optional<UpdateEncoding::Sum> sum;  ///< empty when the round aborted
  std::string aborted;                  ///< why nothing was revealed ("" otherwise)
  std::vector<std::pair<int64_t, std::string>> excluded;  ///< sampled clients not in the sum, and why
  nlohmann::json stages;                ///< clients at each step: sampled, advertised, shared, masked, unmasked
  std::map<int64_t, SecureClientReport> costs;
};

struct SecureRoundContext {
  const SecureOptions& secure;
  const PrivacyOptions& privacy;
  const ClientRoster& roster;
  const UpdateEncoding& encoding;
  int64_t min_clients = 1;
  double deadline_s = 0;                 ///< simulated seconds per client (0 = none), as in plain rounds
  std::string link;                      ///< network.link, for the deadline's transfer time
  uint64_t seed = 0;
};

/// ConfigError (one line, naming the keys) for what secure aggregation cannot combine with: robust rules
/// (they need each update), central DP (the server cannot clip what it cannot see), LoRA aggregations
/// other than fedavg and ffa; and for privacy.dp = distributed without secure aggregation.
void check_secure_options(const SecureOptions& secure, const PrivacyOptions& privacy, const std::string& robust_rule,
                          const std::string& lora_aggregation);

/// The sum_bound to build the round's UpdateEncoding with: range for FedAvg weights (they sum to at
/// most 1), range times the clients per round under distributed DP (each adds a whole clipped delta).
double secure_sum_bound(const SecureOptions& secure, const PrivacyOptions& privacy, int64_t per_round);

/// Runs the secure part of attempt `attempt` of `round` on this rank: the sampled clients it hosts
/// train (through `host`, after its on_round) and take part; rank 0 serves. The outcome on rank 0,
/// nothing elsewhere. Throws CommError when a rank fails.
std::optional<SecureOutcome> run_secure_round(World& world, UpdateSource& host, const SecureRoundContext& context,
                                              const std::vector<int64_t>& sample, int64_t round, int64_t attempt);

}  // namespace fedsplit
