// GPTQ (Frantar et al., 2022): post-training quantization of a linear layer's weight W [out, in]
// that minimises the layer's output error ||X W^T - X Q^T||^2 over calibration inputs X rather
// than the weight error. With H = 2/n sum_x x x^T (the error's Hessian in each row of W), columns
// are quantized left to right; each column's rounding error e is spread over the columns not yet
// quantized in proportion to the rows of the upper Cholesky factor U of H^-1:
//   w_{i+1..} -= (w_i - q_i) / U_ii * U_{i, i+1..}.
// The updates are applied column by column inside a block of `block_size` columns and to the rest
// of the matrix once per block (the paper's lazy batch updates; same result, fewer passes over W).
// Scales follow compress/rtn.h (symmetric absmax, peft/quantized.h's qmax): per output channel from
// the whole weight before any update, or per group from the group's columns as they stand when the
// group's first column comes up, so a group's scale sees the error feedback of every earlier column
// (the reference code reads the matrix as of the block's start, missing the feedback from earlier
// groups of the same block; here the in-block values are used).
// act_order quantizes the columns by descending diag(H) (the inputs with the most energy first,
// while the most freedom is left to compensate); groups are then consecutive in that order, and
// g_idx maps each input column to its group.
#pragma once
#include <torch/types.h>

#include <cstdint>

#include "compress/rtn.h"

namespace fedsplit {

/// GPTQ's settings beside the bits and grouping.
struct GptqOptions {
  /// Bits and group size (0 = per output channel), as RTN.
  WeightQuantOptions quant;
  /// Columns per lazy-update block; a multiple of the group size.
  int64_t block_size = 128;
  /// Dampening added to diag(H): percdamp * mean(diag H); > 0 keeps H positive definite.
  double percdamp = 0.01;
  /// Quantize columns by descending diag(H).
  bool act_order = false;
};

/// A GPTQ-quantized weight.
struct GptqResult {
  /// The dequantized weight, fp32 [out, in]: codes[:, j] * scales[:, g_idx[j]].
  torch::Tensor weight;
  /// int8 [out, in], unpacked, in the original column order.
  torch::Tensor codes;
  /// fp32 [out, groups] (groups = in / group_size; 1 per output channel).
  torch::Tensor scales;
  /// int64 [in]: the group (column of `scales`) of each input column; j / group_size without act_order.
  torch::Tensor g_idx;
};

/// Accumulates H = 2/n sum x x^T (fp32) over the calibration inputs of one linear layer.
class GptqHessian {
 public:
  explicit GptqHessian(int64_t in_features);
  /// Adds the inputs `x` [tokens, in] (or [..., in]; any float dtype and device; H lives on the
  /// first batch's device). Throws ConfigError for a last dimension other than in_features.
  void add_batch(const torch::Tensor& x);
  /// H [in, in] fp32 over every token added so far. Throws Error before any token.
  torch::Tensor hessian() const;
  int64_t tokens() const { return tokens_; }
  int64_t in_features() const { return in_features_; }

 private:
  int64_t in_features_;
  int64_t tokens_ = 0;
  torch::Tensor sum_xxt_;  // sum of x x^T, fp32
};

/// Quantizes `weight` [out, in] with GPTQ for the Hessian `hessian` [in, in] (GptqHessian's).
/// Inputs that never fired (diag H = 0) get weight 0 and cannot disturb the rest. Throws
/// ConfigError for bad options or shapes, Error when H + damping is not positive definite.
GptqResult gptq_quantize(const torch::Tensor& weight, const torch::Tensor& hessian, const GptqOptions& options);

}  // namespace fedsplit
