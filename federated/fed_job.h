// `run.mode = federated`: federated training under mpirun. Rank 0 is the server; the other ranks host
// the clients (client c on rank 1 + c mod (size-1)); in a world of one, rank 0 is the server and hosts
// every client. Both shapes run the same code: the same messages, checks and byte counts.
//
// Each round: the server samples clients (seeded), broadcasts the global parameters (flora: the last
// stacked update), every sampled client trains locally from them and sends its update back, the
// server checks each update and aggregates those that pass, applies the server optimizer, evaluates
// the global model on every client's held-out split, writes metrics.jsonl and checkpoints.
// The run directory gets partition.json (who holds what), metrics.jsonl, checkpoint.h5 (the server's,
// every round), summary.json, and the result: model/ (full FedAvg, flora) or adapter/ (PEFT methods).
#pragma once
#include <string>

#include "federated/attacks.h"
#include "federated/dp_aggregator.h"
#include "federated/local_training.h"
#include "federated/options.h"
#include "federated/secure_round.h"
#include "federated/topology.h"
#include "peft/method.h"
#include "train/lm_job.h"

namespace fedsplit {

struct FederatedJobOptions {
  LmJobOptions lm;        ///< [run], [model], [data], [train] (train.lr etc. drive the clients' optimizer)
  PeftOptions peft;       ///< [peft]: what the clients train (none = the whole model)
  FederatedOptions fed;   ///< [federated], [network]
  AttackOptions attack;   ///< [attack]: simulated malicious clients
  RobustOptions robust;   ///< [robust]: rule (none = plain aggregation) and its parameters
  PrivacyOptions privacy; ///< [privacy]: client-level DP
  SecureOptions secure;   ///< [secure]: secure aggregation
  TopologyOptions topology; ///< [topology]: cloud, edges and devices (hierarchical FedAvg); flat when absent
  /// Optional: the loss clients train on in place of next-token cross-entropy (e.g. distillation from
  /// a teacher, built by launch/ from [distill]; federated/ sits below compress/).
  LocalLossFn client_loss;
};

struct FederatedResult {
  int64_t rounds = 0;       ///< rounds completed in total
  double val_loss = 0;      ///< held-out loss of the final global model over every client's split
};

/// Runs the federated job on this process's rank. `recipe_ini` is the resolved recipe (compared with
/// the run directory's); `resume` continues from the server checkpoint. Throws ConfigError for keys
/// that do not fit together, CommError when a peer fails.
FederatedResult run_federated_job(const FederatedJobOptions& options, const std::string& recipe_ini, bool resume);

}  // namespace fedsplit
