#include "core/data/client_data.h"

#include <set>

#include "core/data/shards.h"
#include "core/util/error.h"

namespace fedsplit {

LabelledDocuments labelled_documents(const std::vector<std::shared_ptr<const TokenShard>>& shards,
                                     const MetaFilter& filter, const std::string& key) {
  bool key_found = key.empty();
  std::set<std::string> keys;
  for (const auto& shard : shards) {
    key_found = key_found || shard->has_meta(key);
    for (const auto& k : shard->meta_keys()) keys.insert(k);
  }
  if (!key_found) {
    std::string listed;
    for (const auto& k : keys) listed += (listed.empty() ? "" : ", ") + k;
    throw DataError("no document has metadata key '" + key + "' to partition by; the shards' keys are: " +
                    (listed.empty() ? "none" : listed));
  }
  auto value_of = [](const TokenShard& shard, const std::string& k, int64_t doc) {
    return !k.empty() && shard.has_meta(k) ? shard.meta(k)[static_cast<size_t>(doc)] : std::string();
  };
  LabelledDocuments out;
  for (size_t s = 0; s < shards.size(); ++s) {
    const TokenShard& shard = *shards[s];
    for (int64_t d = 0; d < shard.num_documents(); ++d) {
      if (filter.active() && !filter.keeps(value_of(shard, filter.key, d))) continue;
      out.documents.push_back({static_cast<int32_t>(s), d});
      out.labels.push_back(value_of(shard, key, d));
    }
  }
  return out;
}

std::vector<TokenDataset> client_datasets(const std::vector<std::shared_ptr<const TokenShard>>& shards,
                                          const DatasetOptions& options, const LabelledDocuments& documents,
                                          const Partition& partition) {
  DatasetOptions client_options = options;
  client_options.filter = MetaFilter{};  // the documents are already the filtered ones
  std::vector<TokenDataset> out;
  out.reserve(partition.documents.size());
  for (size_t c = 0; c < partition.documents.size(); ++c) {
    std::vector<DocumentRef> subset;
    for (const auto i : partition.documents[c]) subset.push_back(documents.documents.at(static_cast<size_t>(i)));
    try {
      out.emplace_back(shards, client_options, subset);
    } catch (const DataError& e) {
      throw DataError("client " + partition.client_names[c] + " (" + std::to_string(subset.size()) +
                      " documents): " + e.what());
    }
  }
  return out;
}

}  // namespace fedsplit
