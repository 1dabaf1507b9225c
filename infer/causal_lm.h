// What generation and speculative decoding need of a model: logits for the next tokens read after a
// KV cache, and a way to forget the cache's tail. GgufRunner (one process) and the pipeline's
// driver (stages on several ranks) implement it.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "core/model/config.h"

namespace fedsplit {

class CausalLm {
 public:
  virtual ~CausalLm() = default;
  /// Reads `tokens` at positions position() .. position()+T-1, appending them to the cache, and
  /// returns their logits, [T, vocab] fp32 on the CPU. DataError when the context would overflow
  /// or an id is outside the vocabulary.
  virtual torch::Tensor forward(const std::vector<int64_t>& tokens) = 0;
  /// forward() that returns only the last token's logits, [1, vocab]: what a prompt needs, and
  /// cheaper where the head is a large share of the work (a pass of many tokens).
  virtual torch::Tensor forward_last(const std::vector<int64_t>& tokens) {
    const auto logits = forward(tokens);
    return logits.slice(0, logits.size(0) - 1);
  }
  /// Forgets every position >= `position` (0 <= position <= position()): the next forward reads
  /// from there. Speculative decoding rolls back rejected draft tokens with it.
  virtual void truncate(int64_t position) = 0;
  virtual int64_t position() const = 0;
  /// Positions the cache can hold.
  virtual int64_t context() const = 0;
  virtual const DecoderConfig& config() const = 0;
  void reset() { truncate(0); }
};

}  // namespace fedsplit
