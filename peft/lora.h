// LoRA (Hu et al., 2021) on Decoder's projections: y = x W^T + b + scale * (dropout(x) A^T) B^T with
// A [r, in], B [out, r]. The base weight and bias stay frozen; only A and B train.
//
// Targets follow PEFT: a projection is wrapped when its module path equals a target name or ends
// with "." + the name. Paths are matched in HF's spelling (with the "model."/"transformer." prefix),
// so both "q_proj" and "model.layers.0.self_attn.q_proj" work. rank_pattern / alpha_pattern keys are
// regular expressions matched as PEFT does: the whole path must match "(.*\.)?(key)".
//
// DoRA (Liu et al., 2024; use_dora) as PEFT computes it: with W the base weight [out, in], s the
// scaling and m the trainable magnitude [out],
//   n = ||W + s B A|| per output row (L2 over the inputs), DETACHED: no gradient flows through it
//       (the paper's section 4.3, and PEFT);
//   y = (m / n) * (x W^T + s (x A^T) B^T) + b      (the bias is not scaled).
// m starts at n (= ||W|| as B = 0), so a fresh DoRA model computes the base output.
// In training with dropout PEFT applies (m / n - 1) to the base output of the dropped-out input;
// fedsplit does the same: y = x W^T + b + (m / n - 1) * (x' W^T) + (m / n) * s (x' A^T) B^T, x' = dropout(x).
//
// The base may be a QuantizedProjection (peft/quantized.h): the base path then dequantizes on the
// fly and DoRA's norm uses the dequantized weight; A, B and m stay in the weight's dtype and train.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/model/decoder.h"
#include "core/model/layers.h"
#include "peft/quantized.h"

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
  /// DoRA: a trainable magnitude per output row on top of the LoRA direction update.
  bool use_dora = false;
};

/// A projection with a LoRA update. Holds the base weight/bias (frozen) as `weight`/`bias`, so it
/// stays a drop-in ProjectionImpl; `merged` says whether the update is currently folded into weight.
/// Over a quantized base, `weight` is the base's 0-element tensor (a full matrix only while merged),
/// the base's codes and scales are this module's buffers `qweight`/`scales`, and `quantized_base`
/// is the (unregistered) QuantizedProjection that reads them; parameter names are those of a plain
/// base: weight, bias, lora_A, lora_B (and lora_magnitude with DoRA).
class LoraProjectionImpl : public ProjectionImpl {
 public:
  /// Wraps `base` (sharing its weight and bias tensors, or its codes if it is a QuantizedProjection)
  /// with rank `r`; A and B start at zero, and so does the DoRA magnitude (see init_magnitude).
  LoraProjectionImpl(const ProjectionImpl& base, int64_t r, double alpha, double dropout, bool rslora,
                     bool use_dora = false);
  torch::Tensor forward(const torch::Tensor& x) override;
  void pretty_print(std::ostream& stream) const override;
  /// Module::to, except that a quantized base's codes and scales keep their dtypes.
  using ProjectionImpl::to;  // keep to(device) visible beside the overrides
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;

  /// Folds the update into weight (no-op when merged); forward then is a plain linear. LoRA:
  /// W + s B A. DoRA: (m / ||W + s B A||) * (W + s B A), keeping the row norms for unmerge.
  /// Over a quantized base, weight becomes the dequantized matrix with the update folded in.
  void merge();
  /// Restores the base weight (no-op when not merged): W' - s B A for LoRA; W' / (m / n) - s B A for
  /// DoRA with the norms kept by merge (exact up to rounding; a row with m = 0 cannot come back, as
  /// in PEFT); a quantized base just drops the merged matrix (exact).
  void unmerge();
  /// The low-rank direction update s * B A, [out, in], in the weight's dtype, for LoRA and DoRA
  /// alike (PEFT's get_delta_weight). For DoRA it is not the change merge makes to the weight: that
  /// is merged_weight() - base_weight().
  torch::Tensor delta_weight() const;
  /// The base weight W [out, in] in `dtype` (dequantized for a quantized base). A merged plain base
  /// holds no W (TORCH_CHECK): unmerge first.
  torch::Tensor base_weight(torch::Dtype dtype) const;
  /// The weight the adapted projection computes with: W + s B A, or DoRA's
  /// (m / ||W + s B A||) * (W + s B A); [out, in] in the weight's dtype. Requires not merged.
  torch::Tensor merged_weight() const;
  /// DoRA: sets the magnitude to the row norms ||W + s B A|| so that the output is the base one
  /// when B = 0 (TORCH_CHECK that DoRA is on).
  void init_magnitude();

  int64_t r;
  double alpha;
  double dropout;
  bool rslora;
  /// alpha / r, or alpha / sqrt(r) with rslora.
  double scaling;
  bool merged = false;
  /// Off: forward computes the base projection alone (PEFT's disable_adapter), e.g. for a frozen
  /// decoder that shares the base weights with an adapted encoder.
  bool enabled = true;
  /// [r, in_features]
  torch::Tensor lora_A;
  /// [out_features, r]
  torch::Tensor lora_B;
  bool use_dora;
  /// DoRA's magnitude m [out_features] (parameter "lora_magnitude"); undefined without DoRA.
  torch::Tensor lora_magnitude;
  /// The quantized base whose codes this module holds as buffers; null for a plain base.
  std::shared_ptr<QuantizedProjectionImpl> quantized_base;

 private:
  // x W^T (no bias) through the base: a plain linear or the quantized matmul.
  torch::Tensor base_linear(const torch::Tensor& x) const;
  // DoRA's m / ||W + s B A||, [out], detached norms, in `dtype`.
  torch::Tensor dora_scale(torch::Dtype dtype) const;
  // DoRA: the row norms merge divided by, for unmerge.
  torch::Tensor merge_norms_;
};
TORCH_MODULE(LoraProjection);

/// Every projection of `model` by module path (Decoder's spelling, e.g. "layers.0.self_attn.q_proj").
std::vector<std::string> projection_paths(const Decoder& model);

/// The HF module path of a Decoder module path (adds "model."/"transformer."; lm_head stays).
std::string hf_module_path(const std::string& path, ModelFamily family);

/// Wraps every projection whose path matches a target with a LoraProjection: A kaiming-uniform
/// (PEFT's init, drawn from `seed` in module order), B zero, so the model's output is unchanged;
/// with use_dora also a magnitude m = ||W|| per row. Projections may be QuantizedProjections
/// (quantize_frozen_base first): the adapters then sit over the quantized weights. Freezes every
/// other parameter. Throws ConfigError naming a target that matches no projection (listing the
/// model's projections), or for invalid r/alpha/dropout, or if LoRA is already applied.
void apply_lora(Decoder& model, const LoraOptions& options, uint64_t seed);

/// The LoRA projections of `model` by module path (empty without LoRA).
std::map<std::string, LoraProjection> lora_modules(const Decoder& model);

/// The LoRA parameters by parameter name ("layers.0.self_attn.q_proj.lora_A", ... ".lora_B", and
/// ".lora_magnitude" for DoRA): what trains.
std::map<std::string, torch::Tensor> lora_parameters(const Decoder& model);

/// Turns every adapter of `model` on or off (see LoraProjectionImpl::enabled); adapters must be unmerged.
void set_lora_enabled(Decoder& model, bool enabled);

/// Folds every adapter into its base weight / takes it out again (exact inverse up to rounding).
void merge_lora(Decoder& model);
void unmerge_lora(Decoder& model);

/// Merges, then replaces every LoRA projection by a plain Projection holding the merged weight, so
/// that the model has only HF parameters again (e.g. for save_hf_model). Parameters stay frozen.
/// Over a quantized base the plain Projection holds dequantized W + update.
void merge_and_unload(Decoder& model);

/// Replaces every LoRA projection by a plain Projection holding its base weight (unmerged first),
/// or by its QuantizedProjection, dropping the adapters: PEFT's unload. Parameters keep their
/// requires_grad flags.
void unload_lora(Decoder& model);

}  // namespace fedsplit
