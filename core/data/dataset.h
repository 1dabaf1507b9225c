// Training and validation batches from token shards.
//
// Documents of one or more shards are selected (optional subset, e.g. a federated client's
// documents, then an optional metadata filter), then split by document into train and validation:
// round(val_fraction * n) documents (at least 1 when val_fraction > 0) with the smallest
// hash(split_seed, shard content hash, document index) are held out, so the split depends on the
// seed and the documents alone, never on shard order or windows, and is the same on every platform.
//
// Each split's tokens are concatenated in document order (shard order, then document index) and
// cut into windows of T + 1 tokens with stride T (window w starts at w * T), so every token after
// the first is a target exactly once. Training visits the windows of each epoch in a permutation
// drawn from std::mt19937_64 seeded by (shuffle_seed, epoch), with our own Fisher-Yates and
// unbiased bounded draws (std::shuffle and the std distributions differ between libraries);
// batch k of an epoch holds permutation entries [k*B, (k+1)*B). A final partial batch is dropped,
// so an epoch has floor(windows / B) batches. Validation batches are the windows in order.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/data/shards.h"

namespace fedsplit {

/// Keeps documents whose metadata `key` equals `value` (or, with `exclude`, all others, including
/// documents lacking the key). An empty key keeps everything.
struct MetaFilter {
  std::string key;       ///< metadata key, e.g. "president"; empty = no filter
  std::string value;     ///< exact value, e.g. "Abraham Lincoln"
  bool exclude = false;  ///< keep the documents that do NOT match

  /// Parses "key=value", "key!=value" or "" (no filter); ConfigError otherwise.
  static MetaFilter parse(const std::string& text);
  bool active() const { return !key.empty(); }
  /// Whether a document whose value of `key` is `document_value` ("" when it has none) is kept.
  bool keeps(const std::string& document_value) const { return (document_value == value) != exclude; }
  std::string to_string() const;
};

struct DatasetOptions {
  int64_t seq_len = 256;      ///< T: tokens per training example (inputs and targets are T long)
  int64_t batch_size = 8;     ///< B: examples per batch
  double val_fraction = 0.1;  ///< fraction of the selected documents held out for validation (0 = none)
  uint64_t split_seed = 0;    ///< seeds which documents are held out
  uint64_t shuffle_seed = 0;  ///< seeds the order of training windows in each epoch
  MetaFilter filter;          ///< optional metadata filter applied before the split
};

/// A document of the dataset's shards: shard index (in the order given) and document index.
struct DocumentRef {
  int32_t shard = 0;
  int64_t doc = 0;
  bool operator==(const DocumentRef& o) const { return shard == o.shard && doc == o.doc; }
  bool operator<(const DocumentRef& o) const { return shard != o.shard ? shard < o.shard : doc < o.doc; }
};

struct Batch {
  torch::Tensor input_ids;  ///< [B, T] int64
  torch::Tensor targets;    ///< [B, T] int64: input_ids shifted left by one token
};

/// Where the training stream stands: the next batch is batch `index` of epoch `epoch`. Saved in
/// checkpoints; seek() to it on a dataset built with the same shards and options to resume bitwise.
struct DataPosition {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const DataPosition& o) const { return epoch == o.epoch && index == o.index; }
};

/// What a training loop reads: training batches in an order it can return to (position/seek), and
/// held-out batches. TokenDataset is the language-model stream; other jobs bring their own.
class BatchStream {
 public:
  virtual ~BatchStream() = default;
  /// The next training batch; advances position().
  virtual Batch next_batch() = 0;
  virtual DataPosition position() const = 0;
  /// Continues from `position` (DataError if it lies outside the stream).
  virtual void seek(const DataPosition& position) = 0;
  /// Up to `max_batches` held-out batches (all if <= 0), in order.
  virtual std::vector<Batch> val_batches(int64_t max_batches = 0) const = 0;
};

class TokenDataset : public BatchStream {
 public:
  /// Opens the shards at `paths`.
  TokenDataset(const std::vector<std::string>& paths, const DatasetOptions& options);
  /// Uses already opened shards; `subset` (if given) restricts the documents before the filter
  /// (partitioners hand each client its documents this way).
  TokenDataset(std::vector<std::shared_ptr<const TokenShard>> shards, const DatasetOptions& options,
               const std::optional<std::vector<DocumentRef>>& subset = std::nullopt);

  /// The next training batch; advances position() and moves to the next epoch after the last batch.
  Batch next_batch() override;
  DataPosition position() const override { return position_; }
  /// Continues from `position` (DataError if its index is past the epoch's batches).
  void seek(const DataPosition& position) override;

  /// Up to `max_batches` validation batches (all if <= 0), in order; the last may hold fewer than
  /// B rows. Empty when val_fraction is 0.
  std::vector<Batch> val_batches(int64_t max_batches = 0) const override;

  int64_t batches_per_epoch() const { return num_train_windows() / options_.batch_size; }
  int64_t num_train_windows() const { return windows(train_tokens_.numel()); }
  int64_t num_val_windows() const { return windows(val_tokens_.numel()); }
  int64_t num_train_tokens() const { return train_tokens_.numel(); }
  int64_t num_val_tokens() const { return val_tokens_.numel(); }
  const std::vector<DocumentRef>& train_documents() const { return train_docs_; }
  const std::vector<DocumentRef>& val_documents() const { return val_docs_; }
  const std::vector<std::shared_ptr<const TokenShard>>& shards() const { return shards_; }
  const DatasetOptions& options() const { return options_; }

  /// The shards' tokenizer vocabulary size (all shards agree).
  int64_t vocab_size() const { return shards_.front()->vocab_size(); }
  /// DataError naming the shard unless its vocabulary fits a model with `model_vocab_size` ids.
  void check_vocab(int64_t model_vocab_size) const;
  /// One line: documents, tokens, windows and batches of each split.
  std::string summary() const;
  /// 16 hex digits identifying what the training stream depends on (shard contents, selected
  /// documents, seq_len, batch_size, seeds). Save it with a DataPosition: a resume that finds a
  /// different fingerprint would not continue the same stream.
  std::string fingerprint() const;

 private:
  int64_t windows(int64_t tokens) const { return tokens > options_.seq_len ? (tokens - 1) / options_.seq_len : 0; }
  torch::Tensor gather(const std::vector<DocumentRef>& docs) const;
  Batch make_batch(const torch::Tensor& tokens, const int64_t* window_ids, int64_t rows) const;
  const std::vector<int64_t>& permutation(int64_t epoch);
  std::string describe_sources() const;

  std::vector<std::shared_ptr<const TokenShard>> shards_;
  DatasetOptions options_;
  std::vector<DocumentRef> train_docs_, val_docs_;
  torch::Tensor train_tokens_, val_tokens_;  // int32, concatenated
  DataPosition position_;
  int64_t perm_epoch_ = -1;                  // epoch whose permutation is cached
  std::vector<int64_t> perm_;
};

/// The permutation of [0, n) that epoch `epoch` uses with `seed` (exposed for tests and tools).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace fedsplit
