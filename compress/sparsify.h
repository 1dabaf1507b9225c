// Unstructured and N:M pruning of a model's projections, in place: magnitude (no data) or Wanda
// (calibration data, block by block; see compress/calibration.h). The keep-masks are returned so
// that recovery fine-tuning can hold the pruned weights at zero.
#pragma once
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

#include "compress/prune.h"
#include "core/model/decoder.h"

namespace fedsplit {

struct SparsifyOptions {
  /// magnitude | wanda
  std::string method = "wanda";
  /// Sparsity, comparison group and N:M pattern.
  PruneOptions prune;
};

/// Keep-masks (bool [out, in], on the weight's device) by projection module path.
using PruneMasks = std::map<std::string, torch::Tensor>;

/// Prunes every projection of `model` and returns the masks. `calibration` holds token-id batches
/// [B, T] (Wanda only). ConfigError naming the recipe key for an unknown method or Wanda without data.
PruneMasks sparsify_model(Decoder& model, const std::vector<torch::Tensor>& calibration, const SparsifyOptions& options);

/// Fraction of zeros among the elements of every projection weight of `model`.
double projection_sparsity(const Decoder& model);

}  // namespace fedsplit
