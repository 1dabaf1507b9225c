// Tokenizers: SentencePiece models (.model) and HF byte-level BPE (tokenizer.json), behind one
// interface. Ids match the reference libraries exactly (see tests/core/test_tokenizer.cpp).
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
  double character_coverage = 0.9995;
  int64_t input_sentence_size = 2000000;  ///< sentences sampled for training (0 = all)
  int num_threads = 2;
};

/// Trains a SentencePiece model; ids: 0 <unk>, 1 <s>, 2 </s>. Writes atomically.
void train_sentencepiece(const SentencePieceTrainOptions& options);

}  // namespace fedsplit
