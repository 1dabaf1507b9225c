#include "core/data/partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/util/error.h"

namespace fedsplit {
namespace {

std::vector<int64_t> shuffled_indices(int64_t n, std::mt19937_64& rng) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

Partition numbered_clients(int64_t count) {
  Partition p;
  for (int64_t c = 0; c < count; ++c) p.client_names.push_back("client-" + std::to_string(c));
  p.documents.resize(static_cast<size_t>(count));
  return p;
}

Partition iid(int64_t n, const PartitionOptions& o) {
  std::mt19937_64 rng(o.seed);
  Partition p = numbered_clients(o.clients);
  const auto order = shuffled_indices(n, rng);
  for (size_t i = 0; i < order.size(); ++i) p.documents[i % p.documents.size()].push_back(order[i]);
  return p;
}

Partition natural(const std::vector<std::string>& labels, const std::string& key, int64_t min_documents) {
  Partition p;
  std::map<std::string, size_t> client_of;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i].empty())
      throw DataError("natural partition by '" + key + "': document " + std::to_string(i) +
                      " has no value for it; filter such documents out (data.filter) or partition by another key");
    auto [it, added] = client_of.emplace(labels[i], p.client_names.size());
    if (added) {
      p.client_names.push_back(labels[i]);
      p.documents.emplace_back();
    }
    p.documents[it->second].push_back(static_cast<int64_t>(i));
  }
  // Values with too few documents make no client (their documents are left out).
  Partition kept;
  for (size_t c = 0; c < p.client_names.size(); ++c)
    if (static_cast<int64_t>(p.documents[c].size()) >= min_documents) {
      kept.client_names.push_back(p.client_names[c]);
      kept.documents.push_back(std::move(p.documents[c]));
    }
  if (kept.client_names.empty())
    throw DataError("natural partition by '" + key + "': no value has federated.min_documents = " +
                    std::to_string(min_documents) + " documents; lower it");
  return kept;
}

// One Dirichlet(alpha, ..., alpha) draw over `k` clients, from normalised Gamma(alpha, 1) draws.
std::vector<double> dirichlet(int64_t k, double alpha, std::mt19937_64& rng) {
  std::gamma_distribution<double> gamma(alpha, 1.0);
  std::vector<double> p(static_cast<size_t>(k));
  double total = 0;
  for (auto& x : p) total += (x = gamma(rng));
  if (total <= 0) {  // every draw underflowed (tiny alpha): all mass on one client
    p.assign(p.size(), 0.0);
    p[std::uniform_int_distribution<size_t>(0, p.size() - 1)(rng)] = 1.0;
    return p;
  }
  for (auto& x : p) x /= total;
  return p;
}

Partition dirichlet_split(const std::vector<std::string>& labels, const PartitionOptions& o, const std::string& key) {
  std::map<std::string, std::vector<int64_t>> by_label;
  for (size_t i = 0; i < labels.size(); ++i) by_label[labels[i]].push_back(static_cast<int64_t>(i));
  std::mt19937_64 rng(o.seed);
  constexpr int kAttempts = 100;
  size_t smallest = 0;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    Partition p = numbered_clients(o.clients);
    for (auto& [label, docs] : by_label) {
      std::shuffle(docs.begin(), docs.end(), rng);
      const auto share = dirichlet(o.clients, o.alpha, rng);
      // Cut points from the cumulative proportions; the last client takes the rounding rest.
      double cumulative = 0;
      size_t begin = 0;
      for (size_t c = 0; c < share.size(); ++c) {
        cumulative += share[c];
        const size_t end = c + 1 == share.size() ? docs.size()
                                                 : std::min(docs.size(), static_cast<size_t>(cumulative * docs.size() + 0.5));
        for (size_t i = begin; i < std::max(begin, end); ++i) p.documents[c].push_back(docs[i]);
        begin = std::max(begin, end);
      }
    }
    smallest = p.documents.front().size();
    for (const auto& d : p.documents) smallest = std::min(smallest, d.size());
    if (static_cast<int64_t>(smallest) >= o.min_documents) return p;
  }
  throw DataError("dirichlet partition by '" + key + "' with alpha " + std::to_string(o.alpha) + ": after " +
                  std::to_string(kAttempts) + " draws a client still holds only " + std::to_string(smallest) +
                  " documents (min_documents " + std::to_string(o.min_documents) +
                  "); raise federated.alpha, lower federated.clients or federated.min_documents");
}

}  // namespace

Partition partition_documents(const std::vector<std::string>& labels, const PartitionOptions& o, const std::string& key) {
  const auto n = static_cast<int64_t>(labels.size());
  if (o.scheme != "natural" && o.clients < 1)
    throw ConfigError("federated.clients must be at least 1, got " + std::to_string(o.clients));
  if (o.scheme != "natural" && n < o.clients)
    throw DataError("cannot give " + std::to_string(o.clients) + " clients a document each: only " + std::to_string(n) +
                    " documents; lower federated.clients");
  Partition p;
  if (o.scheme == "iid") {
    p = iid(n, o);
  } else if (o.scheme == "natural") {
    p = natural(labels, key, o.min_documents);
  } else if (o.scheme == "dirichlet") {
    if (!(o.alpha > 0)) throw ConfigError("federated.alpha must be positive, got " + std::to_string(o.alpha));
    p = dirichlet_split(labels, o, key);
  } else {
    throw ConfigError("federated.partition '" + o.scheme + "' is not one of iid, natural, dirichlet");
  }
  for (auto& docs : p.documents) std::sort(docs.begin(), docs.end());
  return p;
}

nlohmann::json summarize_partition(const Partition& p, const std::vector<std::string>& labels) {
  std::vector<size_t> sizes;
  for (const auto& d : p.documents) sizes.push_back(d.size());
  std::vector<size_t> sorted = sizes;
  std::sort(sorted.begin(), sorted.end());
  nlohmann::json out{{"clients", p.client_names.size()},
                     {"documents", std::accumulate(sizes.begin(), sizes.end(), size_t{0})},
                     {"documents_per_client", {{"min", sorted.empty() ? 0 : sorted.front()},
                                               {"median", sorted.empty() ? 0 : sorted[sorted.size() / 2]},
                                               {"max", sorted.empty() ? 0 : sorted.back()}}}};
  std::map<std::string, double> overall;
  size_t labelled = 0;
  for (const auto& d : p.documents)
    for (const auto i : d) {
      overall[labels[static_cast<size_t>(i)]] += 1;
      ++labelled;
    }
  for (auto& [label, count] : overall) count /= std::max<size_t>(labelled, 1);
  double tv_sum = 0;
  nlohmann::json clients = nlohmann::json::array();
  for (size_t c = 0; c < p.documents.size(); ++c) {
    std::map<std::string, int64_t> counts;
    for (const auto i : p.documents[c]) ++counts[labels[static_cast<size_t>(i)]];
    double tv = 0;
    for (const auto& [label, share] : overall) {
      const auto it = counts.find(label);
      const double mine = it == counts.end() || p.documents[c].empty() ? 0.0 : double(it->second) / p.documents[c].size();
      tv += std::abs(mine - share);
    }
    tv_sum += tv / 2;
    clients.push_back({{"name", p.client_names[c]}, {"documents", p.documents[c].size()}, {"labels", counts}});
  }
  out["label_skew_tv"] = p.documents.empty() ? 0.0 : tv_sum / p.documents.size();
  out["per_client"] = clients;
  return out;
}

}  // namespace fedsplit
