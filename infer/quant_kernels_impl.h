// Internal to infer/quant_kernels*.cpp: the per-row dot products each implementation provides.
#pragma once
#include <cstdint>

namespace fedsplit::quant_detail {

constexpr int64_t kBlock = 32;
constexpr int64_t kQ8_0Bytes = 34;
constexpr int64_t kQ4_0Bytes = 18;

/// The dot product of one weight row (`blocks` blocks of its type) with a Q8-quantized activation
/// (`xs`: one float scale per block, `xq`: 32 int8 codes per block).
using RowDot = float (*)(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);

/// RowDot of one weight row with four activation rows (k at xs + k * xs_stride, xq + k * xq_stride),
/// writing out[k * out_stride]; each result bit for bit equal to the RowDot of that row.
using RowDot4 = void (*)(const uint8_t* row, const float* xs, int64_t xs_stride, const int8_t* xq,
                         int64_t xq_stride, int64_t blocks, float* out, int64_t out_stride);

/// For tests: whether the AVX512-VNNI variants run, and a switch back to plain AVX2 (process-wide).
bool vnni_in_use();
void force_no_vnni(bool on);

float dot_q8_0_portable(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);
float dot_q4_0_portable(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);

#if defined(FEDSPLIT_AVX2_KERNELS)
// Compiled with -mavx2 -mfma -mf16c (quant_kernels_avx2.cpp): call only when the CPU has them.
float dot_q8_0_avx2(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);
float dot_q4_0_avx2(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);
// quantize_activation with AVX2: the same float operations, so the same scales and codes.
void quantize_row_avx2(const float* x, int64_t cols, float* scales, int8_t* codes);
void dot4_q8_0_avx2(const uint8_t* row, const float* xs, int64_t xs_stride, const int8_t* xq, int64_t xq_stride,
                    int64_t blocks, float* out, int64_t out_stride);
void dot4_q4_0_avx2(const uint8_t* row, const float* xs, int64_t xs_stride, const int8_t* xq, int64_t xq_stride,
                    int64_t blocks, float* out, int64_t out_stride);
// The same kernels using AVX512-VNNI's dpbusd (bit for bit the AVX2 results): call only when the
// CPU also has AVX512-VNNI and AVX512-VL.
float dot_q8_0_vnni(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);
float dot_q4_0_vnni(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks);
void dot4_q8_0_vnni(const uint8_t* row, const float* xs, int64_t xs_stride, const int8_t* xq, int64_t xq_stride,
                    int64_t blocks, float* out, int64_t out_stride);
void dot4_q4_0_vnni(const uint8_t* row, const float* xs, int64_t xs_stride, const int8_t* xq, int64_t xq_stride,
                    int64_t blocks, float* out, int64_t out_stride);
#endif

}  // namespace fedsplit::quant_detail
