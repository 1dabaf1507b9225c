// Client partitions for federated runs: which documents each client holds.
//
//   iid        documents shuffled (seeded) and dealt to `clients` clients in turn
//   natural    one client per distinct value of a metadata key (SOTU president or party, Brown
//              genre, SpamAssassin sender), in order of first appearance; values with fewer than
//              min_documents documents make no client
//   dirichlet  for each value of a label key, its documents are split over `clients` clients in
//              proportions drawn from Dirichlet(alpha) (Hsu et al., 2019): small alpha, strong skew;
//              drawn again (up to 100 times) until every client holds min_documents
// A partition works on document indices and the key's value of each document, so it is the same
// whatever the documents' source; the federated runtime maps indices to token windows.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fedsplit {

struct PartitionOptions {
  std::string scheme = "iid";  ///< iid | natural | dirichlet
  int64_t clients = 10;        ///< iid, dirichlet: number of clients (natural: one per value)
  double alpha = 0.5;          ///< dirichlet: concentration (> 0)
  int64_t min_documents = 1;   ///< dirichlet: fewest documents a client may hold; natural: fewer make no client
  uint64_t seed = 0;           ///< seeds the shuffle and the Dirichlet draws
};

struct Partition {
  std::vector<std::string> client_names;          ///< "client-0", ... or the natural value
  std::vector<std::vector<int64_t>> documents;    ///< per client, document indices in increasing order
};

/// Splits documents 0 .. labels.size()-1. `labels[i]` is document i's value of the partition key
/// (natural, dirichlet; ignored by iid). `key` names that key in errors. Throws ConfigError for bad
/// options (naming the recipe key federated.<option>) and DataError when the documents cannot be
/// split as asked (fewer documents than clients, Dirichlet draws that leave a client below
/// min_documents).
Partition partition_documents(const std::vector<std::string>& labels, const PartitionOptions& options,
                              const std::string& key);

/// What a partition looks like: clients, documents per client (min / median / max), and with
/// `labels` the label skew: per client its label counts, and the mean total-variation distance
/// between each client's label distribution and the overall one (0 = IID, 1 = disjoint labels).
nlohmann::json summarize_partition(const Partition& partition, const std::vector<std::string>& labels);

}  // namespace fedsplit
