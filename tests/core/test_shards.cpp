// labels: unit
// Token shards: round trip with a byte tokenizer, overwrite rules, and damaged or foreign files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/data/shards.h"
#include "core/io/hdf5.h"
#include "core/util/error.h"
#include "tests/core/test_data_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using fedsplit::testing::ByteTokenizer;
using fedsplit::testing::error_of;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

namespace {

std::vector<Document> sample_docs() {
  return {
      {"Four score and seven years ago", {{"president", "Abraham Lincoln"}, {"year", "1863"}}},
      {"Ask not", {{"president", "John F. Kennedy"}, {"party", "Democratic"}}},
      {"x", {}},
      {"caf\xC3\xA9", {{"a/b", "slash"}, {"100%", "percent"}, {".", "dot"}}},
  };
}

ShardWriteOptions opts(bool overwrite = false) {
  ShardWriteOptions o;
  o.corpus = "sample";
  o.overwrite = overwrite;
  o.chunk_tokens = 8;  // several chunks even for a tiny corpus
  return o;
}

std::vector<int32_t> ids(const torch::Tensor& t) {
  return std::vector<int32_t>(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + t.numel());
}

}  // namespace

TEST(Shards, RoundTripDocumentsOffsetsAndMetadata) {
  const TempDir dir("shards_rt");
  const auto path = dir / "s.h5";
  const auto docs = sample_docs();
  ByteTokenizer tok;
  write_token_shard(path, docs, tok, opts());

  TokenShard shard(path);
  EXPECT_EQ(shard.corpus(), "sample");
  EXPECT_EQ(shard.tokenizer_path(), "test:bytes");
  EXPECT_EQ(shard.vocab_size(), 259);
  EXPECT_EQ(shard.bos_id(), 1);
  EXPECT_EQ(shard.eos_id(), 2);
  EXPECT_FALSE(shard.add_bos());
  ASSERT_EQ(shard.num_documents(), 4);
  EXPECT_EQ(shard.doc_offsets(), (std::vector<int64_t>{0, 31, 39, 41, 47}));
  EXPECT_EQ(shard.num_tokens(), 47);
  for (int64_t i = 0; i < 4; ++i) {
    auto expected = tok.encode(docs[static_cast<size_t>(i)].text);
    expected.push_back(2);
    EXPECT_EQ(ids(shard.document_tokens(i)), expected) << i;
    EXPECT_EQ(shard.document_length(i), static_cast<int64_t>(expected.size()));
    EXPECT_EQ(shard.document_meta(i), docs[static_cast<size_t>(i)].meta) << i;
  }
  EXPECT_EQ(shard.tokens().scalar_type(), torch::kInt);
  EXPECT_EQ(ids(shard.read_tokens(28, 32)), (std::vector<int32_t>{'g' + 3, 'o' + 3, 2, 'A' + 3}));
  EXPECT_EQ(shard.meta_keys(), (std::vector<std::string>{".", "100%", "a/b", "party", "president", "year"}));
  EXPECT_EQ(shard.meta("party"), (std::vector<std::string>{"", "Democratic", "", ""}));
  EXPECT_THROW(shard.meta("genre"), DataError);
  EXPECT_THROW(shard.document_tokens(4), DataError);

  const auto summary = shard.summary();
  EXPECT_NE(summary.find("4 documents, 47 tokens"), std::string::npos) << summary;
  EXPECT_NE(summary.find("meta president: 3 distinct values"), std::string::npos) << summary;

  EXPECT_NO_THROW(shard.check_vocab(259));
  const auto msg = error_of<DataError>([&] { shard.check_vocab(100); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(Shards, BosThreadsAndIdempotentRewrite) {
  const TempDir dir("shards_bos");
  ByteTokenizer tok;
  auto o = opts();
  o.add_bos = true;
  write_token_shard(dir / "a.h5", sample_docs(), tok, o);
  TokenShard a(dir / "a.h5");
  EXPECT_TRUE(a.add_bos());
  EXPECT_EQ(ids(a.document_tokens(2)), (std::vector<int32_t>{1, 'x' + 3, 2}));

  // Many documents over several threads give the same file content as one thread.
  std::vector<Document> many;
  for (int i = 0; i < 500; ++i) many.push_back({"document number " + std::to_string(i), {{"i", std::to_string(i % 7)}}});
  auto o1 = opts();
  write_token_shard(dir / "one.h5", many, tok, o1);
  auto o3 = opts();
  o3.threads = 3;
  write_token_shard(dir / "three.h5", many, tok, o3);
  EXPECT_EQ(TokenShard(dir / "one.h5").content_hash(), TokenShard(dir / "three.h5").content_hash());
  EXPECT_TRUE(torch::equal(TokenShard(dir / "one.h5").tokens(), TokenShard(dir / "three.h5").tokens()));

  // Same content again: left as it is, no error.
  const auto before = std::filesystem::last_write_time(dir / "one.h5");
  EXPECT_NO_THROW(write_token_shard(dir / "one.h5", many, tok, o1));
  EXPECT_EQ(std::filesystem::last_write_time(dir / "one.h5"), before);
}

TEST(Shards, RefusesToOverwriteADifferentFileUnlessAsked) {
  const TempDir dir("shards_overwrite");
  const auto path = dir / "s.h5";
  ByteTokenizer tok;
  write_token_shard(path, sample_docs(), tok, opts());
  auto changed = sample_docs();
  changed[2].text = "y";
  const auto msg = error_of<IoError>([&] { write_token_shard(path, changed, tok, opts()); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_EQ(ids(TokenShard(path).document_tokens(2)), (std::vector<int32_t>{'x' + 3, 2}));  // untouched
  write_token_shard(path, changed, tok, opts(/*overwrite=*/true));
  EXPECT_EQ(ids(TokenShard(path).document_tokens(2)), (std::vector<int32_t>{'y' + 3, 2}));

  // Not a shard at all: also refused without overwrite.
  write_text(dir / "notes.h5", "hello");
  EXPECT_THROW(write_token_shard(dir / "notes.h5", changed, tok, opts()), IoError);
  write_token_shard(dir / "notes.h5", changed, tok, opts(true));
  EXPECT_EQ(TokenShard(dir / "notes.h5").num_documents(), 4);
  // No temporary files are left behind.
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Shards, TokenizerWithoutEosOrNoDocumentsIsADataError) {
  struct NoEos : ByteTokenizer {
    int32_t eos_id() const override { return -1; }
  } no_eos;
  const TempDir dir("shards_noeos");
  EXPECT_THROW(write_token_shard(dir / "a.h5", sample_docs(), no_eos, opts()), DataError);
  ByteTokenizer tok;
  EXPECT_THROW(write_token_shard(dir / "b.h5", {}, tok, opts()), DataError);
  struct OutOfRange : ByteTokenizer {
    int64_t vocab_size() const override { return 100; }
  } small;
  EXPECT_THROW(write_token_shard(dir / "c.h5", sample_docs(), small, opts()), DataError);
  EXPECT_FALSE(std::filesystem::exists(dir / "a.h5"));
}

TEST(Shards, TruncatedAndForeignFilesAreFormatErrorsNamingThePath) {
  const TempDir dir("shards_bad");
  ByteTokenizer tok;
  std::vector<Document> big;
  for (int i = 0; i < 200; ++i) big.push_back({std::string(500, static_cast<char>('a' + i % 26)), {{"k", "v"}}});
  write_token_shard(dir / "good.h5", big, tok, opts());

  const auto truncated = dir / "truncated.h5";
  std::filesystem::copy_file(dir / "good.h5", truncated);
  std::filesystem::resize_file(truncated, std::filesystem::file_size(truncated) / 2);
  auto msg = error_of<FormatError>([&] { TokenShard s(truncated); s.tokens(); });
  EXPECT_NE(msg.find(truncated), std::string::npos) << msg;

  const auto foreign = dir / "checkpoint.h5";
  {
    auto f = h5::Group::create_file(foreign);
    f.write_tensor("weights", torch::ones({3}));
  }
  msg = error_of<FormatError>([&] { TokenShard s(foreign); });
  EXPECT_NE(msg.find(foreign), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a fedsplit token shard"), std::string::npos) << msg;

  const auto text = dir / "text.h5";
  write_text(text, "not hdf5 at all");
  msg = error_of<FormatError>([&] { TokenShard s(text); });
  EXPECT_NE(msg.find(text), std::string::npos) << msg;
}

TEST(Shards, MissingDatasetsAndInconsistentOffsetsAreFormatErrors) {
  const TempDir dir("shards_inconsistent");
  const auto make = [&](const std::string& name, const torch::Tensor& tokens, const torch::Tensor& offsets,
                        int64_t n_docs) {
    const auto path = dir / name;
    auto f = h5::Group::create_file(path);
    f.set_attr("format", std::string(kShardFormat));
    f.set_attr("format_version", int64_t{1});
    f.set_attr("corpus", std::string("x"));
    f.set_attr("tokenizer_path", std::string("t"));
    f.set_attr("vocab_size", int64_t{259});
    f.set_attr("bos_id", int64_t{1});
    f.set_attr("eos_id", int64_t{2});
    f.set_attr("add_bos", int64_t{0});
    f.set_attr("num_documents", n_docs);
    f.set_attr("num_tokens", tokens.defined() ? tokens.numel() : int64_t{0});
    f.set_attr("content_hash", std::string("0"));
    if (tokens.defined()) f.write_tensor("tokens", tokens);
    if (offsets.defined()) f.write_tensor("doc_offsets", offsets);
    return path;
  };
  const auto tokens = torch::tensor({5, 6, 2, 7, 2}, torch::kInt);
  EXPECT_NO_THROW(TokenShard(make("ok.h5", tokens, torch::tensor({0, 3, 5}, torch::kLong), 2)));

  const std::vector<std::string> bad = {
      make("no_tokens.h5", torch::Tensor(), torch::tensor({0, 3, 5}, torch::kLong), 2),
      make("no_offsets.h5", tokens, torch::Tensor(), 2),
      make("short_offsets.h5", tokens, torch::tensor({0, 5}, torch::kLong), 2),
      make("decreasing.h5", tokens, torch::tensor({0, 4, 3, 5}, torch::kLong), 3),
      make("wrong_end.h5", tokens, torch::tensor({0, 3, 4}, torch::kLong), 2),
      make("float_tokens.h5", tokens.to(torch::kFloat), torch::tensor({0, 3, 5}, torch::kLong), 2),
  };
  for (const auto& path : bad) {
    const auto msg = error_of<FormatError>([&] { TokenShard s(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << path << ": " << msg;
  }
  {
    auto f = h5::Group::open_file(dir / "ok.h5", /*writable=*/true);
    f.set_attr("format_version", int64_t{2});
  }
  EXPECT_THROW(TokenShard(dir / "ok.h5"), FormatError);
  EXPECT_THROW(TokenShard(dir / "missing.h5"), IoError);
}
