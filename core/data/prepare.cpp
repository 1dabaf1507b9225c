#include "core/data/prepare.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/config/recipe.h"
#include "core/data/corpus.h"
#include "core/data/shards.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/hash.h"
#include "core/util/log.h"

namespace fedsplit {
namespace {

// File-name-safe form of a corpus name or path ("/data/my notes.txt" -> "data_my_notes.txt").
std::string slug(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
  while (!out.empty() && (out.front() == '_' || out.front() == '.')) out.erase(out.begin());
  return out.empty() ? "corpus" : out;
}

// Names cache entries after the tokenizer file they were made with.
std::string file_digest(const std::string& path) {
  const std::string bytes = read_file(path);
  Fnv64 fnv;
  fnv.bytes(bytes.data(), bytes.size());
  return fnv.hex().substr(0, 12);
}

std::vector<Document> load(const std::string& corpus, const std::string& cache_dir) {
  CorpusOptions co;
  co.name = corpus;
  co.cache_dir = cache_dir + "/corpora";
  return load_corpus(co);
}

}  // namespace

void bind_data_options(Recipe& r, DataOptions& o) {
  r.add("data.corpus", &o.corpus, "corpora: sotu, moby-dick, brown, spam, or .txt/.jsonl/directory paths (a list)");
  r.add("data.shards", &o.shards, "prepared token shards (a list); when set, data.corpus is not read");
  r.add("data.tokenizer", &o.tokenizer, "tokenizer .model/tokenizer.json/dir; empty = train SentencePiece on the corpora");
  r.add("data.vocab_size", &o.vocab_size, "vocabulary of a tokenizer trained here", 259, 1000000);
  r.add("data.seq_len", &o.seq_len, "tokens per training sequence", 2, 1000000);
  r.add("data.batch_size", &o.batch_size, "sequences per micro-batch", 1, 1000000);
  r.add("data.val_fraction", &o.val_fraction, "fraction of documents held out for evaluation", 0.0, 0.9);
  r.add("data.filter", &o.filter, "keep documents whose metadata matches key=value (or key!=value)");
  r.add("data.cache_dir", &o.cache_dir, "cache for corpora, tokenizers and shards");
}

std::unique_ptr<Tokenizer> resolve_tokenizer(const DataOptions& o) {
  if (!o.tokenizer.empty()) return load_tokenizer(o.tokenizer);
  const auto corpora = split_list(o.corpus);
  if (corpora.empty()) throw ConfigError("data.corpus is empty and data.tokenizer is not set: name a corpus or a tokenizer");
  std::string name;
  for (const auto& c : corpora) name += (name.empty() ? "" : "+") + slug(c);
  const std::string dir = o.cache_dir + "/tokenizers";
  const std::string prefix = dir + "/spm-" + name + "-v" + std::to_string(o.vocab_size);
  if (!path_exists(prefix + ".model")) {
    make_dirs(dir);
    train_corpus_tokenizer(corpora, o.vocab_size, prefix, o.cache_dir);
  }
  return load_tokenizer(prefix + ".model");
}

void train_corpus_tokenizer(const std::vector<std::string>& corpora, int64_t vocab_size, const std::string& prefix,
                            const std::string& cache_dir) {
  log_info("training a SentencePiece tokenizer (vocab ", vocab_size, ") -> ", prefix, ".model");
  // SentencePiece reads one sentence per line; paragraphs are short enough to be lines.
  const std::string text_path = prefix + ".train-text.tmp";
  {
    std::ofstream out(text_path, std::ios::binary);
    if (!out) throw IoError("cannot write " + text_path + ": check the directory exists and is writable");
    for (const auto& corpus : corpora)
      for (const auto& doc : load(corpus, cache_dir)) {
        std::istringstream lines(doc.text);
        for (std::string line; std::getline(lines, line);)
          if (!line.empty()) out << line << '\n';
      }
  }
  SentencePieceTrainOptions t;
  t.input = text_path;
  t.model_prefix = prefix;
  t.vocab_size = static_cast<int>(vocab_size);
  try {
    train_sentencepiece(t);
  } catch (...) {
    std::remove(text_path.c_str());
    throw;
  }
  std::remove(text_path.c_str());
}

void prepare_corpus(const std::string& corpus, const Tokenizer& tokenizer, const std::string& out,
                    const std::string& cache_dir, bool overwrite) {
  const auto documents = load(corpus, cache_dir);
  ShardWriteOptions w;
  w.corpus = corpus;
  w.overwrite = overwrite;
  w.threads = 2;
  write_token_shard(out, documents, tokenizer, w);
}

std::vector<std::string> resolve_shards(const DataOptions& o, const Tokenizer& tokenizer) {
  if (!o.shards.empty()) {
    auto shards = split_list(o.shards);
    for (const auto& s : shards)
      if (!path_exists(s)) throw IoError("data.shards names " + s + ", which does not exist: run `fedsplit data prepare` first");
    return shards;
  }
  const auto corpora = split_list(o.corpus);
  if (corpora.empty()) throw ConfigError("set data.corpus or data.shards: the recipe names no data");
  const std::string dir = o.cache_dir + "/shards";
  make_dirs(dir);
  std::vector<std::string> shards;
  for (const auto& corpus : corpora) {
    const std::string path = dir + "/" + slug(corpus) + "-" + file_digest(tokenizer.path()) + ".h5";
    if (!path_exists(path)) {
      log_info("preparing ", corpus, " -> ", path);
      prepare_corpus(corpus, tokenizer, path, o.cache_dir, /*overwrite=*/false);
    }
    shards.push_back(path);
  }
  return shards;
}

}  // namespace fedsplit
