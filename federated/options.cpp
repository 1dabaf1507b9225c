#include "federated/options.h"

#include <algorithm>

#include "core/config/recipe.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

int64_t parse_rank(const std::string& text, int64_t global_rank) {
  size_t used = 0;
  int64_t r = 0;
  try {
    r = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || r < 1 || r > global_rank)
    throw ConfigError("federated.client_ranks: '" + text + "' is not a rank in 1.." + std::to_string(global_rank) +
                      " (peft.r is the global rank)");
  return r;
}

}  // namespace

int64_t find_client(const std::string& name, const std::vector<std::string>& names, const std::string& key) {
  const auto it = std::find(names.begin(), names.end(), name);
  if (it != names.end()) return it - names.begin();
  if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) {
    const int64_t index = std::stoll(name);
    if (index < static_cast<int64_t>(names.size())) return index;
  }
  std::string list;
  for (size_t i = 0; i < names.size() && i < 8; ++i) list += (i ? ", " : "") + names[i];
  throw ConfigError(key + ": '" + name + "' is no client (clients are named " + list +
                    (names.size() > 8 ? ", ..." : "") + ", or by index 0.." + std::to_string(names.size() - 1) + ")");
}

void bind_federated_options(Recipe& r, FederatedOptions& o) {
  r.add("federated.rounds", &o.rounds, "communication rounds", 1, 1000000);
  r.add_choice("federated.partition", &o.partition.scheme, {"iid", "natural", "dirichlet"},
               "how documents are dealt to clients");
  r.add("federated.clients", &o.partition.clients, "clients of an iid or dirichlet partition", 1, 10000000);
  r.add("federated.partition_key", &o.partition_key, "metadata key of a natural or dirichlet partition (e.g. president, genre)");
  r.add("federated.alpha", &o.partition.alpha, "Dirichlet concentration (small = strong label skew)", 1e-6, 1e6);
  r.add("federated.min_documents", &o.partition.min_documents, "fewest documents a client may hold (dirichlet: redrawn until it does; natural: smaller values make no client)", 1, 1000000);
  r.add("federated.sample_fraction", &o.sample_fraction, "share of clients sampled per round", 1e-9, 1.0);
  r.add("federated.sample_count", &o.sample_count, "clients sampled per round (0 = use sample_fraction)", 0, 10000000);
  r.add("federated.min_clients", &o.min_clients, "fewest valid client updates a round needs", 1, 10000000);
  r.add("federated.round_retries", &o.round_retries, "retries of a round short of min_clients before the job stops", 0, 100);
  r.add("federated.local_steps", &o.local_steps, "optimizer steps per client per round", 1, 1000000);
  r.add("federated.local_epochs", &o.local_epochs, "passes over a client's training windows per round (0 = local_steps)",
        0.0, 1000.0);
  r.add_choice("federated.client_optimizer", &o.client_optimizer, {"adamw", "sgd"},
               "client optimizer (train.lr, betas, weight_decay, grad_clip apply); fresh every round");
  r.add("federated.client_momentum", &o.client_momentum, "sgd momentum", 0.0, 0.999);
  r.add("federated.fedprox_mu", &o.fedprox_mu, "FedProx proximal term weight (0 = off)", 0.0, 1e6);
  r.add_choice("federated.server_optimizer", &o.server.rule, {"fedavg", "fedavgm", "fedadagrad", "fedyogi", "fedadam"},
               "how the server applies the mean client update");
  r.add("federated.server_lr", &o.server.lr, "server learning rate", 1e-9, 1e6);
  r.add("federated.server_beta1", &o.server.beta1, "server momentum / first-moment decay", 0.0, 0.9999);
  r.add("federated.server_beta2", &o.server.beta2, "server second-moment decay (fedyogi, fedadam)", 0.0, 0.999999);
  r.add("federated.server_tau", &o.server.tau, "server adaptivity (fedadagrad, fedyogi, fedadam)", 1e-12, 1e3);
  r.add_choice("federated.lora_aggregation", &o.lora_aggregation, {"fedavg", "hetlora", "flora", "ffa"},
               "how LoRA updates combine: fedavg (A, B averaged), hetlora (zero-padding, norm-weighted), flora (exact "
               "stacking, merged each round), ffa (A frozen, B averaged)");
  r.add("federated.client_ranks", &o.client_ranks, "per-client LoRA ranks: numbers dealt in turn, or name=rank items");
  r.add("federated.deadline_s", &o.deadline_s, "simulated seconds per round a client has (0 = no deadline)", 0.0, 1e9);
  r.add("federated.client_tokens_per_s", &o.client_tokens_per_s, "nominal client training speed for simulated time",
        1e-3, 1e12);
  r.add("federated.client_speeds", &o.client_speeds, "per-client training speeds for simulated time: name=tokens_per_s items");
  r.add("federated.straggler_fraction", &o.straggler_fraction, "share of clients that are stragglers", 0.0, 1.0);
  r.add("federated.straggler_slowdown", &o.straggler_slowdown, "how many times slower a straggler computes", 1.0, 1e6);
  r.add("federated.eval_every", &o.eval_every, "rounds between held-out evaluations (and the last round)", 1, 1000000);
  r.add("federated.eval_batches", &o.eval_batches, "held-out batches per client per evaluation (0 = all)", 0, 1000000);
  r.add("federated.faults", &o.faults, "testing aid: client=kind items (nonfinite, shape, dtype, silent)");
  r.add_choice("federated.backend", &o.backend, {"auto", "gloo", "nccl"}, "tensor transport between ranks");
  r.add("federated.comm_timeout_s", &o.comm_timeout_s, "seconds any wait on a peer may take", 1.0, 1e6);
  r.add("network.link", &o.link, "client link for simulated time: up_mbps/down_mbps/latency_ms (empty = off)");
}

void bind_robust_options(Recipe& r, RobustOptions& o) {
  o.rule = "none";  // a recipe opts in to robust aggregation
  r.add_choice("robust.rule", &o.rule, {"none", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "norm_bound", "trust"},
               "Byzantine-robust aggregation of the client updates (none = weighted mean)");
  r.add("robust.byzantine", &o.byzantine, "f: clients assumed malicious (krum, multi_krum, bulyan, trimmed_mean)", 0, 1000000);
  r.add("robust.trim_fraction", &o.trim_fraction, "trimmed_mean: share trimmed from each end (0 = robust.byzantine)", 0.0, 0.4999);
  r.add("robust.multi_krum_m", &o.multi_krum_m, "multi_krum: updates averaged (0 = n - f)", 0, 1000000);
  r.add("robust.norm_bound", &o.norm_bound, "norm_bound: largest L2 norm an update keeps", 1e-12, 1e12);
  r.add("robust.trust_quality", &o.trust_quality, "trust: weight a of the round's quality", 0.0, 1e6);
  r.add("robust.trust_weight", &o.trust_weight, "trust: weight b of the client's trust", 0.0, 1e6);
  r.add("robust.trust_decay", &o.trust_decay, "trust: decay of the trust average per round", 0.0, 1.0);
}

std::vector<int64_t> client_lora_ranks(const std::string& spec, const std::vector<std::string>& names,
                                       int64_t global_rank) {
  std::vector<int64_t> dealt;
  std::map<int64_t, int64_t> named;
  for (const auto& item : split_list(spec)) {
    const auto eq = item.rfind('=');
    if (eq == std::string::npos)
      dealt.push_back(parse_rank(item, global_rank));
    else
      named[find_client(item.substr(0, eq), names, "federated.client_ranks")] = parse_rank(item.substr(eq + 1), global_rank);
  }
  std::vector<int64_t> ranks(names.size(), global_rank);
  for (size_t i = 0; i < names.size(); ++i) {
    if (!dealt.empty()) ranks[i] = dealt[i % dealt.size()];
    if (named.count(static_cast<int64_t>(i))) ranks[i] = named[static_cast<int64_t>(i)];
  }
  return ranks;
}

std::map<int64_t, std::string> parse_faults(const std::string& spec, const std::vector<std::string>& names) {
  static const std::vector<std::string> kinds = {"nonfinite", "shape", "dtype", "silent"};
  std::map<int64_t, std::string> out;
  for (const auto& item : split_list(spec)) {
    const auto eq = item.rfind('=');
    const std::string kind = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
      throw ConfigError("federated.faults: '" + item + "' is not client=kind with kind nonfinite, shape, dtype or silent");
    out[find_client(item.substr(0, eq), names, "federated.faults")] = kind;
  }
  return out;
}

std::map<int64_t, double> parse_client_values(const std::string& spec, const std::vector<std::string>& names,
                                              const std::string& key, double min, double max) {
  std::map<int64_t, double> out;
  for (const auto& item : split_list(spec)) {
    const auto eq = item.rfind('=');
    double value = 0;
    try {
      if (eq == std::string::npos) throw std::invalid_argument(item);
      size_t used = 0;
      value = std::stod(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw ConfigError(key + ": '" + item + "' is not client=number");
    }
    if (!(value >= min && value <= max))
      throw ConfigError(key + ": '" + item + "' is out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    out[find_client(item.substr(0, eq), names, key)] = value;
  }
  return out;
}

}  // namespace fedsplit
