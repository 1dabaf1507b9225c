// ggml's tensor element types and the codecs fedsplit writes: F32, F16, Q8_0 and Q4_0, byte-exact
// with ggml's reference (quantize_row_*_ref) so that llama.cpp reads our GGUF files as its own.
//
// Blocks of 32 values along the innermost dimension, little-endian:
//   Q8_0 (34 bytes): fp16 d, then 32 int8 codes q;  d = amax / 127, q = round(x / d) (half away
//                    from zero); value = q * d.
//   Q4_0 (18 bytes): fp16 d, then 16 bytes; byte j holds value j in its low nibble and value j+16
//                    in its high nibble. d = m / -8 where m is the value of largest magnitude
//                    (first one on ties), q = min(15, trunc(x / d + 8.5)); value = (q - 8) * d.
// As in ggml, codes use the fp32 d (x times its reciprocal) while the block stores d as fp16.
//
// Torch-free on purpose: the GGUF parser and its fuzz target link this without LibTorch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fedsplit {

/// ggml's tensor type codes (ggml.h `enum ggml_type`), as stored in GGUF tensor infos.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

/// Storage layout of one ggml type: `block_bytes` bytes hold `block_values` consecutive values.
struct GgmlTypeTraits {
  const char* name;
  uint32_t block_values;
  uint32_t block_bytes;
};

/// The layout of a known type code; false for codes fedsplit does not know (the caller reports).
bool ggml_type_traits(uint32_t code, GgmlTypeTraits* out);

/// The layout of `type` (every enumerator is known).
GgmlTypeTraits ggml_type_traits(GgmlType type);

/// "Q4_0", "F32", ... or "type 99" for an unknown code.
std::string ggml_type_name(uint32_t code);

/// True for the types this file encodes and decodes: F32, F16, Q8_0, Q4_0.
bool ggml_type_has_codec(GgmlType type);

/// Bytes of a row of `cols` values of `type`; throws DataError unless cols is a multiple of the
/// type's block size.
size_t ggml_row_bytes(GgmlType type, int64_t cols);

/// IEEE binary16 from float, rounding to nearest even; overflow gives +-inf, NaN stays a quiet NaN
/// (0x7e00 with the sign), as ggml's conversion does.
uint16_t fp32_to_fp16(float x);

/// The float of an IEEE binary16 (exact).
float fp16_to_fp32(uint16_t h);

/// Encodes `rows` rows of `cols` floats (row-major) as `type`; cols must be a multiple of the block
/// size (DataError otherwise) and Q8_0/Q4_0 inputs finite (DataError naming the row otherwise).
std::vector<uint8_t> quantize_rows(GgmlType type, const float* values, int64_t rows, int64_t cols);

/// Decodes `count` values of `type` from `bytes` (exactly count / block_values blocks) into `out`.
/// `count` must be a multiple of the block size and the type one with a codec (DataError).
void dequantize_values(GgmlType type, const uint8_t* bytes, int64_t count, float* out);

}  // namespace fedsplit
