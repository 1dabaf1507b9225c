// Weight pruning masks for a linear layer's weight W [out, in] (true = keep, false = prune):
// - magnitude: score |W_ij|;
// - Wanda (Sun et al., 2023): score |W_ij| * ||X_j||_2, X_j the j-th input feature over the
//   calibration tokens, so a small weight on a loud input can outrank a larger one on a quiet input.
// Unstructured pruning removes the lowest-scored `sparsity` fraction of each output row (Wanda's
// comparison group; for magnitude too by default) or of the whole matrix; N:M keeps the n
// highest-scored of every m consecutive inputs of a row (2:4 is what sparse tensor cores run).
// Ties are broken toward the lower input index (a stable sort).
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace fedsplit {

/// What to prune and how.
struct PruneOptions {
  /// Fraction of weights removed, in [0, 1): floor(sparsity * count) per comparison group.
  /// Unused with N:M.
  double sparsity = 0.5;
  /// Unstructured only: compare within each output row (true) or across the whole matrix.
  bool per_row = true;
  /// N:M semi-structured when m > 0: keep n of every m consecutive inputs of a row (0 < n < m).
  int64_t n = 0;
  int64_t m = 0;
};

/// Running sum over tokens of x_j^2 for each input feature j of one layer: the statistics Wanda needs.
class InputNormCollector {
 public:
  explicit InputNormCollector(int64_t in_features);
  /// Adds the inputs `x` [tokens, in] (or [..., in]; any float dtype, accumulated in fp64 on the
  /// first batch's device). Throws ConfigError for a last dimension other than in_features.
  void add_batch(const torch::Tensor& x);
  /// ||X_j||_2 over every token added so far, fp32 [in]. Throws Error before any token.
  torch::Tensor norms() const;
  /// sum of x_j^2, fp64 [in] (undefined before any token).
  const torch::Tensor& sum_squares() const { return sum_squares_; }
  int64_t tokens() const { return tokens_; }

 private:
  int64_t in_features_;
  int64_t tokens_ = 0;
  torch::Tensor sum_squares_;
};

/// |W|, fp32 [out, in].
torch::Tensor magnitude_scores(const torch::Tensor& weight);
/// |W_ij| * input_norms_j, fp32 [out, in]. Throws ConfigError unless input_norms is [in].
torch::Tensor wanda_scores(const torch::Tensor& weight, const torch::Tensor& input_norms);

/// The keep-mask (bool, scores' shape [out, in]) that `options` asks for, from `scores`. Throws
/// ConfigError (one line, naming the value) for a sparsity outside [0, 1), or n, m that do not
/// satisfy 0 < n < m with m dividing in.
torch::Tensor prune_mask(const torch::Tensor& scores, const PruneOptions& options);

}  // namespace fedsplit
