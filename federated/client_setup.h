// The clients of a run over partitioned data, as every rank computes them identically: each client's
// dataset (its own documents, split into train and held-out windows), its roster entry (name, LoRA
// rank, speed, local steps, FedAvg weight, simulated faults and attacks) and partition.json's record
// of who holds what; and the held-out evaluation of a model on every client's split. The federated
// and split-learning jobs both build their clients here, from the [federated] keys.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/data/dataset.h"
#include "core/model/decoder.h"
#include "federated/attacks.h"
#include "federated/client_host.h"
#include "federated/options.h"
#include "train/lm_job.h"

namespace fedsplit {

class World;
class Tokenizer;

/// The run's tokenizer and token shards, rank 0 first: it claims the run directory and may train the
/// tokenizer and prepare the shards into the cache that the other ranks then read.
struct RunData {
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<std::string> shard_paths;
};
RunData resolve_run_data(World& world, const LmJobOptions& lm, const std::string& recipe_ini, bool resume);

struct ClientData {
  std::vector<TokenDataset> datasets;
  std::vector<std::string> groups;  ///< per client, the majority value of a group key (empty without one)
  std::vector<std::vector<Batch>> val_batches;
  ClientRoster roster;
  nlohmann::json partition_file;    ///< partition.json: the partition, each client's documents and host rank
};

/// Partitions the documents of `shard_paths` (lm.data.filter applied) as fed.partition says and
/// builds every client. `group_key` (may be empty) labels each client with the value most of its
/// documents have; `global_rank` is the LoRA rank clients default to; `world_size` places client c on
/// rank host_rank(c, world_size) in partition.json.
ClientData build_clients(const LmJobOptions& lm, const FederatedOptions& fed, const AttackOptions& attack,
                         const std::string& group_key, const std::vector<std::string>& shard_paths, int64_t global_rank,
                         int world_size);

/// Held-out loss of `model` on each client's split, and over all of them (token-weighted):
/// {"val_loss", "val_ppl", "client_ppl": {name: perplexity}}.
nlohmann::json evaluate_clients(Decoder model, torch::Device device, const ClientData& clients, bool bf16);

}  // namespace fedsplit
