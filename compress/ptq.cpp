#include "compress/ptq.h"

#include <torch/torch.h>

#include <map>

#include "compress/calibration.h"
#include "compress/rtn.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

void set_weight(ProjectionImpl& projection, const torch::Tensor& weight) {
  torch::NoGradGuard no_grad;
  projection.weight.copy_(weight.to(projection.weight.dtype()));
}

}  // namespace

QuantRecord quantize_model(Decoder& model, const std::vector<torch::Tensor>& calibration, const PtqOptions& options) {
  const auto& quant = options.gptq.quant;
  QuantRecord record;
  record.bits = quant.bits;
  record.group_size = quant.group_size;
  record.method = options.method;
  if (options.method == "rtn") {
    for (const auto& path : all_block_projection_paths(model)) {
      auto& projection = projection_at(model, path);
      const auto q = rtn_quantize(projection.weight.detach(), quant);
      set_weight(projection, q.weight);
      record.scales[path + ".weight"] = q.scales.cpu();
    }
    return record;
  }
  if (options.method != "gptq") throw ConfigError("quantize.method = " + options.method + ": expected rtn or gptq");
  if (calibration.empty())
    throw ConfigError("quantize.method = gptq needs calibration data: set quantize.calibration_batches > 0");
  if (options.gptq.act_order && quant.group_size > 0)
    throw ConfigError("quantize.act_order = true with quantize.group_size > 0 makes groups of scattered columns, "
                      "which GGUF blocks cannot hold: set act_order = false or group_size = 0");
  std::map<std::string, GptqHessian> hessians;
  calibrate_blockwise(
      model, calibration,
      [&](const std::string& path, const torch::Tensor& x) {
        auto it = hessians.find(path);
        if (it == hessians.end()) it = hessians.emplace(path, GptqHessian(x.size(-1))).first;
        it->second.add_batch(x);
      },
      [&](int64_t layer) {
        for (const auto& path : block_projection_paths(model, layer)) {
          auto& projection = projection_at(model, path);
          const auto result = gptq_quantize(projection.weight.detach(), hessians.at(path).hessian(), options.gptq);
          set_weight(projection, result.weight);
          record.scales[path + ".weight"] = result.scales.cpu();
          hessians.erase(path);
        }
      });
  return record;
}

}  // namespace fedsplit
