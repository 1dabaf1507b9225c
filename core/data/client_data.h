// From shards to per-client datasets for federated runs: the documents a filter keeps, each with its
// value of the partition key, then one TokenDataset per client of a Partition (each client's own
// documents split into its train and held-out parts by the dataset options).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/data/partition.h"

namespace fedsplit {

struct LabelledDocuments {
  std::vector<DocumentRef> documents;  ///< in shard order, then document order
  std::vector<std::string> labels;     ///< each document's value of the key ("" if it has none)
};

/// The documents of `shards` that `filter` keeps, labelled with their value of `key` (all "" when
/// `key` is empty). Throws DataError listing the shards' keys when no shard has `key`.
LabelledDocuments labelled_documents(const std::vector<std::shared_ptr<const TokenShard>>& shards,
                                     const MetaFilter& filter, const std::string& key);

/// One dataset per client of `partition` (whose indices point into `documents`), with `options`
/// (seeds, windows, held-out fraction) applied to each client's documents alone. Throws DataError
/// naming the client when its documents are too few for the options.
std::vector<TokenDataset> client_datasets(const std::vector<std::shared_ptr<const TokenShard>>& shards,
                                          const DatasetOptions& options, const LabelledDocuments& documents,
                                          const Partition& partition);

}  // namespace fedsplit
