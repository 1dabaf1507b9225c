// Structured pruning: whole attention heads and MLP channels removed, so that the model really
// shrinks (fewer heads, a narrower MLP; the same config for every block, as HF configs require).
// Scores, per block:
//   MLP channel c:   ||X_c|| * ||W_down[:, c]||, X_c the down projection's input c over the
//                    calibration tokens (Wanda's |W|*||X|| summed over a column); magnitude: ||W_down[:, c]||.
//   attention head h: sqrt(sum over its dims d of (||X_d|| * ||W_o[:, d]||)^2), X the output
//                    projection's input; magnitude: the Frobenius norm of W_o's columns of h.
// A head's removal takes its q_proj rows and o_proj columns; key/value heads stay, and every
// key/value group loses the same number of query heads so that grouped-query attention keeps its
// layout. Removed channels take their gate/up rows and down columns.
// llama and qwen2 only (gpt2 fuses q|k|v into one projection).
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

#include "core/model/decoder.h"

namespace fedsplit {

struct StructuredPruneOptions {
  /// magnitude | wanda
  std::string method = "wanda";
  /// Fraction of query heads removed from each key/value group (rounded to whole heads; at least
  /// one head per group stays).
  double head_fraction = 0.0;
  /// Fraction of MLP channels removed per block (rounded so that the kept width stays a multiple
  /// of 32 when it was one: GGUF's quantized blocks hold 32 values).
  double channel_fraction = 0.0;
};

/// Query heads kept per key/value group and MLP channels kept, for `config` under `options`.
/// ConfigError (naming prune.head_fraction / prune.channel_fraction) for fractions outside [0, 1)
/// or a gpt2 model.
std::pair<int64_t, int64_t> structured_sizes(const DecoderConfig& config, const StructuredPruneOptions& options);

/// A new, smaller model (on `model`'s device) without the lowest-scored heads and channels of
/// each block; `calibration` holds token-id batches [B, T] (wanda only). `model` is not changed.
Decoder prune_structured(Decoder& model, const std::vector<torch::Tensor>& calibration,
                         const StructuredPruneOptions& options);

}  // namespace fedsplit
