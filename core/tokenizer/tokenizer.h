// Tokenizers: SentencePiece models (.model) and HF byte-level BPE (tokenizer.json), behind one
// interface, both implemented here (libsentencepiece cannot share a process with LibTorch). Ids
// match the reference libraries exactly (see tests/core/test_tokenizer.cpp). A loaded tokenizer
// is immutable and safe to use from several threads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fedsplit {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  /// Token ids of `text`, without BOS/EOS (callers add those).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  /// Text of `ids`; special tokens (BOS, EOS, ...) are left out. Throws DataError for an id outside
  /// the vocabulary.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  /// Number of ids the tokenizer can produce (largest id + 1).
  virtual int64_t vocab_size() const = 0;
  /// -1 where the tokenizer has no such token.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  /// The file it was loaded from.
  virtual const std::string& path() const = 0;
};

/// Loads a SentencePiece `.model`, a HF `tokenizer.json`, or a directory holding one of them
/// (tokenizer.json preferred, then tokenizer.model, then any *.model). Throws IoError/FormatError
/// naming the path.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

/// Options for training a SentencePiece model.
struct SentencePieceTrainOptions {
  std::string input;          ///< text file, one sentence/paragraph per line
  std::string model_prefix;   ///< writes <prefix>.model and <prefix>.vocab
  int vocab_size = 8000;      ///< pieces in the vocabulary
  std::string model_type = "bpe";  ///< bpe | unigram
  bool byte_fallback = true;  ///< unknown characters become byte tokens, never <unk>
  double character_coverage = 0.9995;  ///< fraction of characters covered by pieces (the rest: bytes/unk)
  int64_t input_sentence_size = 2000000;  ///< sentences sampled for training (0 = all)
  int max_sentence_length = 16384;  ///< bytes; longer lines are skipped by the trainer
  int num_threads = 2;              ///< trainer threads
};

/// Trains a SentencePiece model with the `spm_train` program (Debian package sentencepiece); ids:
/// 0 <unk>, 1 <s>, 2 </s>. Writes atomically. Throws ConfigError for bad options (including a
/// vocab_size the text cannot fill) and IoError for a missing input or a missing spm_train.
void train_sentencepiece(const SentencePieceTrainOptions& options);

/// Checks that every id `tokenizer` produces is a row of the model's embedding; throws DataError
/// naming both otherwise. `model_where` names the model (its path or recipe key) in the message.
void check_vocab_fits(const Tokenizer& tokenizer, int64_t model_vocab_size, const std::string& model_where);

}  // namespace fedsplit
