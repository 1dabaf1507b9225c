#include "federated/client_setup.h"

#include <cmath>

#include "core/comm/world.h"
#include "core/data/client_data.h"
#include "core/data/prepare.h"
#include "core/tokenizer/tokenizer.h"
#include "federated/options.h"
#include "federated/sampling.h"
#include "federated/topology.h"
#include "train/trainer.h"

namespace fedsplit {

RunData resolve_run_data(World& world, const LmJobOptions& lm, const std::string& recipe_ini, bool resume) {
  RunData out;
  auto resolve = [&] {
    out.tokenizer = resolve_tokenizer(lm.data);
    out.shard_paths = resolve_shards(lm.data, *out.tokenizer);
  };
  if (world.rank() == 0) {
    claim_run_dir(lm.run, recipe_ini, resume);
    resolve();
  }
  world.barrier();
  if (world.rank() != 0) resolve();
  return out;
}

ClientData build_clients(const LmJobOptions& lm, const FederatedOptions& fed, const AttackOptions& attack,
                         const std::string& group_key, const std::vector<std::string>& shard_paths, int64_t global_rank,
                         int world_size) {
  std::vector<std::shared_ptr<const TokenShard>> shards;
  for (const auto& p : shard_paths) shards.push_back(std::make_shared<const TokenShard>(p));
  // An iid partition needs no labels: the key, if any, is left for the natural and dirichlet schemes.
  const std::string key = fed.partition.scheme == "iid" ? "" : fed.partition_key;
  const auto docs = labelled_documents(shards, MetaFilter::parse(lm.data.filter), key);
  PartitionOptions popts = fed.partition;
  popts.seed = static_cast<uint64_t>(lm.run.seed);
  const Partition partition = partition_documents(docs.labels, popts, key);
  DatasetOptions d;
  d.seq_len = lm.data.seq_len;
  d.batch_size = lm.data.batch_size;
  d.val_fraction = lm.data.val_fraction;
  d.split_seed = d.shuffle_seed = static_cast<uint64_t>(lm.run.seed);
  ClientData out;
  out.datasets = client_datasets(shards, d, docs, partition);
  auto& r = out.roster;
  r.names = partition.client_names;
  const auto n = static_cast<int64_t>(r.names.size());
  r.lora_ranks = client_lora_ranks(fed.client_ranks, r.names, global_rank);
  r.stragglers = pick_share(n, fed.straggler_fraction, static_cast<uint64_t>(lm.run.seed));
  r.faults = parse_faults(fed.faults, r.names);
  const auto speeds = parse_client_values(fed.client_speeds, r.names, "federated.client_speeds", 1e-6, 1e15);
  for (int64_t c = 0; c < n; ++c)
    r.speeds.push_back(speeds.count(c) ? speeds.at(c)
                                       : fed.client_tokens_per_s / (r.stragglers[static_cast<size_t>(c)] ? fed.straggler_slowdown : 1.0));
  r.attacks = pick_attackers(attack, r.names, static_cast<uint64_t>(lm.run.seed));
  out.partition_file = summarize_partition(partition, docs.labels);
  if (!group_key.empty())
    out.groups = majority_labels(partition.documents, labelled_documents(shards, MetaFilter::parse(lm.data.filter), group_key).labels);
  out.partition_file["partition_key"] = key;
  nlohmann::json clients = nlohmann::json::array();
  for (int64_t c = 0; c < n; ++c) {
    const TokenDataset& data = out.datasets[static_cast<size_t>(c)];
    const int64_t steps = fed.local_epochs > 0
                              ? std::max<int64_t>(1, std::llround(fed.local_epochs * data.batches_per_epoch()))
                              : fed.local_steps;
    r.local_steps.push_back(steps);
    r.samples.push_back(data.num_train_windows());
    out.val_batches.push_back(data.val_batches(fed.eval_batches));
    nlohmann::json docs_of = nlohmann::json::array();
    for (const auto i : partition.documents[static_cast<size_t>(c)]) {
      const auto& ref = docs.documents[static_cast<size_t>(i)];
      docs_of.push_back({ref.shard, ref.doc});
    }
    clients.push_back({{"name", r.names[static_cast<size_t>(c)]},
                       {"documents", docs_of.size()}, {"train_windows", data.num_train_windows()},
                       {"val_windows", data.num_val_windows()}, {"local_steps", steps},
                       {"lora_rank", r.lora_ranks[static_cast<size_t>(c)]},
                       {"straggler", static_cast<bool>(r.stragglers[static_cast<size_t>(c)])},
                       {"tokens_per_s", r.speeds[static_cast<size_t>(c)]},
                       {"attack", r.attacks.count(c) ? r.attacks.at(c) : ""},
                       {"host_rank", host_rank(c, world_size)}, {"document_refs", docs_of}});
  }
  out.partition_file["client_list"] = clients;
  out.partition_file["shards"] = shard_paths;
  return out;
}

nlohmann::json evaluate_clients(Decoder model, torch::Device device, const ClientData& clients, bool bf16) {
  model->eval();
  auto logits = [&model](const torch::Tensor& ids) { return model->forward(ids); };
  double total = 0, tokens = 0;
  nlohmann::json per_client = nlohmann::json::object();
  for (size_t c = 0; c < clients.val_batches.size(); ++c) {
    const auto& batches = clients.val_batches[c];
    const double loss = evaluate_loss(logits, batches, device, bf16);
    double n = 0;
    for (const auto& b : batches) n += static_cast<double>(b.targets.numel());
    total += loss * n;
    tokens += n;
    per_client[clients.roster.names[c]] = std::exp(loss);
  }
  model->train();
  return {{"val_loss", total / tokens}, {"val_ppl", std::exp(total / tokens)}, {"client_ppl", per_client}};
}

}  // namespace fedsplit
