// labels: unit
// ggml's Q8_0 / Q4_0 blocks and fp16 conversion: hand-computed blocks byte for byte, the codecs'
// error bounds on random data, and fp16 edge values against IEEE round-to-nearest-even.
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "compress/gguf_quant.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_one_line_error;

std::vector<uint8_t> q(GgmlType type, const std::vector<float>& x) {
  return quantize_rows(type, x.data(), 1, static_cast<int64_t>(x.size()));
}

std::vector<float> dq(GgmlType type, const std::vector<uint8_t>& bytes, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  dequantize_values(type, bytes.data(), count, out.data());
  return out;
}

float stored_scale(const std::vector<uint8_t>& bytes, size_t block, size_t block_bytes) {
  return fp16_to_fp32(static_cast<uint16_t>(bytes[block * block_bytes] | (bytes[block * block_bytes + 1] << 8)));
}

TEST(GgufQuant, Q8_0BlockWithUnitScaleRoundsHalfAwayFromZero) {
  // amax 127 gives d = 1 (fp16 0x3c00) and codes round(x): 2.5 -> 3 and -2.5 -> -3, not to even.
  std::vector<float> x(32, 0.0f);
  const float head[] = {127.0f, -3.4f, 2.5f, -2.5f, 0.49f, -0.51f, 100.6f, -127.0f, 1.5f, 64.0f};
  std::copy(std::begin(head), std::end(head), x.begin());
  x[31] = -0.5f;
  std::vector<uint8_t> expected(34, 0);
  expected[0] = 0x00;
  expected[1] = 0x3c;
  const int8_t codes[] = {127, -3, 3, -3, 0, -1, 101, -127, 2, 64};
  for (size_t j = 0; j < 10; ++j) expected[2 + j] = static_cast<uint8_t>(codes[j]);
  expected[2 + 31] = static_cast<uint8_t>(int8_t{-1});
  EXPECT_EQ(q(GgmlType::Q8_0, x), expected);
}

TEST(GgufQuant, Q8_0BlockScaleIsAmaxOver127InFp16) {
  // amax 2: d = 2/127 = 0.015748..; fp16: 2^-6 * (1 + 8/1024) -> exponent 9, mantissa 8 = 0x2408.
  // Codes use the fp32 d: 0.5 -> 31.75 -> 32, 0.1 -> 6.35 -> 6, -2 -> -127, 1.3 -> 82.55 -> 83.
  std::vector<float> x(32, 0.0f);
  x[0] = 0.5f;
  x[1] = 0.1f;
  x[2] = -2.0f;
  x[3] = 1.3f;
  const auto bytes = q(GgmlType::Q8_0, x);
  ASSERT_EQ(bytes.size(), 34u);
  EXPECT_EQ(bytes[0], 0x08);
  EXPECT_EQ(bytes[1], 0x24);
  EXPECT_EQ(static_cast<int8_t>(bytes[2]), 32);
  EXPECT_EQ(static_cast<int8_t>(bytes[3]), 6);
  EXPECT_EQ(static_cast<int8_t>(bytes[4]), -127);
  EXPECT_EQ(static_cast<int8_t>(bytes[5]), 83);
  for (size_t j = 6; j < 34; ++j) EXPECT_EQ(bytes[j], 0) << j;
}

TEST(GgufQuant, Q4_0BlockPacksLowThenHighHalves) {
  // The largest magnitude is -8, so d = -8 / -8 = 1 (0x3c00) and q = min(15, trunc(x + 8.5)).
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f;   // 0
  x[1] = 7.0f;    // 15
  x[2] = 7.6f;    // 16.1 -> 16 -> clamped to 15
  x[3] = -0.5f;   // 8.0 -> 8 (halves round up)
  x[4] = -0.6f;   // 7.9 -> 7
  x[5] = 0.5f;    // 9
  x[16] = 3.2f;   // 11.7 -> 11
  x[17] = -3.7f;  // 4.8 -> 4
  x[31] = 1.0f;   // 9.5 -> 9
  std::vector<uint8_t> codes(32, 8);
  codes[0] = 0;
  codes[1] = 15;
  codes[2] = 15;
  codes[3] = 8;
  codes[4] = 7;
  codes[5] = 9;
  codes[16] = 11;
  codes[17] = 4;
  codes[31] = 9;
  std::vector<uint8_t> expected = {0x00, 0x3c};
  for (size_t j = 0; j < 16; ++j) expected.push_back(static_cast<uint8_t>(codes[j] | (codes[j + 16] << 4)));
  EXPECT_EQ(q(GgmlType::Q4_0, x), expected);
  // And back: (q - 8) * d.
  const auto back = dq(GgmlType::Q4_0, expected, 32);
  for (size_t j = 0; j < 32; ++j) EXPECT_EQ(back[j], static_cast<float>(codes[j]) - 8.0f) << j;
}

TEST(GgufQuant, Q4_0PositiveExtremeGivesNegativeScaleAndClampsItsMirror) {
  // Largest magnitude +4 (first on ties with -4): d = 4 / -8 = -0.5 (fp16 0xb800), 1/d = -2.
  // 4 -> 0.5 -> 0; -4 -> 16.5 -> 16 -> 15 (clamped: decodes to -3.5); 1 -> 6.5 -> 6.
  std::vector<float> x(32, 0.0f);
  x[0] = 4.0f;
  x[1] = -4.0f;
  x[2] = 1.0f;
  const auto bytes = q(GgmlType::Q4_0, x);
  ASSERT_EQ(bytes.size(), 18u);
  EXPECT_EQ(bytes[0], 0x00);
  EXPECT_EQ(bytes[1], 0xb8);
  EXPECT_EQ(bytes[2], 0x80);  // x[0] code 0 low, x[16] (0.0) code 8 high
  EXPECT_EQ(bytes[3], 0x8f);
  EXPECT_EQ(bytes[4], 0x86);
  const auto back = dq(GgmlType::Q4_0, bytes, 32);
  EXPECT_EQ(back[0], 4.0f);
  EXPECT_EQ(back[1], -3.5f);
  EXPECT_EQ(back[2], 1.0f);
}

TEST(GgufQuant, AllZeroBlocksHaveZeroScaleAndCodes) {
  const std::vector<float> zeros(64, 0.0f);
  const auto q8 = q(GgmlType::Q8_0, zeros);
  EXPECT_EQ(q8, std::vector<uint8_t>(68, 0));
  const auto q4 = q(GgmlType::Q4_0, zeros);
  // ggml divides the zero extreme by -8: d is -0.0, stored as fp16 0x8000; codes all 8.
  std::vector<uint8_t> expected(36, 0x88);
  expected[0] = expected[18] = 0x00;
  expected[1] = expected[19] = 0x80;
  EXPECT_EQ(q4, expected);
  for (float v : dq(GgmlType::Q4_0, q4, 64)) EXPECT_EQ(v, 0.0f);
}

// Random rows over a wide range of magnitudes: every element decodes within the codec's bound.
// Codes are computed with the fp32 d and decoded with its fp16 rounding, so the bound adds
// |code| * |d - fp16(d)|.
TEST(GgufQuant, DequantizationErrorBounds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t rows = 64;
  const int64_t cols = 96;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::ldexp(1.0f, static_cast<int>(r % 24) - 12);
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = normal(rng) * scale;
  }
  const int64_t blocks = rows * cols / 32;

  const auto q8 = quantize_rows(GgmlType::Q8_0, x.data(), rows, cols);
  ASSERT_EQ(q8.size(), static_cast<size_t>(blocks * 34));
  const auto back8 = dq(GgmlType::Q8_0, q8, rows * cols);
  for (int64_t b = 0; b < blocks; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    const float d16 = stored_scale(q8, b, 34);
    // Half precision: 11 significant bits, or an absolute 2^-25 among the subnormals.
    EXPECT_LE(std::fabs(d16 - d), std::max(d * 0x1p-11f, 0x1p-25f) * 1.0001f);
    const float bound = d / 2 + 127 * std::fabs(d16 - d) + d * 1e-5f;
    for (int j = 0; j < 32; ++j) {
      ASSERT_LE(std::fabs(back8[b * 32 + j] - x[b * 32 + j]), bound) << "Q8_0 block " << b << " item " << j;
    }
  }

  const auto q4 = quantize_rows(GgmlType::Q4_0, x.data(), rows, cols);
  ASSERT_EQ(q4.size(), static_cast<size_t>(blocks * 18));
  const auto back4 = dq(GgmlType::Q4_0, q4, rows * cols);
  int clamped = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    float amax = 0.0f;
    float extreme = 0.0f;
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[b * 32 + j]) > amax) {
        amax = std::fabs(x[b * 32 + j]);
        extreme = x[b * 32 + j];
      }
    }
    const float d = extreme / -8.0f;
    const float d16 = stored_scale(q4, b, 18);
    const float slack = 8 * std::fabs(d16 - d) + std::fabs(d) * 1e-5f;
    for (int j = 0; j < 32; ++j) {
      const float v = x[b * 32 + j];
      const float err = std::fabs(back4[b * 32 + j] - v);
      if (v / d >= 7.5f) {
        // Code 16 does not exist: ggml clamps to 15, an error of up to one step.
        ++clamped;
        ASSERT_LE(err, std::fabs(d) + slack) << "Q4_0 clamped block " << b << " item " << j;
      } else {
        ASSERT_LE(err, std::fabs(d) / 2 + slack) << "Q4_0 block " << b << " item " << j;
      }
    }
  }
  EXPECT_GT(clamped, 0) << "the data should exercise the clamp";
}

TEST(GgufQuant, FloatTypesRoundTrip) {
  const std::vector<float> x = {1.0f, -2.5f, 65504.0f, 1e-8f, 0.1f, -0.0f, 3.14159f, 1e5f};
  const auto f32 = q(GgmlType::F32, x);
  EXPECT_EQ(f32.size(), 32u);
  EXPECT_EQ(dq(GgmlType::F32, f32, 8), x);
  const auto f16 = q(GgmlType::F16, x);
  ASSERT_EQ(f16.size(), 16u);
  const auto back = dq(GgmlType::F16, f16, 8);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(back[i], static_cast<float>(c10::Half(x[i]))) << x[i];
  EXPECT_TRUE(std::isinf(back[7]));
}

TEST(GgufQuant, Fp16EdgeValues) {
  struct Case {
    float x;
    uint16_t h;
  };
  const Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {0.1f, 0x2e66},
      {65504.0f, 0x7bff},           // largest half
      {65519.0f, 0x7bff},           // below the halfway point to 65536
      {65520.0f, 0x7c00},           // halfway, 65504 is odd: rounds to infinity
      {-1e6f, 0xfc00},
      {std::numeric_limits<float>::infinity(), 0x7c00},
      {-std::numeric_limits<float>::infinity(), 0xfc00},
      {0x1p-14f, 0x0400},           // smallest normal
      {0x1p-24f, 0x0001},           // smallest subnormal
      {0x1p-25f, 0x0000},           // halfway to it: ties to even (0)
      {0x1.000002p-25f, 0x0001},    // just above halfway
      {0x3p-25f, 0x0002},           // 1.5 * 2^-24: ties to even (2)
      {0x5p-25f, 0x0002},           // 2.5 * 2^-24: ties to even (2)
      {0x1p-14f - 0x1p-25f, 0x0400},  // 1023.5 * 2^-24: rounds up into the normals
      {1.0f + 0x1p-11f, 0x3c00},    // tie, 0x3c00 even
      {1.0f + 0x3p-11f, 0x3c02},    // tie, 0x3c02 even
      {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01},
      {1e-10f, 0x0000},
      {std::numeric_limits<float>::denorm_min(), 0x0000},
  };
  for (const auto& c : cases) EXPECT_EQ(fp32_to_fp16(c.x), c.h) << c.x;
  EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()), 0x7e00);
  EXPECT_EQ(fp32_to_fp16(-std::numeric_limits<float>::quiet_NaN()), 0xfe00);
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7e00)));
  EXPECT_EQ(fp16_to_fp32(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_fp32(0x7bff), 65504.0f);
  EXPECT_EQ(fp16_to_fp32(0xfc00), -std::numeric_limits<float>::infinity());
}

// Every half that is not a NaN survives half -> float -> half; random floats over the whole
// exponent range convert as c10::Half does (IEEE round to nearest even).
TEST(GgufQuant, Fp16MatchesIeeeRounding) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) continue;
    ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(static_cast<uint16_t>(h))), h);
  }
  std::mt19937 rng(3);
  std::uniform_int_distribution<uint32_t> bits(0, 0xffffffff);
  for (int i = 0; i < 200000; ++i) {
    uint32_t u = bits(rng);
    // Bias half of the draws to the exponents around fp16's range, where rounding happens.
    if (i % 2 == 0) u = (u & 0x807fffff) | ((100u + (u >> 23) % 45u) << 23);
    float x;
    std::memcpy(&x, &u, 4);
    if (std::isnan(x)) continue;
    ASSERT_EQ(fp32_to_fp16(x), c10::Half(x).x) << std::hexfloat << x;
  }
}

TEST(GgufQuant, RowLengthMustFillBlocks) {
  const std::vector<float> x(33, 1.0f);
  expect_one_line_error<DataError>([&] { quantize_rows(GgmlType::Q8_0, x.data(), 1, 33); },
                                   {"33", "Q8_0", "multiple of 32"});
  expect_one_line_error<DataError>([&] { quantize_rows(GgmlType::Q4_0, x.data(), 1, 33); }, {"Q4_0"});
  EXPECT_EQ(quantize_rows(GgmlType::F16, x.data(), 1, 33).size(), 66u);
  expect_one_line_error<DataError>([&] { quantize_rows(GgmlType::Q4_K, x.data(), 1, 256); }, {"Q4_K", "no codec"});
}

TEST(GgufQuant, NonFiniteInputsAreRefusedForQuantizedTypes) {
  std::vector<float> x(64, 1.0f);
  x[40] = std::numeric_limits<float>::quiet_NaN();
  expect_one_line_error<DataError>([&] { quantize_rows(GgmlType::Q8_0, x.data(), 2, 32); },
                                   {"row 1", "column 8", "not finite"});
  x[40] = std::numeric_limits<float>::infinity();
  expect_one_line_error<DataError>([&] { quantize_rows(GgmlType::Q4_0, x.data(), 1, 64); }, {"not finite"});
}

TEST(GgufQuant, TypeTable) {
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_0, 64), 36u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::F16, 3), 6u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q6_K, 512), 420u);
  EXPECT_EQ(ggml_type_name(8), "Q8_0");
  EXPECT_EQ(ggml_type_name(4), "type 4");  // removed from ggml (Q4_2), unknown here
  GgmlTypeTraits t{};
  EXPECT_FALSE(ggml_type_traits(99, &t));
}

}  // namespace
}  // namespace fedsplit
