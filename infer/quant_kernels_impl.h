// Internal to infer/quant_kernels*.cpp: the per-row dot products each implementation provides.
#pragma once
#include <cstdint>

namespace fedsplit::quant_detail {

constexpr int64_t kBlock = 32;
constexpr int64_t kQ8_0Bytes = 34;
constexpr int64_t kQ4_0Bytes = 18;

/// The portable dot product of one weight row (`blocks` blocks of its type) with a Q8-quantized
/// activation (`xs`: one float scale per block, `xq`: 32 int8 codes per block).
using RowDot = float (*)(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);

/// Quantized activation rows packed for the AVX2 GEMM, in groups of 8 rows (`groups` of them, an
/// even number, the padding rows zero codes and scales). For block b and chunk i (codes 4i..4i+3),
/// the groups' 32-byte chunks lie side by side from codes + (b * 8 + i) * groups * 32, each holding
/// the 4 codes of its 8 rows in turn, so 8 or 16 rows' chunks are one load; scales and code sums
/// (int32) of block b: 8 per group, side by side from (b * groups) * 8.
struct PackedActs {
  const int8_t* codes;
  const float* scales;
  const int32_t* sums;
  int64_t blocks;
  int64_t groups;
};

/// Rows [r0, r1) of W (rows of row_bytes at w) times all `batch` packed activation rows:
/// y[n * y_stride + r].
using GemmRows = void (*)(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                          int64_t batch, float* y, int64_t y_stride);

/// Rows [r0, r1) of W times one quantized activation row (scales xs, codes xq, code sums xsum per
/// block): y[r]. Bit for bit the GemmRows result for that activation row.
using GemvRows = void (*)(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                          const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y);

/// Quantized activation rows packed for the interleaved kernels in tiles of `tile` rows (the last
/// tile padded with zero rows): row n of tile t, block b is entry (t * blocks + b) * tile + n,
/// with 32 codes from codes + entry * 32, its scale and its bias, -Bias * the sum of its codes (the
/// kernels use unsigned weights u = w + Bias: dot(w, x) = dot(u, x) - Bias * sum(x); Bias is 8 for
/// Q4_0, 128 for Q8_0 with VNNI and 0 for Q8_0 on plain AVX2, as bias() in quant_gemm_avx2_body.h).
struct ActTiles {
  const int8_t* codes;
  const float* scales;
  const int32_t* bias;
  int64_t blocks;
  int64_t tile;
};

/// An interleaved row group (see QuantLayout): kGroupRows rows; per block their kGroupRows fp16
/// scales, then 4-byte chunks of code bytes, kGroupChunkBytes per chunk (4 chunks for Q4_0, 8 for
/// Q8_0): kGroupRows * (bytes of one block) per block.
constexpr int64_t kGroupRows = 16;
constexpr int64_t kGroupChunkBytes = kGroupRows * 4;

/// Row groups [g0, g1) of an interleaved matrix (groups from w) times all `batch` activation rows:
/// y[n * y_stride + r] for the groups' rows r. Bit for bit the GemmRows / GemvRows result.
using GroupGemm = void (*)(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                           int64_t y_stride);

/// The activation tile heights (ActTiles::tile) of the group kernels, by measurement (T = 110 on a
/// 2-core AVX512-VNNI Xeon). With VNNI, tiles of 2 groups x 5 rows: 16 weight vectors, 10 float
/// accumulators (32 registers); for Q4_0 5 and 6 rows tie and beat 4, 7 and 8 (spills) and 1 group
/// x 4 to 16 rows by ~20%; for Q8_0 5 and 6 rows tie and beat 2 x 4 and 1 x 8 (by 5-15%). With
/// AVX2's 16 registers, 1 group x 4 rows beat 2 and 3 (Q8_0: and 2; 6 ties).
constexpr int64_t kGroupTileVnni = 5;
constexpr int64_t kGroupTileAvx2 = 4;

/// For tests: whether the AVX512-VNNI variants run, and a switch back to plain AVX2 (process-wide).
bool vnni_in_use();
void force_no_vnni(bool on);

float dot_q8_0_portable(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);
float dot_q4_0_portable(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);

#if defined(FEDSPLIT_AVX2_KERNELS)
// Compiled with -mavx2 -mfma -mf16c (quant_kernels_avx2.cpp): call only when the CPU has them.
// quantize_activation with AVX2: the same float operations, so the same scales and codes.
void quantize_row_avx2(const float* x, int64_t cols, float* scales, int8_t* codes);
void gemm_q8_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride);
void gemm_q4_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride);
void gemv_q8_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y);
void gemv_q4_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y);
void gemm_q8_0x16_avx2(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride);
void gemm_q4_0x16_avx2(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride);
// The same kernels using AVX512-VNNI's dpbusd (bit for bit the AVX2 results): call only when the
// CPU also has AVX512-VNNI and AVX512-VL.
void gemm_q8_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride);
void gemm_q4_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride);
void gemv_q8_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y);
void gemv_q4_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y);
void gemm_q8_0x16_vnni(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride);
void gemm_q4_0x16_vnni(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride);
#endif

}  // namespace fedsplit::quant_detail
