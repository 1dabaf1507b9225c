// labels: unit
// TokenDataset: document-level split, windows, seeded epochs, exact resume, filters and errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <set>

#include "core/data/dataset.h"
#include "core/util/error.h"
#include "tests/core/test_data_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using fedsplit::testing::ByteTokenizer;
using fedsplit::testing::error_of;

namespace {

std::optional<fedsplit::testing::TempDir> g_dir;
std::string g_shard;   // 60 documents, speaker A/B/C (document 7 has none)
std::string g_shard2;  // 5 more documents, speaker D

std::string doc_text(int i) {
  std::string s = "doc " + std::to_string(i) + ":";
  for (int k = 0; k < 10 + (i * 37) % 150; ++k) s += static_cast<char>('a' + (i + k) % 26);
  return s;
}

class Dataset : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_dir.emplace("dataset");
    std::vector<Document> docs, docs2;
    for (int i = 0; i < 60; ++i) {
      Document d{doc_text(i), {{"n", std::to_string(i)}}};
      if (i != 7) d.meta["speaker"] = std::string(1, static_cast<char>('A' + i % 3));
      docs.push_back(d);
    }
    for (int i = 0; i < 5; ++i) docs2.push_back({doc_text(100 + i), {{"speaker", "D"}}});
    ByteTokenizer tok;
    ShardWriteOptions o;
    o.corpus = "synthetic";
    g_shard = *g_dir / "a.h5";
    g_shard2 = *g_dir / "b.h5";
    write_token_shard(g_shard, docs, tok, o);
    write_token_shard(g_shard2, docs2, tok, o);
  }
  static void TearDownTestSuite() { g_dir.reset(); }
};

DatasetOptions small_options() {
  DatasetOptions o;
  o.seq_len = 16;
  o.batch_size = 4;
  o.val_fraction = 0.2;
  o.split_seed = 1;
  o.shuffle_seed = 2;
  return o;
}

// The split's tokens, concatenated in document order, straight from the shards.
std::vector<int64_t> concat(const TokenDataset& ds, const std::vector<DocumentRef>& docs) {
  std::vector<int64_t> out;
  for (const auto& ref : docs) {
    const auto t = ds.shards()[static_cast<size_t>(ref.shard)]->document_tokens(ref.doc);
    out.insert(out.end(), t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + t.numel());
  }
  return out;
}

bool same(const Batch& a, const Batch& b) {
  return torch::equal(a.input_ids, b.input_ids) && torch::equal(a.targets, b.targets);
}

}  // namespace

TEST_F(Dataset, SplitIsByDocumentDisjointAndDeterministic) {
  TokenDataset a({g_shard}, small_options());
  TokenDataset b({g_shard}, small_options());
  EXPECT_EQ(a.val_documents().size(), 12u);  // round(0.2 * 60)
  EXPECT_EQ(a.train_documents().size(), 48u);
  EXPECT_EQ(a.val_documents(), b.val_documents());
  std::set<int64_t> seen;
  for (const auto& r : a.train_documents()) seen.insert(r.doc);
  for (const auto& r : a.val_documents()) EXPECT_TRUE(seen.insert(r.doc).second) << "document in both splits";
  EXPECT_EQ(seen.size(), 60u);

  auto other = small_options();
  other.split_seed = 99;
  EXPECT_NE(TokenDataset({g_shard}, other).val_documents(), a.val_documents());
  other = small_options();
  other.shuffle_seed = 99;  // the shuffle seed does not move documents between splits
  EXPECT_EQ(TokenDataset({g_shard}, other).val_documents(), a.val_documents());
  EXPECT_EQ(a.vocab_size(), 259);
  EXPECT_NO_THROW(a.check_vocab(300));
  EXPECT_THROW(a.check_vocab(100), DataError);
}

TEST_F(Dataset, BatchesAreWindowsOfTheTrainTokensAndAnEpochCoversThem) {
  auto o = small_options();
  o.batch_size = 1;  // one window per batch: an epoch visits every window exactly once
  TokenDataset ds({g_shard}, o);
  const auto tokens = concat(ds, ds.train_documents());
  ASSERT_EQ(static_cast<int64_t>(tokens.size()), ds.num_train_tokens());
  const int64_t T = o.seq_len, W = ds.num_train_windows();
  EXPECT_EQ(W, (ds.num_train_tokens() - 1) / T);
  EXPECT_LT(ds.num_train_tokens() - (W * T + 1), T);  // only a short tail is left out
  EXPECT_EQ(ds.batches_per_epoch(), W);

  std::set<int64_t> starts;
  for (int64_t k = 0; k < W; ++k) {
    const Batch b = ds.next_batch();
    ASSERT_EQ(b.input_ids.sizes(), (std::vector<int64_t>{1, T}));
    ASSERT_EQ(b.input_ids.scalar_type(), torch::kLong);
    // Find the window: inputs are tokens[s, s+T), targets tokens[s+1, s+T+1), s a multiple of T.
    int64_t found = -1;
    for (int64_t w = 0; w < W && found < 0; ++w) {
      bool match = true;
      for (int64_t t = 0; t < T && match; ++t)
        match = b.input_ids[0][t].item<int64_t>() == tokens[static_cast<size_t>(w * T + t)] &&
                b.targets[0][t].item<int64_t>() == tokens[static_cast<size_t>(w * T + t + 1)];
      if (match && !starts.count(w)) found = w;
    }
    ASSERT_GE(found, 0) << "batch " << k << " is no unvisited window of the train tokens";
    starts.insert(found);
  }
  EXPECT_EQ(static_cast<int64_t>(starts.size()), W);
  EXPECT_EQ(ds.position(), (DataPosition{1, 0}));
}

TEST_F(Dataset, SameSeedSameBatchesAndResumeIsBitwise) {
  TokenDataset a({g_shard}, small_options());
  TokenDataset b({g_shard}, small_options());
  const int64_t per_epoch = a.batches_per_epoch();
  ASSERT_GE(per_epoch, 3);
  std::vector<Batch> run;
  for (int64_t k = 0; k < per_epoch * 2 + 3; ++k) {
    run.push_back(a.next_batch());
    ASSERT_TRUE(same(run.back(), b.next_batch())) << k;
    EXPECT_EQ(run.back().input_ids.sizes(), (std::vector<int64_t>{4, 16}));
  }
  EXPECT_FALSE(same(run[0], run[static_cast<size_t>(per_epoch)]));  // epochs are shuffled differently

  for (int64_t k : {int64_t{0}, int64_t{1}, per_epoch - 1, per_epoch, per_epoch + 2}) {
    TokenDataset first({g_shard}, small_options());
    for (int64_t i = 0; i < k; ++i) first.next_batch();
    const DataPosition pos = first.position();
    TokenDataset resumed({g_shard}, small_options());
    resumed.seek(pos);
    for (size_t i = static_cast<size_t>(k); i < run.size(); ++i)
      ASSERT_TRUE(same(resumed.next_batch(), run[i])) << "resumed after " << k << " batches, batch " << i;
  }

  auto other = small_options();
  other.shuffle_seed = 3;
  TokenDataset c({g_shard}, other);
  EXPECT_FALSE(same(c.next_batch(), run[0]));
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  EXPECT_NE(a.fingerprint(), c.fingerprint());
  EXPECT_THROW(a.seek({0, per_epoch}), DataError);
  EXPECT_THROW(a.seek({-1, 0}), DataError);
}

TEST_F(Dataset, ValidationBatchesAreInOrder) {
  TokenDataset ds({g_shard}, small_options());
  const auto tokens = concat(ds, ds.val_documents());
  const auto all = ds.val_batches();
  const int64_t W = ds.num_val_windows();
  ASSERT_EQ(static_cast<int64_t>(all.size()), (W + 3) / 4);
  int64_t w = 0;
  for (const auto& b : all)
    for (int64_t r = 0; r < b.input_ids.size(0); ++r, ++w)
      for (int64_t t = 0; t < 16; ++t) {
        ASSERT_EQ(b.input_ids[r][t].item<int64_t>(), tokens[static_cast<size_t>(w * 16 + t)]);
        ASSERT_EQ(b.targets[r][t].item<int64_t>(), tokens[static_cast<size_t>(w * 16 + t + 1)]);
      }
  EXPECT_EQ(w, W);
  const auto two = ds.val_batches(2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_TRUE(same(two[1], all[1]));

  auto o = small_options();
  o.val_fraction = 0;
  TokenDataset no_val({g_shard}, o);
  EXPECT_TRUE(no_val.val_batches().empty());
  EXPECT_EQ(no_val.train_documents().size(), 60u);
}

TEST_F(Dataset, FilterSelectsMatchingDocumentsOrTheRest) {
  auto o = small_options();
  o.filter = MetaFilter::parse("speaker=B");
  TokenDataset only_b({g_shard}, o);
  const auto& shard = *only_b.shards()[0];
  size_t n = 0;
  for (const auto* docs : {&only_b.train_documents(), &only_b.val_documents()})
    for (const auto& r : *docs) {
      EXPECT_EQ(shard.meta("speaker")[static_cast<size_t>(r.doc)], "B");
      ++n;
    }
  EXPECT_EQ(n, 19u);  // documents 1, 4, ..., 58 except 7, which has no speaker

  o.filter = MetaFilter::parse("speaker!=B");
  TokenDataset not_b({g_shard}, o);
  EXPECT_EQ(not_b.train_documents().size() + not_b.val_documents().size(), 41u);  // includes document 7 (no speaker)
  for (const auto* docs : {&not_b.train_documents(), &not_b.val_documents()})
    for (const auto& r : *docs) EXPECT_NE(shard.meta("speaker")[static_cast<size_t>(r.doc)], "B");

  EXPECT_EQ(MetaFilter::parse("president=Abraham Lincoln").value, "Abraham Lincoln");
  EXPECT_TRUE(MetaFilter::parse("a!=b").exclude);
  EXPECT_EQ(MetaFilter::parse("k=a=b").value, "a=b");
  EXPECT_FALSE(MetaFilter::parse("").active());
  EXPECT_THROW(MetaFilter::parse("speaker"), ConfigError);
  EXPECT_THROW(MetaFilter::parse("=x"), ConfigError);
}

TEST_F(Dataset, SeveralShardsAndSubsets) {
  auto o = small_options();
  TokenDataset both({g_shard, g_shard2}, o);
  EXPECT_EQ(both.train_documents().size() + both.val_documents().size(), 65u);
  o.filter = MetaFilter::parse("speaker=D");
  o.seq_len = 8;
  o.batch_size = 2;
  TokenDataset d({g_shard, g_shard2}, o);
  for (const auto& r : d.train_documents()) EXPECT_EQ(r.shard, 1);

  // A subset (as a partitioner would give a client): only those documents are used.
  auto shards = std::vector<std::shared_ptr<const TokenShard>>{std::make_shared<const TokenShard>(g_shard)};
  std::vector<DocumentRef> subset;
  for (int64_t i = 0; i < 60; i += 2) subset.push_back({0, i});
  TokenDataset client(shards, small_options(), subset);
  EXPECT_EQ(client.train_documents().size() + client.val_documents().size(), 30u);
  for (const auto& r : client.train_documents()) EXPECT_EQ(r.doc % 2, 0);
  EXPECT_THROW(TokenDataset(shards, small_options(), std::vector<DocumentRef>{{0, 60}}), DataError);
  EXPECT_THROW(TokenDataset(shards, small_options(), std::vector<DocumentRef>{{1, 0}}), DataError);
}

TEST_F(Dataset, ErrorsNameTheFileAndSayWhatToDo) {
  auto o = small_options();
  o.seq_len = 100000;
  auto msg = error_of<DataError>([&] { TokenDataset({g_shard}, o); });
  EXPECT_NE(msg.find(g_shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("seq_len"), std::string::npos) << msg;

  o = small_options();
  o.filter = MetaFilter::parse("speaker=Z");
  msg = error_of<DataError>([&] { TokenDataset({g_shard}, o); });
  EXPECT_NE(msg.find(g_shard), std::string::npos) << msg;
  EXPECT_NE(msg.find("speaker"), std::string::npos) << msg;
  EXPECT_NE(msg.find("A, B, C"), std::string::npos) << msg;  // the values that exist

  o.filter = MetaFilter::parse("genre=news");
  msg = error_of<DataError>([&] { TokenDataset({g_shard}, o); });
  EXPECT_NE(msg.find("n, speaker"), std::string::npos) << msg;  // the keys that exist

  o.filter = MetaFilter::parse("n=7");  // one document: nothing left for training after the split
  msg = error_of<DataError>([&] { TokenDataset({g_shard}, o); });
  EXPECT_NE(msg.find("val_fraction"), std::string::npos) << msg;

  o = small_options();
  o.batch_size = 100000;
  msg = error_of<DataError>([&] { TokenDataset({g_shard}, o); });
  EXPECT_NE(msg.find("batch_size"), std::string::npos) << msg;

  o = small_options();
  o.val_fraction = 0.02;  // one short validation document
  o.seq_len = 200;
  o.batch_size = 1;
  msg = error_of<DataError>([&] { TokenDataset({g_shard}, o); });
  EXPECT_NE(msg.find("validation"), std::string::npos) << msg;

  o = small_options();
  o.val_fraction = 1.0;
  EXPECT_THROW(TokenDataset({g_shard}, o), ConfigError);
  o = small_options();
  o.seq_len = 0;
  EXPECT_THROW(TokenDataset({g_shard}, o), ConfigError);
  EXPECT_THROW(TokenDataset(std::vector<std::string>{}, small_options()), ConfigError);
}

TEST(EpochPermutation, IsAFixedFunctionOfSeedAndEpoch) {
  const auto p = epoch_permutation(10, 0, 0);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_EQ(p, epoch_permutation(10, 0, 0));
  EXPECT_NE(p, epoch_permutation(10, 0, 1));
  EXPECT_NE(p, epoch_permutation(10, 1, 0));
  // Pinned values: std::mt19937_64 and our Fisher-Yates are the same on every platform, so these
  // only change if the algorithm does (which would break resuming old checkpoints bitwise).
  EXPECT_EQ(p, (std::vector<int64_t>{0, 6, 2, 5, 7, 8, 9, 4, 1, 3}));
}
