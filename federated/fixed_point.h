// Client updates as vectors over the ring Z_2^32, the input of secure aggregation. A real value x
// becomes round(x / step) in two's complement; ring sums of encodings decode to the sum of the values,
// each term off by at most step / 2, as long as the true sum stays within ±2^31 steps. The step is
// chosen from a bound on that sum with a factor 2 of headroom for the rounding:
// step = sum_bound / 2^30.
//
// Layout of one client's vector: every update tensor flattened in name order, each value clamped to
// ±range and then multiplied by the client's weight; then weight · loss (step 2^-16) and the number of
// clamped values (step 1), so that the server learns the weighted training loss and how much was
// clamped only as sums, like the update itself.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

class UpdateEncoding {
 public:
  /// `shapes`: the update's tensors; `range`: largest |value| kept (> 0); `sum_bound`: largest |sum| of
  /// weighted values over the clients of a round (range when the weights sum to at most 1).
  UpdateEncoding(std::map<std::string, std::vector<int64_t>> shapes, double range, double sum_bound);

  /// Ring elements per client: the values plus two statistics.
  int64_t size() const { return values_ + 2; }
  double step() const { return step_; }

  /// The vector of `update` (tensors of the layout's names and shapes, any float dtype and device) with
  /// `weight` and the client's mean training `loss`. Throws DataError naming a missing or misshapen tensor
  /// or a non-finite value (a client never encodes what it cannot send).
  std::vector<uint32_t> encode(const TensorMap& update, double weight, double loss) const;

  struct Sum {
    TensorMap values;       ///< sum of the weighted values, fp32 CPU tensors in the layout
    double weighted_loss;   ///< sum of weight · loss
    int64_t clamped;        ///< values clamped to ±range, over all clients
  };
  /// Reads a ring sum of encode() outputs. Throws DataError for a vector of another size.
  Sum decode(const std::vector<uint32_t>& sum) const;

 private:
  std::map<std::string, std::vector<int64_t>> shapes_;
  double range_, step_;
  int64_t values_ = 0;
};

}  // namespace fedsplit
