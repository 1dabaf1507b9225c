// The clients one rank hosts: for each client the round samples, load the round's global parameters
// into the rank's single model, train locally on the client's own data, and return its update as a
// message. Every choice is seeded by (run seed, round, client), so a client computes the same update
// whichever rank hosts it and whether or not the run was resumed.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "federated/attacks.h"
#include "federated/local_training.h"
#include "core/comm/message.h"
#include "federated/participant.h"

namespace fedsplit {

/// What every rank knows about every client (the partition is computed identically on each rank).
struct ClientRoster {
  std::vector<std::string> names;      ///< partition order
  std::vector<int64_t> lora_ranks;     ///< LoRA rank per client (the global rank without LoRA)
  std::vector<bool> stragglers;        ///< computes straggler_slowdown times slower
  std::vector<double> speeds;          ///< training tokens per simulated second (stragglers and client_speeds applied)
  std::vector<int64_t> local_steps;    ///< optimizer steps per round
  std::vector<int64_t> samples;        ///< training windows: the FedAvg weight
  std::map<int64_t, std::string> faults;  ///< testing aid: client -> fault it injects
  std::map<int64_t, std::string> attacks; ///< attack simulation: client -> attack kind
};

/// Where a round's updates come from: clients training here (ClientHost) or, at a hierarchy's cloud
/// tier, the edges' models.
class UpdateSource {
 public:
  virtual ~UpdateSource() = default;
  /// `client`'s update message for the current round, encoded.
  virtual std::string train_client(int64_t client) = 0;
  /// The global parameters the updates are measured against.
  virtual const TensorMap& round_global() const = 0;
};

class ClientHost : public UpdateSource {
 public:
  /// `shares_server_model`: this rank is also the server (a world of one), whose model already holds
  /// every flora merge.
  ClientHost(Participant& participant, std::vector<TokenDataset>& datasets, const ClientRoster& roster,
             LocalTrainingOptions training, AttackOptions attack, uint64_t seed, bool shares_server_model);

  /// Takes a round message: its global parameters, or (flora) the stacked update to merge once.
  void on_round(const Message& round);
  /// Trains `client` for the current round and returns its update message, encoded.
  std::string train_client(int64_t client) override;
  /// The global parameters clients start from this round (what their updates are measured against).
  const TensorMap& round_global() const override { return global_; }

 private:
  Participant& participant_;
  std::vector<TokenDataset>& datasets_;
  const ClientRoster& roster_;
  LocalTrainingOptions training_;
  AttackOptions attack_;
  uint64_t seed_;
  bool shares_server_model_;
  int64_t round_ = 0;
  int64_t merged_stack_round_ = -1;
  TensorMap global_;
};

}  // namespace fedsplit
