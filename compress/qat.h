// Quantization-aware training (QAT): every attention and MLP projection of a Decoder is replaced by
// a QatProjection that computes with its weight fake-quantized (compress/rtn.h: symmetric absmax
// per group of input features, scales from the current weights, straight-through gradients), and
// optionally with its input fake-quantized per token (absmax over the features, int8, straight-
// through). The fp32 weights keep training; at the end finalize_quantized replaces each projection
// by a plain one holding its RTN-quantized (dequantized) weight and returns the scales as a
// QuantRecord, so that the saved model and an export hold the very codes QAT trained toward.
// lm_head and the embeddings stay fp32.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compress/quant_record.h"
#include "compress/rtn.h"
#include "core/model/decoder.h"
#include "core/model/layers.h"

namespace fedsplit {

class Recipe;

/// The [qat] section.
struct QatOptions {
  /// Weight bits: 8 or 4.
  int64_t bits = 4;
  /// Input features per weight scale (must divide every projection's in_features); 0 = per output channel.
  int64_t group_size = 32;
  /// 0 = weights only; 8 = each projection's input fake-quantized to int8 per token (absmax) as well.
  int64_t activation_bits = 0;
};

/// Registers the [qat] keys.
void bind_qat_options(Recipe& recipe, QatOptions& options);

/// The weight quantizer of `options`.
WeightQuantOptions weight_quant_options(const QatOptions& options);

/// Per-token fake quantization of x [..., features] to `bits` (8): scale = max |x| over the last
/// dimension / qmax, x_q = round(x / scale) · scale (0 where the scale is 0), in x's dtype. The
/// gradient passes straight through (|x| <= qmax · scale always, so nothing is clipped).
torch::Tensor fake_quantize_activation(const torch::Tensor& x, int bits);

/// A projection computing x_q W_q^T + b: W_q = fake_quantize(weight), x_q = x or its per-token
/// fake quantization. `weight` and `bias` are its own trainable copies of the source's (parameter
/// names as a plain projection's, so checkpoints and HF names are unchanged).
class QatProjectionImpl : public ProjectionImpl {
 public:
  QatProjectionImpl(const ProjectionImpl& source, const WeightQuantOptions& weight_options, int activation_bits);
  torch::Tensor forward(const torch::Tensor& x) override;
  void pretty_print(std::ostream& stream) const override;

  WeightQuantOptions weight_options;
  int activation_bits;
};
TORCH_MODULE(QatProjection);


/// Checks `options` against every projection of `model` (bits, group size dividing in_features):
/// ConfigError naming qat.<key> and the projection otherwise.
void check_qat_options(const Decoder& model, const QatOptions& options);

/// Replaces every attention/MLP projection by a QatProjection; every parameter trains.
void apply_qat(Decoder& model, const QatOptions& options);

/// Replaces every attention/MLP projection (plain or QAT) by a plain projection holding
/// rtn_quantize(weight).weight, frozen, and returns the record (method `method`) of their scales
/// keyed by parameter path ("layers.0.self_attn.q_proj.weight"). On a fresh model this is RTN.
QuantRecord finalize_quantized(Decoder& model, const QatOptions& options, const std::string& method);

}  // namespace fedsplit
