// Prompt-with-context examples for in-context autoencoder (ICAE) fine-tuning: a context that the
// encoder compresses into memory slots, a prompt and an answer that the decoder reads/produces
// after those slots. Reads and writes them as JSONL, derives question-answer examples from State of
// the Union addresses, and batches them for the training loop (IcaeExampleStream).
//
// JSONL: one object per line, blank lines skipped:
//   {"context": "...", "prompt": "...", "answer": "...", "group": "..."}
// context and answer are non-empty strings, prompt is a string (may be empty), group is optional
// (string or number, kept as a string); other fields are ignored. Examples sharing a group are
// held out together.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/data/corpus.h"
#include "core/data/dataset.h"
#include "core/tokenizer/tokenizer.h"

namespace fedsplit {

struct IcaeTextExample {
  std::string context;  ///< what the encoder compresses
  std::string prompt;   ///< read by the decoder after the memory slots (may be empty)
  std::string answer;   ///< what the decoder learns to produce after the prompt
  std::string group;    ///< examples of one group stay on one side of the split ("" = its own group)
  bool operator==(const IcaeTextExample& o) const {
    return context == o.context && prompt == o.prompt && answer == o.answer && group == o.group;
  }
};

/// Reads JSONL examples. Throws IoError naming the path when it cannot be read, FormatError
/// "<path>:<line>: <what> (expected {...})" for a malformed line, DataError when it holds none.
std::vector<IcaeTextExample> read_icae_examples(const std::string& path);

/// Writes JSONL (keys in the order context, prompt, answer, group; group only when non-empty),
/// atomically (temporary name, then rename).
void write_icae_examples(const std::vector<IcaeTextExample>& examples, const std::string& path);

struct SotuQaOptions {
  int64_t passage_words = 120;        ///< words per passage (at least 12)
  int64_t passages_per_address = 2;   ///< passages drawn from each address (at least 1)
  uint64_t seed = 0;                  ///< seeds where passages and extractive questions start
};

/// Question-answer examples from State of the Union addresses (documents with metadata "president"
/// and "year"; DataError naming the document and the missing key otherwise). Each address gives
/// `passages_per_address` passages of `passage_words` consecutive whitespace-separated words (one
/// passage of all its words when it is not longer than that), starts drawn from mt19937_64 seeded by
/// splitmix64(seed ^ splitmix64(address index)). Each passage (words joined by single spaces) is the
/// context of three examples, in this order:
///   "Question: Which president delivered this address?\nAnswer:"      -> "<president>"
///   "Question: In which year was this address delivered?\nAnswer:"    -> "<year>"
///   "Question: Which words follow \"w[i-4] .. w[i-1]\" in the passage?\nAnswer:" -> "w[i] .. w[i+5]"
/// where 4 <= i <= words - 8, drawn from the same generator (the first quote at or after the draw
/// that occurs once in the passage, if any); passages under 12 words get no extractive question.
/// group = "<year> <president>". Passages of an address are in text order. ConfigError for bad
/// options.
std::vector<IcaeTextExample> sotu_qa_examples(const std::vector<Document>& addresses, const SotuQaOptions& options);

struct IcaeExampleOptions {
  int64_t context_tokens = 256;  ///< C: context positions per row (icae.context_tokens)
  int64_t tail_tokens = 64;      ///< Q: prompt + answer positions per row (icae.tail_tokens)
  int64_t batch_size = 8;        ///< B (data.batch_size)
  double val_fraction = 0.1;     ///< fraction of groups held out (data.val_fraction), in [0, 1)
  uint64_t split_seed = 0;       ///< seeds which groups are held out
  uint64_t shuffle_seed = 0;     ///< seeds the order of training examples in each epoch
};

/// One example as token ids.
struct TokenizedIcaeExample {
  int64_t number = 0;            ///< 1-based position in the list the stream was built from
  IcaeTextExample text;
  std::vector<int64_t> context;  ///< encode(context)
  std::vector<int64_t> prompt;   ///< encode(prompt); empty for an empty prompt
  std::vector<int64_t> answer;   ///< encode(answer), then EOS when the tokenizer has one
  /// prompt ++ answer: what follows the memory slots.
  std::vector<int64_t> tail() const;
};

/// ICAE fine-tuning batches.
///
/// Split: examples are grouped by `group` (an empty group is a group of its own); round(val_fraction
/// * groups) groups (at least 1 when val_fraction > 0 and there are 2 or more groups) with the
/// smallest splitmix64(split_seed ^ FNV-1a(group)) are held out. Both sides keep the input order.
///
/// Batch layout (the ICAE model relies on it), C = context_tokens, Q = tail_tokens:
///   input_ids [B, C + Q] int64: row b = the context tokens right-padded with -1 to C, then the
///             tail tokens (prompt ++ answer ++ EOS) right-padded with -1 to Q.
///   targets   [B, Q] int64: targets[b][j] = tail[j + 1] when tail index j + 1 is an answer token
///             (prompt length <= j + 1 < tail length), else -100.
/// So tail position j predicts tail token j + 1 and the loss covers answer tokens only; the first
/// tail token is predicted from the last memory slot and gets no loss.
///
/// Training: epoch e visits the training examples in epoch_permutation(num_train, shuffle_seed, e);
/// batch k holds permutation entries [k*B, (k+1)*B); a final partial batch is dropped, so an epoch
/// has floor(num_train / B) batches, and after the last one the next epoch starts. Validation
/// batches are the held-out examples in order, B per batch (the last may be smaller).
class IcaeExampleStream : public BatchStream {
 public:
  /// `source` names the data in errors (a file path, "sotu-qa"). Throws ConfigError naming the key
  /// for bad options, DataError (one line: source, example number, measured length, key to raise)
  /// for an example that does not fit, and DataError when no training example or batch is left.
  IcaeExampleStream(const std::vector<IcaeTextExample>& examples, const Tokenizer& tokenizer,
                    const IcaeExampleOptions& options, const std::string& source);

  Batch next_batch() override;
  DataPosition position() const override { return position_; }
  /// DataError unless 0 <= index < batches_per_epoch() and epoch >= 0.
  void seek(const DataPosition& position) override;
  std::vector<Batch> val_batches(int64_t max_batches = 0) const override;

  int64_t num_train() const { return static_cast<int64_t>(train_.size()); }
  int64_t num_val() const { return static_cast<int64_t>(val_.size()); }
  int64_t batches_per_epoch() const { return num_train() / options_.batch_size; }
  /// The examples of each side, in input order (an evaluator can run held-out ones one by one).
  const std::vector<TokenizedIcaeExample>& train_examples() const { return train_; }
  const std::vector<TokenizedIcaeExample>& val_examples() const { return val_; }
  const IcaeExampleOptions& options() const { return options_; }
  const std::string& source() const { return source_; }
  /// One line: examples and groups of each side, batches per epoch.
  std::string summary() const;
  /// 16 hex digits identifying what the training stream depends on (training tokens, C, Q, B,
  /// shuffle seed); save it with a DataPosition to check a resume continues the same stream.
  std::string fingerprint() const;

  /// The batch of `rows` (the layout above); exposed for evaluators that batch their own examples.
  static Batch make_batch(const std::vector<const TokenizedIcaeExample*>& rows, int64_t context_tokens,
                          int64_t tail_tokens);

 private:
  IcaeExampleOptions options_;
  std::string source_;
  std::vector<TokenizedIcaeExample> train_, val_;
  int64_t train_groups_ = 0, val_groups_ = 0;
  DataPosition position_;
  int64_t perm_epoch_ = -1;  // epoch whose permutation is cached
  std::vector<int64_t> perm_;
};

}  // namespace fedsplit
