// Codecs for what crosses a split cut: activations ("smashed data") and their gradients, and the
// token ids of the labels in vanilla split learning. A message is self-describing: decode needs
// nothing but its bytes, checks every size against the message length before reading, and throws a
// one-line FormatError for a truncated or corrupt message.
//
// Wire format (little-endian; all offsets in bytes):
//   0   4 bytes   magic "FSX1"
//   4   u8        kind: 0 fp32, 1 fp16, 2 bf16, 3 int8, 4 topk, 5 token ids
//   5   u8        dtype the tensor decodes to: 0 float32, 1 float16, 2 bfloat16, 3 int64
//   6   u8        ndim, 1..8
//   7   u8        topk: bytes per index (2 = uint16, 4 = int32); 0 for the other kinds
//   8   int64     sizes[ndim], each >= 0
//   then the payload; "rows" are the vectors along the last dimension (one per token of [B, T, H]),
//   rows = numel / D with D = sizes[ndim-1]:
//   fp32       numel float32
//   fp16       numel float16 (IEEE half: values beyond +-65504 become inf; use bf16 for such models)
//   bf16       numel bfloat16
//   int8       rows float32 scales, then numel int8 q; x = q * scale, scale = absmax(row) / 127
//              (per-token symmetric absmax; error at most scale / 2 per element)
//   topk       uint32 k, then rows * k float32 values, then rows * k indices (uint16 when D <= 65536,
//              else int32), each row's indices strictly ascending; the other entries are 0
//   token ids  numel int32
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace fedsplit {

enum class CodecKind : uint8_t { fp32 = 0, fp16 = 1, bf16 = 2, int8 = 3, topk = 4 };

/// How activations or gradients are encoded (recipe value: fp32 | fp16 | bf16 | int8 | topk:F).
struct Codec {
  CodecKind kind = CodecKind::fp32;
  /// topk: the fraction of each row kept, 0 < F <= 1 (k = ceil(F * D), at least 1).
  double topk_fraction = 1.0;
};

/// Parses a codec value ("fp32", "fp16", "bf16", "int8", "topk:0.1"); ConfigError naming `key` and
/// the accepted values otherwise.
Codec parse_codec(const std::string& text, const std::string& key = "split.codec");
/// The recipe value of `codec` (parse_codec's inverse).
std::string to_string(const Codec& codec);

/// k of topk for rows of length `row_length`: ceil(fraction * row_length) clamped to [1, row_length]
/// (0 for empty rows).
int64_t topk_count(double fraction, int64_t row_length);

/// The message for a floating-point tensor (any device, dim >= 1) under `codec`.
std::string encode_tensor(const torch::Tensor& tensor, const Codec& codec);
/// The CPU tensor of a message made by encode_tensor, in the dtype it was encoded from.
/// FormatError naming `what` (e.g. "activation from rank 1") for anything malformed.
torch::Tensor decode_tensor(const std::string& bytes, const std::string& what);

/// The message for token ids (int64, dim >= 1, values in [0, 2^31)), sent as int32.
std::string encode_token_ids(const torch::Tensor& ids);
/// The int64 CPU tensor of a message made by encode_token_ids; FormatError naming `what` otherwise.
torch::Tensor decode_token_ids(const std::string& bytes, const std::string& what);

}  // namespace fedsplit
