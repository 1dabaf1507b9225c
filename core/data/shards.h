// Token shards: one HDF5 file per prepared corpus, holding every document's token ids and metadata.
//
// Format (version 1):
//   /tokens        int32 [num_tokens]; all documents concatenated in corpus order, each followed by
//                  EOS (and preceded by BOS when add_bos); chunked and deflate-compressed
//   /doc_offsets   int64 [num_documents + 1]; document i is tokens[doc_offsets[i], doc_offsets[i+1]),
//                  its EOS included; doc_offsets[0] = 0, non-decreasing, last = num_tokens
//   /meta/<key>    variable-length UTF-8 strings [num_documents], one dataset per metadata key that
//                  any document has; "" where a document lacks the key. In dataset names '%' and '/'
//                  are written %25 and %2F (and a key "." as %2E); the key itself is unchanged.
//   attributes of /:
//     format          "fedsplit-token-shard"
//     format_version  1 (int64); readers refuse larger versions
//     corpus          name the corpus was loaded by (sotu, a path, ...)
//     tokenizer_path  file the tokenizer was loaded from
//     vocab_size      tokenizer vocabulary size (int64); every id is below it
//     bos_id, eos_id  (int64; bos -1 when the tokenizer has none)
//     add_bos         1 if every document starts with BOS (int64)
//     num_documents, num_tokens (int64)
//     content_hash    16 hex digits: FNV-1a 64 of tokens, offsets, metadata and the attributes above
//                     except corpus/tokenizer_path; decides whether a rewrite would change the file
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/data/corpus.h"
#include "core/tokenizer/tokenizer.h"

namespace fedsplit {

namespace h5 {
class Group;
}

inline constexpr const char* kShardFormat = "fedsplit-token-shard";
inline constexpr int64_t kShardFormatVersion = 1;

struct ShardWriteOptions {
  std::string corpus;                 ///< corpus name recorded in the file (e.g. "sotu" or its path)
  bool overwrite = false;             ///< replace an existing file whose content differs (else IoError)
  bool add_bos = false;               ///< start every document with BOS (if the tokenizer has one)
  int threads = 1;                    ///< tokenizer threads; Tokenizer::encode must be safe to call concurrently
  int64_t chunk_tokens = 1 << 16;     ///< HDF5 chunk length of /tokens, in tokens
  bool compress = true;               ///< deflate the token chunks
  bool progress = true;               ///< show progress while tokenizing corpora over ~1 MB of text
};

/// Tokenizes `documents` and writes the shard at `path` atomically (temporary name, then rename).
/// An existing file with the same content is left untouched; one that differs (or is not a shard)
/// is replaced only with `overwrite`. Throws DataError if the tokenizer has no EOS or yields ids
/// outside [0, vocab_size), IoError if the file cannot be written.
void write_token_shard(const std::string& path, const std::vector<Document>& documents, const Tokenizer& tokenizer,
                       const ShardWriteOptions& options);

/// A shard opened for reading. Offsets and metadata are read at open (small); tokens on demand.
/// Opening checks the format and that datasets and offsets are consistent: FormatError naming the
/// path otherwise.
class TokenShard {
 public:
  explicit TokenShard(const std::string& path);

  const std::string& path() const { return path_; }
  const std::string& corpus() const { return corpus_; }
  const std::string& tokenizer_path() const { return tokenizer_path_; }
  int64_t vocab_size() const { return vocab_size_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  int64_t num_documents() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t num_tokens() const { return offsets_.back(); }
  const std::string& content_hash() const { return content_hash_; }

  /// doc_offsets: N + 1 entries; document i spans [offsets[i], offsets[i+1]) of the tokens.
  const std::vector<int64_t>& doc_offsets() const { return offsets_; }
  int64_t document_length(int64_t doc) const;
  /// Tokens of document `doc` (int32, EOS included).
  torch::Tensor document_tokens(int64_t doc) const;
  /// Tokens [begin, end) of the concatenation (int32).
  torch::Tensor read_tokens(int64_t begin, int64_t end) const;
  /// All tokens (int32).
  torch::Tensor tokens() const;

  /// Metadata keys, sorted.
  std::vector<std::string> meta_keys() const;
  bool has_meta(const std::string& key) const { return meta_.count(key) > 0; }
  /// Values of `key` for every document ("" where missing); DataError listing the keys if unknown.
  const std::vector<std::string>& meta(const std::string& key) const;
  /// Metadata of one document (keys with non-empty values).
  std::map<std::string, std::string> document_meta(int64_t doc) const;

  /// Throws DataError unless the shard's vocabulary fits a model with `model_vocab_size` ids.
  void check_vocab(int64_t model_vocab_size) const;

  /// Several lines: path, corpus, tokenizer, documents, tokens, and per metadata key the number of
  /// distinct values with the most frequent ones.
  std::string summary() const;

 private:
  void check_doc(int64_t doc) const;

  std::string path_;
  std::shared_ptr<h5::Group> file_;
  std::string corpus_, tokenizer_path_, content_hash_;
  int64_t vocab_size_ = 0;
  int32_t bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = false;
  std::vector<int64_t> offsets_;
  std::map<std::string, std::vector<std::string>> meta_;
};

}  // namespace fedsplit
