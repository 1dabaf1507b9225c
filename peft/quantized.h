// A frozen base stored quantized (QLoRA's memory saving, without bitsandbytes): each attention and
// MLP projection keeps its weight as int8 codes (bits = 8) or two 4-bit codes per byte (bits = 4)
// with one symmetric absmax scale per group of `group_size` consecutive input features of a row:
//   scale = max |w| over the group / qmax,  code = round(w / scale) in [-qmax, qmax],
//   w ~ code * scale, with |w - code * scale| <= scale / 2.
// qmax is 127 for int8 and 7 for int4: the 4-bit range is the symmetric [-7, 7] (code + 8 stored in
// 1 .. 15; nibble value 0 is never written), so that +-max |w| are both exact.
// Scales are fp32 whatever the weight's dtype: [out, in / group_size].
//
// The forward dequantizes one layer's weight at a time (to the input's dtype) and multiplies; its
// backward dequantizes again instead of keeping the fp32 matrix alive, so the frozen weights stay
// quantized in memory through training. LoRA (peft/lora.h) wraps these projections like plain ones.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <ostream>
#include <string>

#include "core/model/decoder.h"
#include "core/model/layers.h"

namespace fedsplit {

/// How to store the frozen base (recipe keys [peft] base_bits, base_group_size).
struct BaseQuantOptions {
  /// 0 = off (plain fp weights), 8 (int8) or 4 (packed int4).
  int bits = 0;
  /// Input features per scale; must divide every quantized projection's in_features.
  int64_t group_size = 64;
};

/// The codes and scales of one quantized weight.
struct QuantizedWeight {
  /// int8 [out, in] (bits 8) or uint8 [out, in / 2] (bits 4, see pack_int4).
  torch::Tensor data;
  /// fp32 [out, in / group_size].
  torch::Tensor scales;
};

/// Largest code magnitude: 127 for bits 8, 7 for bits 4.
int64_t quant_max(int bits);

/// Quantizes `weight` [out, in] per group of `group_size` input features (symmetric absmax, see the
/// file comment). The caller checks bits/group_size (TORCH_CHECK otherwise). An all-zero group gets
/// scale 0 and codes 0.
QuantizedWeight quantize_weight(const torch::Tensor& weight, int bits, int64_t group_size);

/// The weight [out, in] that `data`/`scales` encode, in `dtype` (computed in fp32 first).
torch::Tensor dequantize_weight(const torch::Tensor& data, const torch::Tensor& scales, int bits, int64_t group_size,
                                torch::Dtype dtype);

/// Packs int8 codes in [-8, 7] with an even last dimension n into uint8 [..., n / 2]: code + 8,
/// element 2i in the low nibble and 2i + 1 in the high nibble.
torch::Tensor pack_int4(const torch::Tensor& codes);
/// The int8 codes that pack_int4 packed (exact inverse).
torch::Tensor unpack_int4(const torch::Tensor& packed);

/// A projection whose frozen weight is stored quantized. `weight` holds no matrix (a 0-element
/// tensor of the original dtype, frozen); `qweight` and `scales` are buffers, so `to(device)` moves
/// them, while `to(dtype)` casts only the bias (codes and fp32 scales keep their types).
class QuantizedProjectionImpl : public ProjectionImpl {
 public:
  /// Quantizes `source`'s weight and shares its bias. `module` names the projection in errors:
  /// ConfigError for bits other than 4/8, group_size <= 0 or not dividing in_features.
  QuantizedProjectionImpl(const ProjectionImpl& source, int bits, int64_t group_size, const std::string& module);
  /// x W^T + b with W dequantized on the fly in x's dtype.
  torch::Tensor forward(const torch::Tensor& x) override;
  /// x W^T without the bias, through the quantized matmul (backward re-dequantizes, saves no W).
  torch::Tensor linear_no_bias(const torch::Tensor& x) const;
  /// W [out, in] in `dtype`.
  torch::Tensor dequantized_weight(torch::Dtype dtype = torch::kFloat32) const;
  /// Bytes of the stored weight: codes plus scales.
  int64_t weight_bytes() const;
  using ProjectionImpl::to;  // keep to(device) visible beside the overrides
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void pretty_print(std::ostream& stream) const override;

  int bits;
  int64_t group_size;
  /// int8 [out, in] or packed uint8 [out, in / 2].
  torch::Tensor qweight;
  /// fp32 [out, in / group_size].
  torch::Tensor scales;
};
TORCH_MODULE(QuantizedProjection);

/// Throws the ConfigError of QuantizedProjectionImpl's constructor for a projection with
/// `in_features` inputs named `module`, without quantizing anything.
void check_quant_options(int bits, int64_t group_size, int64_t in_features, const std::string& module);

/// Replaces every attention and MLP projection of `model` by a QuantizedProjection (no-op for bits
/// 0). lm_head and the embeddings stay as they are. Checks every projection before replacing any.
/// Throws ConfigError for bad options (naming the first projection the group size does not fit),
/// if LoRA is already applied (quantize first, then apply_lora / load_adapter) or if the base is
/// already quantized.
void quantize_frozen_base(Decoder& model, const BaseQuantOptions& options);

/// Bytes held by the weights of the attention and MLP projections (the ones quantize_frozen_base
/// replaces; lm_head, embeddings and biases are not counted): codes + scales for a quantized base,
/// numel * element size for a plain one. A LoRA projection counts its base (not A, B, magnitude).
int64_t frozen_weight_bytes(const Decoder& model);

/// Module::to for `module`'s own parameters and buffers (no children): parameters take `dtype`
/// when given, buffers only move to `device` (they hold integer codes and fp32 scales).
void to_keeping_buffer_dtypes(torch::nn::Module& module, const c10::optional<torch::Device>& device,
                              const c10::optional<torch::Dtype>& dtype, bool non_blocking);

}  // namespace fedsplit
