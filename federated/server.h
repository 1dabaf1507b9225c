// The server's side of a round: the message every client starts from, the checks each update must
// pass (the sender, round, tensor names, shapes, dtype, finite values, the deadline), aggregation of
// the updates that pass, the server optimizer's step, and the round's traffic and simulated time.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/comm/link_model.h"
#include "federated/aggregator.h"
#include "federated/client_host.h"
#include "federated/client_privacy.h"
#include "core/comm/message.h"
#include "federated/options.h"
#include "federated/participant.h"
#include "federated/dp_aggregator.h"
#include "federated/rdp_accountant.h"
#include "federated/robust_aggregation.h"
#include "federated/secure_round.h"
#include "federated/server_optimizer.h"

namespace fedsplit {

/// What a round did, for metrics.jsonl.
struct RoundReport {
  int64_t round = 0;
  int64_t attempt = 0;
  int64_t sampled = 0;
  int64_t aggregated = 0;
  nlohmann::json excluded = nlohmann::json::array();  ///< [{"client", "reason"}]
  nlohmann::json robust;       ///< what the robust rule decided (null without one)
  nlohmann::json privacy;      ///< DP: epsilon so far, delta, clip, clipped clients; "local": local DP-SGD's
                               ///< largest client epsilon (null without either)
  nlohmann::json tiers;        ///< hierarchical runs: bytes, rounds and simulated time per tier (null when flat)
  nlohmann::json secure;       ///< secure aggregation: clients at each step, clamped values (null without)
  double train_loss = 0;       ///< sample-weighted mean local loss of the aggregated clients
  int64_t bytes_up = 0;        ///< message bytes the sampled clients sent
  int64_t bytes_down = 0;      ///< message bytes the sampled clients received
  double sim_network_s = 0;    ///< slowest aggregated client's simulated transfer time
  double sim_round_s = 0;      ///< simulated round time: slowest aggregated client, or the deadline
  double client_wall_s = 0;    ///< measured local training time, summed over clients
  bool complete = false;       ///< at least min_clients updates were aggregated
};

class Server {
 public:
  /// `global_rank`: the LoRA rank of the global adapters (peft.r; 0 without LoRA). With `robust` (not
  /// null) a RobustAggregator combines the updates; ConfigError when the LoRA aggregation makes client
  /// updates of different shapes.
  /// With `privacy` (dp = central) a DpAggregator clips and noises the updates and an RDP accountant
  /// charges every round; `seed` draws the noise. With privacy->local_dp_sgd a ledger charges every
  /// client's DP-SGD steps from its updates. Under secure aggregation rounds end in
  /// finish_secure_round instead (check_secure_options says what combines with it).
  Server(Participant& participant, const ClientRoster& roster, const FederatedOptions& options, int64_t global_rank,
         const RobustOptions* robust = nullptr, const PrivacyOptions* privacy = nullptr, uint64_t seed = 0);

  TensorMap& global() { return global_; }
  ServerOptimizer& optimizer() { return optimizer_; }
  /// flora: the last aggregated stack and its round (-1 before the first).
  const TensorMap& stack() const { return stack_; }
  int64_t stack_round() const { return stack_round_; }
  void set_stack(TensorMap stack, int64_t round) { stack_ = std::move(stack); stack_round_ = round; }

  /// The message that starts attempt `attempt` of `round`: the global parameters, or flora's stack.
  Message round_message(int64_t round, int64_t attempt) const;
  /// Starts collecting the updates of `sample`; `round_bytes` is the encoded round message's size.
  void begin_round(int64_t round, int64_t attempt, const std::vector<int64_t>& sample, int64_t round_bytes);
  /// One update, which must come from `client` (hosted by rank `from_rank`); a bad one is left out
  /// of the round with its reason logged.
  void receive(const std::string& bytes, int64_t client, int from_rank);
  /// Aggregates and steps the global model if enough updates passed; the round's report either way.
  RoundReport finish_round();
  /// Ends a secure round: the survivors' unmasked sum (weighted deltas, or noised clipped deltas under
  /// distributed DP) steps the global model; the report counts the protocol's bytes and dropouts.
  RoundReport finish_secure_round(const SecureOutcome& outcome);

  /// HierFAVG edges: the model becomes the round's aggregate itself, without the server optimizer.
  void set_assign_aggregate(bool on) { assign_aggregate_ = on; }
  /// An edge's sampling: `per_round` of its `population` devices (DP's denominator and sampling rate).
  void set_sampling(int64_t per_round, int64_t population);

  /// DP state for checkpoints: the accountant's RDP per order and the current clip, the local DP-SGD
  /// ledger under "local" (JSON), and back.
  nlohmann::json privacy_state() const;
  void load_privacy_state(const nlohmann::json& state);

  /// The robust rule's per-client trust (empty without the trust rule), for checkpoints.
  std::map<int64_t, double> trust() const;
  void load_trust(std::map<int64_t, double> trust);
  /// What a checkpoint keeps of this server besides its model: {"privacy": privacy_state(), "trust":
  /// {client: trust}}; load_state takes the same (missing keys are left as they are).
  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

 private:
  void exclude(int64_t client, const std::string& reason);
  /// Charges a released round to the DP accountant and reports epsilon (and local DP-SGD's largest).
  void account_privacy();
  std::string check_update(const Message& update, int64_t client, int from_rank) const;

  Participant& participant_;
  const ClientRoster& roster_;
  const FederatedOptions& options_;
  std::optional<LinkClass> link_;
  TensorMap global_;
  ServerOptimizer optimizer_;
  std::unique_ptr<Aggregator> aggregator_;
  RobustAggregator* robust_ = nullptr;  // aggregator_ when a robust rule combines the updates
  DpAggregator* dp_ = nullptr;          // aggregator_ under client-level DP
  const PrivacyOptions* privacy_ = nullptr;
  std::unique_ptr<RdpAccountant> accountant_;
  std::unique_ptr<ClientPrivacyLedger> local_dp_;  // local DP-SGD: each client's steps
  uint64_t seed_ = 0;
  double sampling_rate_ = 1;
  TensorMap stack_;
  int64_t stack_round_ = -1;
  RoundReport report_;
  std::vector<int64_t> sample_;
  int64_t expected_clients_ = 1;
  int64_t round_bytes_ = 0;
  bool assign_aggregate_ = false;
  double loss_sum_ = 0, weight_sum_ = 0;
};

}  // namespace fedsplit
