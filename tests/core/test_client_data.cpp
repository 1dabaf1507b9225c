// labels: unit
// Shards to per-client datasets: the filtered documents with their labels, and one dataset per
// client holding exactly that client's documents.
#include <gtest/gtest.h>

#include <optional>
#include <set>

#include "core/data/client_data.h"
#include "core/data/shards.h"
#include "core/util/error.h"
#include "tests/core/test_data_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

// 40 documents of 60-200 bytes; speaker A, B, C, D in turn, except document 5, which has none.
std::vector<std::shared_ptr<const TokenShard>> speaker_shard(const TempDir& dir) {
  std::vector<Document> docs;
  for (int i = 0; i < 40; ++i) {
    Document d{std::string(60 + (i * 37) % 140, static_cast<char>('a' + i % 26)), {}};
    if (i != 5) d.meta["speaker"] = std::string(1, static_cast<char>('A' + i % 4));
    docs.push_back(d);
  }
  ShardWriteOptions o;
  o.corpus = "synthetic";
  write_token_shard(dir / "s.h5", docs, ByteTokenizer(), o);
  return {std::make_shared<const TokenShard>(dir / "s.h5")};
}

DatasetOptions options() {
  DatasetOptions o;
  o.seq_len = 16;
  o.batch_size = 2;
  o.val_fraction = 0.25;
  o.split_seed = 3;
  return o;
}

}  // namespace

TEST(ClientData, NaturalClientsHoldExactlyTheirDocuments) {
  TempDir dir("client_data");
  const auto shards = speaker_shard(dir);
  // speaker!=D also keeps document 5 (no speaker): filter it with a second look at the labels.
  const auto docs = labelled_documents(shards, MetaFilter::parse("speaker!=D"), "speaker");
  ASSERT_EQ(docs.documents.size(), 30u);  // 40 less the 10 D's (documents 3, 7, ..., 39)
  EXPECT_EQ(docs.documents[4].doc, 5);  // document 3 (D) is gone
  EXPECT_EQ(docs.labels[4], "");
  LabelledDocuments spoken;
  for (size_t i = 0; i < docs.documents.size(); ++i)
    if (!docs.labels[i].empty()) {
      spoken.documents.push_back(docs.documents[i]);
      spoken.labels.push_back(docs.labels[i]);
    }
  PartitionOptions po;
  po.scheme = "natural";
  const auto partition = partition_documents(spoken.labels, po, "speaker");
  EXPECT_EQ(partition.client_names, (std::vector<std::string>{"A", "B", "C"}));
  auto clients = client_datasets(shards, options(), spoken, partition);
  ASSERT_EQ(clients.size(), 3u);
  std::set<int64_t> all;
  for (size_t c = 0; c < clients.size(); ++c) {
    std::set<int64_t> mine;
    for (const auto& list : {clients[c].train_documents(), clients[c].val_documents()})
      for (const auto& ref : list) {
        EXPECT_EQ(shards[0]->meta("speaker")[static_cast<size_t>(ref.doc)], partition.client_names[c]);
        mine.insert(ref.doc);
      }
    EXPECT_EQ(mine.size(), partition.documents[c].size());
    EXPECT_FALSE(clients[c].val_documents().empty()) << "each client holds out some of its own documents";
    all.insert(mine.begin(), mine.end());
  }
  EXPECT_EQ(all.size(), spoken.documents.size());
}

TEST(ClientData, ErrorsNameTheKeyOrTheClient) {
  TempDir dir("client_data_errors");
  const auto shards = speaker_shard(dir);
  expect_error<DataError>([&] { labelled_documents(shards, MetaFilter{}, "party"); }, {"'party'", "speaker"});
  const auto docs = labelled_documents(shards, MetaFilter{}, "speaker");
  // Natural partition over all 40: document 5 has no speaker.
  PartitionOptions po;
  po.scheme = "natural";
  expect_error<DataError>([&] { partition_documents(docs.labels, po, "speaker"); }, {"document 5"});
  // A client with a single short document has nothing to train on at this window size.
  Partition tiny{{"big", "tiny"}, {{}, {0}}};
  for (int64_t i = 1; i < 40; ++i) tiny.documents[0].push_back(i);
  DatasetOptions o = options();
  o.seq_len = 512;
  expect_error<DataError>([&] { client_datasets(shards, o, docs, tiny); }, {"client tiny (1 documents)"});
}
