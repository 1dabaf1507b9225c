// The [federated] and [network] recipe sections: how clients are formed, sampled and trained, how the
// server aggregates, and the simulated network. `run.mode = federated` reads them.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/data/partition.h"
#include "federated/robust_aggregation.h"
#include "federated/server_optimizer.h"

namespace fedsplit {

class Recipe;

struct FederatedOptions {
  int64_t rounds = 10;                  ///< communication rounds
  PartitionOptions partition;           ///< scheme, clients, alpha, min_documents (seed = run.seed)
  std::string partition_key;            ///< metadata key of natural / dirichlet partitions (e.g. president)
  double sample_fraction = 1.0;         ///< share of clients sampled per round (when sample_count = 0)
  int64_t sample_count = 0;             ///< clients sampled per round; 0 = use sample_fraction
  int64_t min_clients = 1;              ///< fewest valid updates a round needs; else it is retried
  int64_t round_retries = 2;            ///< retries (with a fresh sample) of a round short of min_clients
  int64_t local_steps = 10;             ///< optimizer steps per client per round (when local_epochs = 0)
  double local_epochs = 0;              ///< passes over the client's training windows per round; 0 = local_steps
  std::string client_optimizer = "adamw";  ///< adamw | sgd; state starts fresh every round
  double client_momentum = 0;           ///< sgd momentum
  double fedprox_mu = 0;                ///< FedProx proximal weight (0 = FedAvg's local objective)
  ServerOptimizerOptions server;        ///< rule (fedavg | fedavgm | fedadagrad | fedyogi | fedadam), lr, betas, tau
  std::string lora_aggregation = "fedavg";  ///< fedavg | hetlora | flora | ffa (peft.method = lora)
  std::string client_ranks;             ///< per-client LoRA ranks: numbers dealt to clients in turn, or name=rank items
  double deadline_s = 0;                ///< simulated seconds a client has per round; later ones are left out (0 = none)
  double client_tokens_per_s = 20000;   ///< nominal client compute speed, for simulated time
  std::string client_speeds;            ///< "name=tokens_per_s" items: a client's own speed (overrides the two below)
  double straggler_fraction = 0;        ///< share of clients (seeded) that compute straggler_slowdown times slower
  double straggler_slowdown = 4;        ///< slowdown factor of a straggler
  int64_t eval_every = 1;               ///< rounds between held-out evaluations of the global model (and the last)
  int64_t eval_batches = 8;             ///< held-out batches per client per evaluation (0 = all)
  std::string faults;                   ///< testing aid: "client=kind" items, kind nonfinite | shape | dtype | silent
  std::string backend = "auto";         ///< auto | gloo | nccl
  double comm_timeout_s = 600;          ///< every wait on a peer fails after this
  std::string link;                     ///< client link "up_mbps/down_mbps/latency_ms"; empty = no link model
};

/// Registers the [federated] keys (and [network] link) of `recipe` on `options`.
void bind_federated_options(Recipe& recipe, FederatedOptions& options);

/// Registers the [robust] keys: robust.rule, which defaults to none (the aggregation of [federated]),
/// and the rules' parameters.
void bind_robust_options(Recipe& recipe, RobustOptions& options);

/// The LoRA rank of each client (names in partition order) from federated.client_ranks: bare numbers
/// are dealt to clients in turn ("8 4 2": client 0 gets 8, client 1 gets 4, ...), "name=r" items set a
/// named client (they win); clients left without a rank get `global_rank`. ConfigError for a rank
/// outside 1..global_rank or a name that is no client.
std::vector<int64_t> client_lora_ranks(const std::string& spec, const std::vector<std::string>& client_names,
                                       int64_t global_rank);

/// The index of the client `name` (its partition name, or its index as a number) among `client_names`.
/// ConfigError naming recipe key `key` and listing some clients otherwise.
int64_t find_client(const std::string& name, const std::vector<std::string>& client_names, const std::string& key);

/// Parses "name=number" items of recipe key `key` into client index -> value. ConfigError for an item
/// that is not client=number, a value outside [min, max], or an unknown client.
std::map<int64_t, double> parse_client_values(const std::string& spec, const std::vector<std::string>& client_names,
                                              const std::string& key, double min, double max);

/// Parses federated.faults into client index -> kind. ConfigError for an unknown client or kind.
std::map<int64_t, std::string> parse_faults(const std::string& spec, const std::vector<std::string>& client_names);

}  // namespace fedsplit
