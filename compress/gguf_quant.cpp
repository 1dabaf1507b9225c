#include "compress/gguf_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/util/error.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "GGUF data is little-endian; these codecs copy bytes as they are"
#endif

namespace fedsplit {
namespace {

constexpr int kBlock = 32;            // values per Q8_0 / Q4_0 block
constexpr size_t kQ8Bytes = 2 + 32;   // fp16 d + 32 int8
constexpr size_t kQ4Bytes = 2 + 16;   // fp16 d + 32 nibbles

struct TypeRow {
  GgmlType type;
  GgmlTypeTraits traits;
};
// Block layouts from ggml-common.h (K-quants: blocks of 256 values).
constexpr TypeRow kTypes[] = {
    {GgmlType::F32, {"F32", 1, 4}},       {GgmlType::F16, {"F16", 1, 2}},
    {GgmlType::Q4_0, {"Q4_0", 32, 18}},   {GgmlType::Q4_1, {"Q4_1", 32, 20}},
    {GgmlType::Q5_0, {"Q5_0", 32, 22}},   {GgmlType::Q5_1, {"Q5_1", 32, 24}},
    {GgmlType::Q8_0, {"Q8_0", 32, 34}},   {GgmlType::Q8_1, {"Q8_1", 32, 36}},
    {GgmlType::Q2_K, {"Q2_K", 256, 84}},  {GgmlType::Q3_K, {"Q3_K", 256, 110}},
    {GgmlType::Q4_K, {"Q4_K", 256, 144}}, {GgmlType::Q5_K, {"Q5_K", 256, 176}},
    {GgmlType::Q6_K, {"Q6_K", 256, 210}}, {GgmlType::Q8_K, {"Q8_K", 256, 292}},
    {GgmlType::I8, {"I8", 1, 1}},         {GgmlType::I16, {"I16", 1, 2}},
    {GgmlType::I32, {"I32", 1, 4}},       {GgmlType::I64, {"I64", 1, 8}},
    {GgmlType::F64, {"F64", 1, 8}},       {GgmlType::BF16, {"BF16", 1, 2}},
};

uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

void store_fp16(uint8_t* p, float x) {
  const uint16_t h = fp32_to_fp16(x);
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

float load_fp16(const uint8_t* p) { return fp16_to_fp32(static_cast<uint16_t>(p[0] | (p[1] << 8))); }

void quantize_q8_0_block(const float* x, uint8_t* out) {
  float amax = 0.0f;
  for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float inv = d != 0.0f ? 1.0f / d : 0.0f;  // ggml multiplies by the reciprocal; so must we
  store_fp16(out, d);
  for (int j = 0; j < kBlock; ++j) {
    const float scaled = x[j] * inv;
    out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(scaled)));
  }
}

void quantize_q4_0_block(const float* x, uint8_t* out) {
  // The signed value of largest magnitude (the first on ties) maps to code 0, i.e. -8 * d.
  float amax = 0.0f;
  float extreme = 0.0f;
  for (int j = 0; j < kBlock; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      extreme = x[j];
    }
  }
  const float d = extreme / -8.0f;
  const float inv = d != 0.0f ? 1.0f / d : 0.0f;
  store_fp16(out, d);
  auto code = [&](float v) {
    const float scaled = v * inv;
    const float shifted = scaled + 8.5f;
    // Truncation toward zero of a value in [0.5, 16.5]; 16 clamps to 15 as in ggml.
    return static_cast<uint8_t>(std::min(15, std::max(0, static_cast<int>(shifted))));
  };
  for (int j = 0; j < kBlock / 2; ++j) {
    out[2 + j] = static_cast<uint8_t>(code(x[j]) | (code(x[j + kBlock / 2]) << 4));
  }
}

void dequantize_q8_0_block(const uint8_t* in, float* out) {
  const float d = load_fp16(in);
  for (int j = 0; j < kBlock; ++j) out[j] = static_cast<float>(static_cast<int8_t>(in[2 + j])) * d;
}

void dequantize_q4_0_block(const uint8_t* in, float* out) {
  const float d = load_fp16(in);
  for (int j = 0; j < kBlock / 2; ++j) {
    out[j] = static_cast<float>((in[2 + j] & 0x0f) - 8) * d;
    out[j + kBlock / 2] = static_cast<float>((in[2 + j] >> 4) - 8) * d;
  }
}

void check_codec(GgmlType type, const char* what) {
  if (!ggml_type_has_codec(type)) {
    throw DataError(std::string(what) + ": ggml type " + ggml_type_name(static_cast<uint32_t>(type)) +
                    " has no codec here (supported: F32 F16 Q8_0 Q4_0)");
  }
}

}  // namespace

bool ggml_type_traits(uint32_t code, GgmlTypeTraits* out) {
  for (const auto& row : kTypes) {
    if (static_cast<uint32_t>(row.type) == code) {
      *out = row.traits;
      return true;
    }
  }
  return false;
}

GgmlTypeTraits ggml_type_traits(GgmlType type) {
  GgmlTypeTraits traits{};
  if (!ggml_type_traits(static_cast<uint32_t>(type), &traits)) {
    throw DataError("unknown ggml type code " + std::to_string(static_cast<uint32_t>(type)));
  }
  return traits;
}

std::string ggml_type_name(uint32_t code) {
  GgmlTypeTraits traits{};
  return ggml_type_traits(code, &traits) ? traits.name : "type " + std::to_string(code);
}

bool ggml_type_has_codec(GgmlType type) {
  return type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::Q8_0 || type == GgmlType::Q4_0;
}

size_t ggml_row_bytes(GgmlType type, int64_t cols) {
  const GgmlTypeTraits traits = ggml_type_traits(type);
  if (cols < 0 || cols % traits.block_values != 0) {
    throw DataError(std::string("a row of ") + std::to_string(cols) + " values cannot be stored as " + traits.name +
                    ": the row length must be a multiple of " + std::to_string(traits.block_values));
  }
  return static_cast<size_t>(cols / traits.block_values) * traits.block_bytes;
}

uint16_t fp32_to_fp16(float x) {
  const uint32_t bits = float_bits(x);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return sign | 0x7e00;      // NaN
  if (abs >= 0x477ff000) return sign | 0x7c00;     // >= 65520 rounds past 65504: infinity
  if (abs <= 0x33000000) return sign;              // <= 2^-25 (a tie at most): zero
  const uint32_t exponent = abs >> 23;
  if (abs < 0x38800000) {
    // Below 2^-14: a half subnormal, m * 2^-24.
    const uint32_t mantissa = (abs & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - exponent;  // 14..24
    uint32_t q = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (q & 1))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = ((exponent - 112) << 10) | ((abs & 0x7fffff) >> 13);
  const uint32_t rest = abs & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // a carry moves into the exponent, as it should
  return static_cast<uint16_t>(sign | h);
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bits_float(sign | 0x7f800000 | (mantissa << 13));
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

std::vector<uint8_t> quantize_rows(GgmlType type, const float* values, int64_t rows, int64_t cols) {
  check_codec(type, "quantize");
  if (rows < 0) throw DataError("quantize: negative row count " + std::to_string(rows));
  const size_t row_bytes = ggml_row_bytes(type, cols);
  std::vector<uint8_t> out(row_bytes * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = values + r * cols;
    uint8_t* dst = out.data() + static_cast<size_t>(r) * row_bytes;
    switch (type) {
      case GgmlType::F32:
        if (cols > 0) std::memcpy(dst, x, static_cast<size_t>(cols) * 4);
        break;
      case GgmlType::F16:
        for (int64_t c = 0; c < cols; ++c) store_fp16(dst + 2 * c, x[c]);
        break;
      case GgmlType::Q8_0:
      case GgmlType::Q4_0:
        for (int64_t c = 0; c < cols; ++c) {
          if (!std::isfinite(x[c])) {
            throw DataError("quantize to " + ggml_type_name(static_cast<uint32_t>(type)) + ": row " +
                            std::to_string(r) + " column " + std::to_string(c) + " is not finite");
          }
        }
        for (int64_t b = 0; b < cols / kBlock; ++b) {
          if (type == GgmlType::Q8_0) {
            quantize_q8_0_block(x + b * kBlock, dst + b * kQ8Bytes);
          } else {
            quantize_q4_0_block(x + b * kBlock, dst + b * kQ4Bytes);
          }
        }
        break;
      default:
        break;  // unreachable: check_codec
    }
  }
  return out;
}

void dequantize_values(GgmlType type, const uint8_t* bytes, int64_t count, float* out) {
  check_codec(type, "dequantize");
  const GgmlTypeTraits traits = ggml_type_traits(type);
  if (count < 0 || count % traits.block_values != 0) {
    throw DataError("dequantize: " + std::to_string(count) + " values do not fill whole " + traits.name + " blocks");
  }
  if (count == 0) return;  // empty tensors may come with null pointers, which memcpy must not see
  switch (type) {
    case GgmlType::F32:
      std::memcpy(out, bytes, static_cast<size_t>(count) * 4);
      break;
    case GgmlType::F16:
      for (int64_t i = 0; i < count; ++i) out[i] = load_fp16(bytes + 2 * i);
      break;
    case GgmlType::Q8_0:
      for (int64_t b = 0; b < count / kBlock; ++b) dequantize_q8_0_block(bytes + b * kQ8Bytes, out + b * kBlock);
      break;
    case GgmlType::Q4_0:
      for (int64_t b = 0; b < count / kBlock; ++b) dequantize_q4_0_block(bytes + b * kQ4Bytes, out + b * kBlock);
      break;
    default:
      break;
  }
}

}  // namespace fedsplit
