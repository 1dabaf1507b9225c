// Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020 placement as an option): a small
// residual MLP y + scale * up(act(down(y))) on the output y of a block's attention output projection
// and/or MLP output projection, before the block's residual add. down [size, d] and up [d, size] both
// have biases; up starts at zero, so a fresh adapter is the identity. The base model stays frozen.
//
// Each adapted projection is replaced (parent->replace_module, as LoRA does) by a
// BottleneckProjection that shares the base weight and bias and holds the adapter as the submodules
// adapter_down and adapter_up, so parameters are named e.g.
// "layers.0.mlp.down_proj.adapter_down.weight".
//
// Adapter directory, in PEFT's layout though PEFT has no such type (fedsplit's own, PEFT cannot load it):
//   adapter_config.json        peft_type "BOTTLENECK", size, placement, activation, scale, target_modules
//   adapter_model.safetensors  base_model.model.<HF module path>.adapter_down.weight  [size, d]
//                              base_model.model.<HF module path>.adapter_down.bias    [size]
//                              base_model.model.<HF module path>.adapter_up.weight    [d, size]
//                              base_model.model.<HF module path>.adapter_up.bias      [d]
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

#include "core/model/decoder.h"
#include "core/model/layers.h"

namespace fedsplit {

/// Where and how large the adapters are.
struct BottleneckOptions {
  /// Width of the bottleneck (rows of down); > 0.
  int64_t size = 64;
  /// houlsby: after the attention output and after the MLP output; pfeiffer: after the MLP output only.
  std::string placement = "houlsby";
  /// The nonlinearity between down and up: relu | gelu | silu.
  std::string activation = "relu";
  /// Factor on the adapter's output (finite).
  double scale = 1.0;
};

/// A projection followed by a bottleneck adapter: y = x W^T + b; out = y + scale * up(act(down(y))).
/// Holds the base weight/bias (frozen, shared with the replaced projection) as `weight`/`bias`.
class BottleneckProjectionImpl : public ProjectionImpl {
 public:
  /// Wraps `base` with an adapter of width `size`; down and up (weights and biases) start at zero.
  BottleneckProjectionImpl(const ProjectionImpl& base, int64_t size, const std::string& activation, double scale);
  torch::Tensor forward(const torch::Tensor& x) override;
  void pretty_print(std::ostream& stream) const override;

  /// The adapter alone on a base output y: scale * up(act(down(y))).
  torch::Tensor adapter(const torch::Tensor& y);

  int64_t size;
  std::string activation;
  double scale;
  /// [size, out_features] with bias [size]
  Projection adapter_down{nullptr};
  /// [out_features, size] with bias [out_features]
  Projection adapter_up{nullptr};
};
TORCH_MODULE(BottleneckProjection);

/// Wraps the projections that `options.placement` selects in every block (attention output: o_proj /
/// gpt2 attn.c_proj; MLP output: down_proj / gpt2 mlp.c_proj) with BottleneckProjections: up zero,
/// down kaiming-uniform U(-1/sqrt(d), 1/sqrt(d)) like nn.Linear's default, biases zero, drawn on the
/// CPU from `seed` in module order. Freezes every other parameter. Throws ConfigError naming the
/// option for a bad size / placement / activation / scale, or when a selected projection is already
/// wrapped by an adapter.
void apply_bottleneck(Decoder& model, const BottleneckOptions& options, uint64_t seed);

/// The bottleneck projections of `model` by module path (empty without adapters).
std::map<std::string, BottleneckProjection> bottleneck_modules(const Decoder& model);

/// Writes the adapters of `model` to `dir` (created if needed), each file atomically. Throws
/// DataError if the model has none.
void save_bottleneck_adapter(const Decoder& model, const std::string& dir);

/// Applies the adapters the config in `dir` describes and loads their weights. Everything is checked
/// before the model changes: IoError for missing files, FormatError / ConfigError naming the key for
/// a bad config, FormatError naming the tensor for a missing, unexpected or misshapen one (expected
/// vs found).
void load_bottleneck_adapter(Decoder& model, const std::string& dir);

}  // namespace fedsplit
