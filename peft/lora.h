// LoRA (Hu et al., 2021) on Decoder's projections: y = x W^T + b + scale * (dropout(x) A^T) B^T with
// A [r, in], B [out, r]. The base weight and bias stay frozen; only A and B train.
//
// Targets follow PEFT: a projection is wrapped when its module path equals a target name or ends
// with "." + the name. Paths are matched in HF's spelling (with the "model."/"transformer." prefix),
// so both "q_proj" and "model.layers.0.self_attn.q_proj" work. rank_pattern / alpha_pattern keys are
// regular expressions matched as PEFT does: the whole path must match "(.*\.)?(key)".
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/model/decoder.h"
#include "core/model/layers.h"

namespace fedsplit {

/// What to adapt and how (the fields of PEFT's LoraConfig that fedsplit supports).
struct LoraOptions {
  /// Rank of the update (columns of B, rows of A); > 0.
  int64_t r = 8;
  /// Scale numerator: the update is multiplied by alpha / r (alpha / sqrt(r) with rslora).
  double alpha = 16;
  /// Dropout probability on the LoRA path's input, applied in training mode only; in [0, 1).
  double dropout = 0;
  /// Rank-stabilised LoRA: scale alpha / sqrt(r) instead of alpha / r.
  bool rslora = false;
  /// Module names to wrap, matched by suffix of the module path (e.g. "q_proj", "c_attn").
  std::vector<std::string> target_modules;
  /// Per-module rank overrides: regex key (matched as "(.*\.)?(key)" on the path) -> rank.
  std::map<std::string, int64_t> rank_pattern;
  /// Per-module alpha overrides: regex key -> alpha.
  std::map<std::string, double> alpha_pattern;
};

/// A projection with a LoRA update. Holds the base weight/bias (frozen) as `weight`/`bias`, so it
/// stays a drop-in ProjectionImpl; `merged` says whether scale * B A is currently folded into weight.
class LoraProjectionImpl : public ProjectionImpl {
 public:
  /// Wraps `base` (sharing its weight and bias tensors) with rank `r`; A and B start at zero.
  LoraProjectionImpl(const ProjectionImpl& base, int64_t r, double alpha, double dropout, bool rslora);
  torch::Tensor forward(const torch::Tensor& x) override;
  void pretty_print(std::ostream& stream) const override;

  /// Folds scale * B A into weight (no-op when merged); forward then skips the LoRA path.
  void merge();
  /// Subtracts scale * B A from weight again (no-op when not merged).
  void unmerge();
  /// scale * B A, [out, in], in the weight's dtype.
  torch::Tensor delta_weight() const;

  int64_t r;
  double alpha;
  double dropout;
  bool rslora;
  /// alpha / r, or alpha / sqrt(r) with rslora.
  double scaling;
  bool merged = false;
  /// [r, in_features]
  torch::Tensor lora_A;
  /// [out_features, r]
  torch::Tensor lora_B;
};
TORCH_MODULE(LoraProjection);

/// Every projection of `model` by module path (Decoder's spelling, e.g. "layers.0.self_attn.q_proj").
std::vector<std::string> projection_paths(const Decoder& model);

/// The HF module path of a Decoder module path (adds "model."/"transformer."; lm_head stays).
std::string hf_module_path(const std::string& path, ModelFamily family);

/// Wraps every projection whose path matches a target with a LoraProjection: A kaiming-uniform
/// (PEFT's init, drawn from `seed` in module order), B zero, so the model's output is unchanged.
/// Freezes every other parameter. Throws ConfigError naming a target that matches no projection
/// (listing the model's projections), or for invalid r/alpha/dropout, or if LoRA is already applied.
void apply_lora(Decoder& model, const LoraOptions& options, uint64_t seed);

/// The LoRA projections of `model` by module path (empty without LoRA).
std::map<std::string, LoraProjection> lora_modules(const Decoder& model);

/// The LoRA parameters by parameter name ("layers.0.self_attn.q_proj.lora_A", ... ".lora_B").
std::map<std::string, torch::Tensor> lora_parameters(const Decoder& model);

/// Folds every adapter into its base weight / takes it out again (exact inverse up to rounding).
void merge_lora(Decoder& model);
void unmerge_lora(Decoder& model);

/// Merges, then replaces every LoRA projection by a plain Projection holding the merged weight, so
/// that the model has only HF parameters again (e.g. for save_hf_model). Parameters stay frozen.
void merge_and_unload(Decoder& model);

/// Replaces every LoRA projection by a plain Projection holding its base weight (unmerged first),
/// dropping the adapters: PEFT's unload. Parameters keep their requires_grad flags.
void unload_lora(Decoder& model);

}  // namespace fedsplit
