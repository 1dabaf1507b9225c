// From a recipe's [data] section to ready token shards: fetch the corpora, train or load the
// tokenizer, tokenize into HDF5 shards. Everything lands in a cache folder keyed by its inputs,
// so a second run (or a second recipe on the same data) reuses it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fedsplit {

class Recipe;
class Tokenizer;

struct DataOptions {
  std::string corpus = "sotu";      ///< corpora: sotu, moby-dick, brown, spam, or paths (.txt/.jsonl/dir); a list
  std::string shards;               ///< prepared shard files (list); when set, `corpus` is not read
  std::string tokenizer;            ///< tokenizer file or directory; empty = train SentencePiece on the corpora
  int64_t vocab_size = 4096;        ///< vocabulary of a tokenizer trained here
  int64_t seq_len = 128;            ///< tokens per training sequence
  int64_t batch_size = 16;          ///< sequences per micro-batch
  double val_fraction = 0.05;       ///< fraction of documents held out for evaluation
  std::string filter;               ///< keep documents whose metadata matches, "key=value" (e.g. president=Lincoln)
  std::string cache_dir = ".cache"; ///< where corpora, tokenizers and shards are cached
};

/// Registers the [data] keys of `recipe` on `options`.
void bind_data_options(Recipe& recipe, DataOptions& options);

/// The tokenizer named by `options.tokenizer`, or one trained on the corpora (cached).
std::unique_ptr<Tokenizer> resolve_tokenizer(const DataOptions& options);

/// Shard paths for the recipe: `options.shards` if given, else one cached shard per corpus
/// tokenized with `tokenizer` (prepared on first use).
std::vector<std::string> resolve_shards(const DataOptions& options, const Tokenizer& tokenizer);

/// Trains a SentencePiece tokenizer on the text of `corpora`: writes <prefix>.model and .vocab.
void train_corpus_tokenizer(const std::vector<std::string>& corpora, int64_t vocab_size, const std::string& prefix,
                            const std::string& cache_dir);

/// Prepares one corpus into `out` (as `fedsplit data prepare` does).
void prepare_corpus(const std::string& corpus, const Tokenizer& tokenizer, const std::string& out,
                    const std::string& cache_dir, bool overwrite);

}  // namespace fedsplit
