#include "compress/sparsify.h"

#include <torch/torch.h>

#include "compress/calibration.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

torch::Tensor apply_mask(ProjectionImpl& projection, const torch::Tensor& scores, const PruneOptions& options) {
  torch::NoGradGuard no_grad;
  auto mask = prune_mask(scores, options).to(projection.weight.device());
  projection.weight.mul_(mask.to(projection.weight.dtype()));
  return mask;
}

}  // namespace

PruneMasks sparsify_model(Decoder& model, const std::vector<torch::Tensor>& calibration, const SparsifyOptions& options) {
  PruneMasks masks;
  if (options.method == "magnitude") {
    for (const auto& path : all_block_projection_paths(model)) {
      auto& projection = projection_at(model, path);
      masks[path] = apply_mask(projection, magnitude_scores(projection.weight.detach()), options.prune);
    }
    return masks;
  }
  if (options.method != "wanda") throw ConfigError("prune.method = " + options.method + ": expected magnitude or wanda");
  if (calibration.empty()) throw ConfigError("prune.method = wanda needs calibration data: set prune.calibration_batches > 0");
  std::map<std::string, InputNormCollector> norms;
  calibrate_blockwise(
      model, calibration,
      [&](const std::string& path, const torch::Tensor& x) {
        auto it = norms.find(path);
        if (it == norms.end()) it = norms.emplace(path, InputNormCollector(x.size(-1))).first;
        it->second.add_batch(x);
      },
      [&](int64_t layer) {
        for (const auto& path : block_projection_paths(model, layer)) {
          auto& projection = projection_at(model, path);
          const auto scores = wanda_scores(projection.weight.detach(), norms.at(path).norms().to(projection.weight.device()));
          masks[path] = apply_mask(projection, scores, options.prune);
          norms.erase(path);
        }
      });
  return masks;
}

double projection_sparsity(const Decoder& model) {
  int64_t zeros = 0, total = 0;
  for (const auto& path : all_block_projection_paths(model)) {
    const auto& w = projection_at(model, path).weight;
    zeros += (w == 0).sum().item<int64_t>();
    total += w.numel();
  }
  return total == 0 ? 0.0 : static_cast<double>(zeros) / static_cast<double>(total);
}

}  // namespace fedsplit
