#include "compress/prune.h"

#include <torch/torch.h>

#include <cmath>
#include <string>

#include "core/util/error.h"

namespace fedsplit {
namespace {

void check_weight(const torch::Tensor& w, const char* what) {
  if (w.dim() != 2)
    throw ConfigError(std::string(what) + " expects [out, in], got " + std::to_string(w.dim()) + " dimensions");
}

// floor(sparsity * count) weights of `count`.
int64_t pruned_count(double sparsity, int64_t count) {
  return static_cast<int64_t>(std::floor(sparsity * static_cast<double>(count)));
}

// Keeps all but the `pruned` lowest of each row of `scores` [rows, k].
torch::Tensor keep_top_of_rows(const torch::Tensor& scores, int64_t pruned) {
  const auto order = std::get<1>(torch::sort(scores, /*stable=*/true, /*dim=*/1, /*descending=*/false));
  auto mask = torch::ones_like(scores, scores.options().dtype(torch::kBool));
  if (pruned > 0) mask.scatter_(1, order.slice(1, 0, pruned), false);
  return mask;
}

}  // namespace

InputNormCollector::InputNormCollector(int64_t in_features) : in_features_(in_features) {
  if (in_features <= 0)
    throw ConfigError("InputNormCollector: in_features must be positive, got " + std::to_string(in_features));
}

void InputNormCollector::add_batch(const torch::Tensor& x) {
  if (x.dim() < 1 || x.size(-1) != in_features_)
    throw ConfigError("InputNormCollector: calibration inputs must end in " + std::to_string(in_features_) +
                      " features, got " + (x.dim() < 1 ? std::string("a scalar") : std::to_string(x.size(-1))));
  torch::NoGradGuard no_grad;
  const auto flat = x.detach().reshape({-1, in_features_}).to(torch::kFloat64);
  if (!sum_squares_.defined()) sum_squares_ = torch::zeros({in_features_}, flat.options());
  sum_squares_ += flat.square().sum(0).to(sum_squares_.device());
  tokens_ += flat.size(0);
}

torch::Tensor InputNormCollector::norms() const {
  if (tokens_ == 0) throw Error("InputNormCollector: no calibration inputs were added");
  return sum_squares_.sqrt().to(torch::kFloat32);
}

torch::Tensor magnitude_scores(const torch::Tensor& weight) {
  check_weight(weight, "magnitude_scores");
  return weight.detach().to(torch::kFloat32).abs();
}

torch::Tensor wanda_scores(const torch::Tensor& weight, const torch::Tensor& input_norms) {
  check_weight(weight, "wanda_scores");
  if (input_norms.dim() != 1 || input_norms.size(0) != weight.size(1))
    throw ConfigError("wanda_scores: input norms must be [" + std::to_string(weight.size(1)) +
                      "], one per input feature");
  return magnitude_scores(weight) * input_norms.detach().to(weight.device(), torch::kFloat32).unsqueeze(0);
}

torch::Tensor prune_mask(const torch::Tensor& scores, const PruneOptions& o) {
  check_weight(scores, "prune_mask");
  torch::NoGradGuard no_grad;
  const int64_t out = scores.size(0), in = scores.size(1);
  if (o.m > 0) {
    if (o.n <= 0 || o.n >= o.m)
      throw ConfigError("N:M pruning needs 0 < n < m, got " + std::to_string(o.n) + ":" + std::to_string(o.m));
    if (in % o.m != 0)
      throw ConfigError("N:M pruning: m " + std::to_string(o.m) + " does not divide in_features " + std::to_string(in));
    // Each group of m consecutive inputs is a row of its own, with m - n of m removed.
    const auto groups = scores.reshape({out * (in / o.m), o.m});
    return keep_top_of_rows(groups, o.m - o.n).reshape({out, in});
  }
  if (o.n != 0) throw ConfigError("N:M pruning needs m > 0 with n " + std::to_string(o.n));
  if (!(o.sparsity >= 0 && o.sparsity < 1))
    throw ConfigError("pruning sparsity must lie in [0, 1), got " + std::to_string(o.sparsity));
  if (o.per_row) return keep_top_of_rows(scores, pruned_count(o.sparsity, in));
  return keep_top_of_rows(scores.reshape({1, out * in}), pruned_count(o.sparsity, out * in)).reshape({out, in});
}

}  // namespace fedsplit
