// labels: unit
// Tokenizers against the reference libraries' ids (fixtures made with HF tokenizers and
// sentencepiece), the loaders' errors, SentencePiece training and the vocabulary check.
#include "core/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/tokenizer/pre_tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

namespace sfs = std::filesystem;
using json = nlohmann::json;
using fedsplit::testing::expect_error;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

const std::string kFixtures = fedsplit::testing::fixtures() + "/hf-tiny/tokenizers";
const std::string kBpeJson = kFixtures + "/bpe-bytelevel.json";
const std::string kSpmModel = kFixtures + "/spm-bpe.model";
const std::string kTrainingText = kFixtures + "/training-text.txt";

json reference() { return json::parse(read_file(kFixtures + "/reference.json")); }

std::vector<std::string> pieces_of(const tok::PreTokenizer& pre, const std::string& text) {
  std::vector<std::string> pieces;
  pre.split(text, pieces);
  return pieces;
}

tok::PreTokenizer split_step(const std::string& literal, const std::string& behavior, bool invert = false) {
  const json spec = {{"type", "Sequence"},
                     {"pretokenizers",
                      {{{"type", "Split"}, {"pattern", {{"String", literal}}}, {"behavior", behavior}, {"invert", invert}},
                       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  return tok::parse_pre_tokenizer(spec, "test");
}

// Runs a SentencePiece command-line tool (the reference implementation) over `lines`; returns its
// output, one line per input line.
std::vector<std::string> run_spm_tool(const std::string& command, const std::vector<std::string>& lines,
                                      const TempDir& dir) {
  std::string input;
  for (const auto& line : lines) input += line + "\n";
  write_text(dir / "tool_in.txt", input);
  const std::string full = command + " < " + (dir / "tool_in.txt") + " > " + (dir / "tool_out.txt");
  EXPECT_EQ(std::system(full.c_str()), 0) << full;
  std::vector<std::string> out;
  std::istringstream in(read_file(dir / "tool_out.txt"));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// Lines that exercise normalization and segmentation corners (spm tools read one line at a time).
std::vector<std::string> tricky_lines() {
  return {"", " ", "   leading and trailing   ", "multiple   inner \t tabs", "\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3 full width",
          "ligature \xEF\xAC\x81ne \xE2\x91\xA0 circled", "e\xCC\x81 combining vs \xC3\xA9", "\xE3\x80\x80ideographic space",
          "nbsp\xC2\xA0here", "zero\xE2\x80\x8Bwidth", "emoji \xF0\x9F\x90\x8B\xF0\x9F\x8C\x8A", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E CJK",
          "\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A Arabic", "control\x01\x02" "chars", "bad utf8 \xFF\xFE end", "truncated \xE2\x82",
          "<s> and </s> and <unk> as text", "\xE2\x96\x81" "already" "\xE2\x96\x81" "escaped", "1234567890 3.14159", "ALL CAPS Ishmael"};
}

// Encodes every line of the training text and the tricky lines with `model`, here and with
// spm_encode, and decodes the ids here and with spm_decode.
void expect_matches_spm_tools(const std::string& model, const TempDir& dir) {
  // scripts/setup installs them (Debian's sentencepiece); a machine without them skips the check.
  if (std::system("command -v spm_encode > /dev/null") != 0) GTEST_SKIP() << "spm_encode is not installed";
  std::vector<std::string> lines = tricky_lines();
  std::istringstream text(read_file(kTrainingText));
  for (std::string line; std::getline(text, line);) lines.push_back(line);
  const auto tok = load_tokenizer(model);
  const auto expected = run_spm_tool("spm_encode --output_format=id --model=" + model, lines, dir);
  ASSERT_EQ(expected.size(), lines.size());
  std::vector<std::string> id_lines;
  size_t mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto ids = tok->encode(lines[i]);
    if (ids != parse_ids(expected[i]) && ++mismatches <= 5)
      ADD_FAILURE() << model << " line " << i << " '" << lines[i] << "': spm_encode gives " << expected[i];
    std::string id_line;
    for (const auto id : ids) id_line += (id_line.empty() ? "" : " ") + std::to_string(id);
    id_lines.push_back(id_line);
  }
  EXPECT_EQ(mismatches, 0u);
  const auto decoded = run_spm_tool("spm_decode --input_format=id --model=" + model, id_lines, dir);
  ASSERT_EQ(decoded.size(), lines.size());
  for (size_t i = 0; i < lines.size(); ++i)
    EXPECT_EQ(tok->decode(tok->encode(lines[i])), decoded[i]) << model << " line " << i;
}

TEST(Tokenizer, ByteLevelBpeMatchesReference) {
  const auto tok = load_tokenizer(kBpeJson);
  const json ref = reference();
  ASSERT_EQ(ref["samples"].size(), ref["bpe_bytelevel"].size());
  for (size_t i = 0; i < ref["samples"].size(); ++i) {
    const std::string text = ref["samples"][i];
    EXPECT_EQ(tok->encode(text), ref["bpe_bytelevel"][i].get<std::vector<int32_t>>()) << "sample " << i;
    EXPECT_EQ(tok->decode(tok->encode(text)), text) << "sample " << i;  // byte-level BPE is lossless
  }
  EXPECT_EQ(tok->vocab_size(), 1000);
  EXPECT_EQ(tok->path(), kBpeJson);
  EXPECT_EQ(tok->eos_id(), 0);  // <|endoftext|>, the only special token
  EXPECT_EQ(tok->bos_id(), -1);
}

TEST(Tokenizer, SentencePieceMatchesReference) {
  const auto tok = load_tokenizer(kSpmModel);
  const json ref = reference();
  for (size_t i = 0; i < ref["samples"].size(); ++i) {
    const std::string text = ref["samples"][i];
    EXPECT_EQ(tok->encode(text), ref["spm_bpe"][i].get<std::vector<int32_t>>()) << "sample " << i;
    // SentencePiece collapses whitespace runs and drops leading spaces, tabs and newlines; text
    // without them comes back as it was.
    const bool lossless = text.find_first_of("\t\n") == std::string::npos && text.find("  ") == std::string::npos &&
                          (text.empty() || text[0] != ' ');
    if (lossless) {
      EXPECT_EQ(tok->decode(tok->encode(text)), text) << "sample " << i;
    }
  }
  EXPECT_EQ(tok->vocab_size(), 1000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
}

TEST(Tokenizer, SentencePieceMatchesSpmTools) {
  // The fixture (BPE, byte fallback) and models trained here: unigram, and BPE without byte
  // fallback (unknown characters become <unk>, runs of them one <unk>).
  TempDir dir("tok_spm_tools");
  expect_matches_spm_tools(kSpmModel, dir);
  SentencePieceTrainOptions options;
  options.input = kTrainingText;
  options.vocab_size = 400;
  options.model_type = "unigram";
  options.model_prefix = dir / "unigram";
  train_sentencepiece(options);
  expect_matches_spm_tools(dir / "unigram.model", dir);
  options.model_type = "bpe";
  options.byte_fallback = false;
  options.vocab_size = 150;
  options.model_prefix = dir / "bpe_unk";
  train_sentencepiece(options);
  expect_matches_spm_tools(dir / "bpe_unk.model", dir);
}

TEST(Tokenizer, AddedTokensAreCutOutBeforeBpe) {
  const auto tok = load_tokenizer(kBpeJson);
  const auto a = tok->encode("whale ");
  const auto b = tok->encode(" ship");
  std::vector<int32_t> expected = a;
  expected.push_back(0);
  expected.insert(expected.end(), b.begin(), b.end());
  EXPECT_EQ(tok->encode("whale <|endoftext|> ship"), expected);
  EXPECT_EQ(tok->decode(expected), "whale  ship");  // special tokens are left out
}

TEST(Tokenizer, InvalidUtf8RoundTripsThroughByteLevelBpe) {
  const auto tok = load_tokenizer(kBpeJson);
  const std::string text = "ok \xff\xfe bytes \xe2\x82 cut";
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
}

TEST(Tokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  for (const auto& path : {kBpeJson, kSpmModel}) {
    const auto tok = load_tokenizer(path);
    expect_error<DataError>([&] { tok->decode({5, 1000}); }, {"1000", path});
    expect_error<DataError>([&] { tok->decode({-1}); }, {"-1", path});
  }
}

TEST(Tokenizer, Gpt2SplitPattern) {
  const auto pre = tok::parse_pre_tokenizer(json{{"type", "ByteLevel"}, {"add_prefix_space", false}}, "test");
  EXPECT_EQ(pieces_of(pre, "Hello world's  test 123!!\n\n"),
            (std::vector<std::string>{"Hello", " world", "'s", " ", " test", " 123", "!!", "\n\n"}));
  EXPECT_EQ(pieces_of(pre, "Ünïcödé 🐋."), (std::vector<std::string>{"Ünïcödé", " 🐋."}));
  const auto prefixed = tok::parse_pre_tokenizer(json{{"type", "ByteLevel"}, {"add_prefix_space", true}}, "test");
  EXPECT_EQ(pieces_of(prefixed, "Hi"), (std::vector<std::string>{" Hi"}));
  EXPECT_EQ(pieces_of(prefixed, " Hi"), (std::vector<std::string>{" Hi"}));
  EXPECT_TRUE(pieces_of(prefixed, "").empty());
}

TEST(Tokenizer, Llama3SplitSequence) {
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const json spec = {{"type", "Sequence"},
                     {"pretokenizers",
                      {{{"type", "Split"}, {"pattern", {{"Regex", llama3}}}, {"behavior", "Isolated"}, {"invert", false}},
                       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  const auto pre = tok::parse_pre_tokenizer(spec, "test");
  EXPECT_EQ(pieces_of(pre, "I'M 12345 ok\n\n"),
            (std::vector<std::string>{"I", "'M", " ", "123", "45", " ok", "\n\n"}));
}

TEST(Tokenizer, SplitBehaviors) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of(split_step("-", "Isolated"), "a-b--c"), (V{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(pieces_of(split_step("-", "Removed"), "a-b--c"), (V{"a", "b", "c"}));
  EXPECT_EQ(pieces_of(split_step("-", "MergedWithPrevious"), "a-b--c"), (V{"a-", "b-", "-", "c"}));
  EXPECT_EQ(pieces_of(split_step("-", "MergedWithNext"), "a-b--c"), (V{"a", "-b", "-", "-c"}));
  EXPECT_EQ(pieces_of(split_step("-", "Contiguous"), "a-b--c"), (V{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(pieces_of(split_step("-", "Removed", true), "a-b--c"), (V{"-", "-", "-"}));
  expect_error<FormatError>([] { split_step("-", "Sideways"); }, {"Sideways"});
}

TEST(Tokenizer, Qwen2StyleTokenizerJsonLoads) {
  // The fixture's vocabulary with the Qwen2 normalizer and pre-tokenizer shapes.
  TempDir dir("tok_qwen2");
  json spec = json::parse(read_file(kBpeJson));
  spec["normalizer"] = {{"type", "NFC"}};
  spec["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  spec["model"]["ignore_merges"] = true;
  write_text(dir / "tokenizer.json", spec.dump());
  const auto tok = load_tokenizer(dir.path());
  const std::string composed = "caf\xc3\xa9 1851";
  EXPECT_EQ(tok->decode(tok->encode(composed)), composed);
  EXPECT_EQ(tok->encode("cafe\xcc\x81 1851"), tok->encode(composed));  // NFC composes e + U+0301
  EXPECT_EQ(tok->encode("1851").size(), 4u);                       // Qwen2 splits digits one by one
}

TEST(Tokenizer, BosEosFromTokenizerConfig) {
  TempDir dir("tok_bos_eos");
  sfs::copy_file(kBpeJson, dir / "tokenizer.json");
  write_text(dir / "tokenizer_config.json",
        R"({"bos_token": {"content": "<|endoftext|>", "__type": "AddedToken"}, "eos_token": null})");
  const auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->bos_id(), 0);
  EXPECT_EQ(tok->eos_id(), -1);
  write_text(dir / "tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  expect_error<FormatError>([&] { load_tokenizer(dir.path()); }, {dir / "tokenizer_config.json", "<|nope|>"});
}

TEST(Tokenizer, LoadsFromDirectory) {
  TempDir dir("tok_from_dir");
  sfs::copy_file(kSpmModel, dir / "tokenizer.model");
  EXPECT_EQ(load_tokenizer(dir.path())->path(), dir / "tokenizer.model");
  // tokenizer.json is preferred; a kind it cannot read falls back to the SentencePiece model.
  write_text(dir / "tokenizer.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  EXPECT_EQ(load_tokenizer(dir.path())->path(), dir / "tokenizer.model");
  sfs::copy_file(kBpeJson, dir / "tokenizer.json", sfs::copy_options::overwrite_existing);
  EXPECT_EQ(load_tokenizer(dir.path())->path(), dir / "tokenizer.json");
}

TEST(Tokenizer, LoadErrorsNameThePath) {
  TempDir dir("tok_load_errors");
  const std::string missing = dir / "missing.json";
  expect_error<IoError>([&] { load_tokenizer(missing); }, {missing, "does not exist"});
  expect_error<IoError>([&] { load_tokenizer(dir.path()); }, {dir.path()});  // empty directory

  const std::string truncated = dir / "truncated.json";
  write_text(truncated, read_file(kBpeJson).substr(0, 5000));
  expect_error<FormatError>([&] { load_tokenizer(truncated); }, {truncated, "not valid JSON"});

  const std::string not_model = dir / "notes.model";
  write_text(not_model, "this is a text file, not a model\n");
  expect_error<FormatError>([&] { load_tokenizer(not_model); }, {not_model, "not a SentencePiece model"});
  const std::string empty_model = dir / "empty.model";
  write_text(empty_model, "");
  expect_error<FormatError>([&] { load_tokenizer(empty_model); }, {empty_model, "not a SentencePiece model"});

  const std::string wordpiece = dir / "wordpiece.json";
  write_text(wordpiece, R"({"normalizer": {"type": "BertNormalizer"}, "pre_tokenizer": {"type": "BertPreTokenizer"},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {"[UNK]": 0, "a": 1}}, "decoder": {"type": "WordPiece"}})");
  expect_error<FormatError>([&] { load_tokenizer(wordpiece); }, {wordpiece, "WordPiece"});

  json metaspace = json::parse(read_file(kBpeJson));
  metaspace["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"}};
  const std::string metaspace_path = dir / "metaspace.json";
  write_text(metaspace_path, metaspace.dump());
  expect_error<FormatError>([&] { load_tokenizer(metaspace_path); }, {metaspace_path, "Metaspace"});

  json bad_merge = json::parse(read_file(kBpeJson));
  bad_merge["model"]["merges"].push_back({"zzq", "qzz"});
  const std::string bad_merge_path = dir / "bad_merge.json";
  write_text(bad_merge_path, bad_merge.dump());
  expect_error<FormatError>([&] { load_tokenizer(bad_merge_path); }, {bad_merge_path, "zzq"});
}

TEST(Tokenizer, TrainSentencePiece) {
  TempDir dir("tok_train");
  SentencePieceTrainOptions options;
  options.input = kTrainingText;
  options.model_prefix = dir / "out/spm";  // the directory is created
  options.vocab_size = 400;                 // 259 bytes and specials + the text's characters + merges
  train_sentencepiece(options);
  EXPECT_EQ(sfs::directory_iterator(dir / "out") == sfs::directory_iterator(), false);
  std::vector<std::string> names;
  for (const auto& e : sfs::directory_iterator(dir / "out")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"spm.model", "spm.vocab"}));  // no temporaries left

  const auto tok = load_tokenizer(dir / "out/spm.model");
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const std::string text = "Call me Ishmael, said the whale \xf0\x9f\x90\x8b to the ship.";
  EXPECT_EQ(tok->decode(tok->encode(text)), text);  // the emoji is unseen: byte fallback keeps it

  SentencePieceTrainOptions bad = options;
  bad.vocab_size = 0;
  expect_error<ConfigError>([&] { train_sentencepiece(bad); }, {"vocab_size"});
  bad = options;
  bad.input = dir / "missing.txt";
  expect_error<IoError>([&] { train_sentencepiece(bad); }, {bad.input});
  bad = options;
  bad.model_type = "wordpiece";
  expect_error<ConfigError>([&] { train_sentencepiece(bad); }, {"wordpiece"});
  bad = options;
  bad.vocab_size = 300;  // fewer than the 259 fixed pieces plus the text's 76 characters
  bad.model_prefix = dir / "small/spm";
  expect_error<ConfigError>([&] { train_sentencepiece(bad); }, {kTrainingText});
  EXPECT_FALSE(path_exists(dir / "small/spm.model"));
}

TEST(Tokenizer, CheckVocabFits) {
  const auto tok = load_tokenizer(kSpmModel);
  check_vocab_fits(*tok, 1000, "hf-tiny/llama");
  check_vocab_fits(*tok, 32000, "hf-tiny/llama");
  expect_error<DataError>([&] { check_vocab_fits(*tok, 512, "hf-tiny/llama"); },
                          {kSpmModel, "up to 999", "hf-tiny/llama", "vocab_size 512",
                           "use the tokenizer the model was trained with"});
}

TEST(Tokenizer, ByteLevelBpeThroughputAndThreads) {
  const auto tok = load_tokenizer(kBpeJson);
  const std::string base = read_file(kTrainingText);
  std::string text;
  while (text.size() < (2u << 20)) text += base;
  const auto start = std::chrono::steady_clock::now();
  const auto ids = tok->encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double mb_per_s = text.size() / 1e6 / seconds;
  std::printf("byte-level BPE: %.1f MB in %.2f s (%.1f MB/s), %zu tokens\n", text.size() / 1e6, seconds, mb_per_s,
              ids.size());
  EXPECT_GT(mb_per_s, 1.0);  // loose: the machine is shared; the target is ~10 MB in a few seconds
  EXPECT_EQ(tok->decode(ids), text);

  // One tokenizer, several threads: same ids as alone (the merge cache is shared).
  const std::string chunk = base.substr(0, 50000);
  const auto alone = tok->encode(chunk);
  std::vector<std::vector<int32_t>> results(3);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = tok->encode(chunk); });
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r, alone);
}

}  // namespace
}  // namespace fedsplit
