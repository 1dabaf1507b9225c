// Round-to-nearest (RTN) weight quantization, the baseline post-training quantizer, and the
// straight-through fake-quantization that quantization-aware training builds on.
//
// Conventions are peft/quantized.h's (RTN calls its quantize_weight): symmetric absmax per group
// of `group_size` consecutive input features of an output row,
//   scale = max |w| over the group / qmax,  code = round(w / scale) in [-qmax, qmax],
// qmax 127 for 8 bits and 7 for 4 bits; scales fp32 [out, in / group_size]; an all-zero group has
// scale 0 and codes 0. Per output channel is one group spanning the whole row (group_size 0 here).
#pragma once
#include <torch/types.h>

#include <cstdint>

namespace fedsplit {

/// Bits and grouping of a weight quantizer (RTN and GPTQ share it).
struct WeightQuantOptions {
  /// 8 or 4.
  int bits = 4;
  /// Input features per scale (32, 64, 128, ... dividing in_features); 0 = one scale per output
  /// channel (the whole row).
  int64_t group_size = 128;
};

/// A quantized weight [out, in] in both forms.
struct QuantizedTensor {
  /// The dequantized ("fake-quantized") weight, fp32 [out, in]: codes * their group's scale.
  torch::Tensor weight;
  /// int8 [out, in], unpacked (pack_int4 of peft/quantized.h packs 4-bit codes two per byte).
  torch::Tensor codes;
  /// fp32 [out, groups]: groups = in / group_size, 1 per output channel.
  torch::Tensor scales;
};

/// The group size that `options` means for a weight with `in_features` inputs: group_size, or
/// in_features for per-channel. Throws ConfigError (one line, naming the value) for bits other than
/// 4/8, a negative group size, one that does not divide in_features, or 4 bits with odd in_features.
int64_t effective_group_size(const WeightQuantOptions& options, int64_t in_features);

/// RTN of `weight` [out, in] (any float dtype; computed in fp32).
QuantizedTensor rtn_quantize(const torch::Tensor& weight, const WeightQuantOptions& options);

/// Codes of `values` for given `scales` (broadcastable to values): round(values / scale) clamped to
/// [-qmax, qmax], 0 where the scale is 0; int8. GPTQ quantizes one column at a time with this.
torch::Tensor quantize_to_codes(const torch::Tensor& values, const torch::Tensor& scales, int bits);

/// Straight-through fake quantization for QAT. Forward: the RTN weight of `weight` (scales from
/// its current values) in weight's dtype. Backward: the incoming gradient unchanged (absmax scales
/// clip nothing).
torch::Tensor fake_quantize(const torch::Tensor& weight, const WeightQuantOptions& options);

/// Straight-through fake quantization with given `scales` fp32 [out, groups] (e.g. frozen at the
/// start of QAT): forward quantize_to_codes * scale in weight's dtype; backward passes the
/// gradient through, and with `zero_clipped_grad` zeroes it where |w| > qmax * scale (the values
/// that the clamp cut, whose gradient through round-and-clamp is 0).
torch::Tensor fake_quantize_with_scales(const torch::Tensor& weight, const torch::Tensor& scales,
                                        const WeightQuantOptions& options, bool zero_clipped_grad);

}  // namespace fedsplit
