// The AVX2 + FMA + F16C kernels and activation quantization. This file alone is compiled with
// -mavx2 -mfma -mf16c (see infer/CMakeLists.txt); quant_kernels.cpp calls it only when the CPU
// reports AVX2 and FMA, and the *_vnni variants only when it also has AVX512-VNNI and -VL.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "compress/gguf_quant.h"
#include "infer/quant_kernels_impl.h"

namespace fedsplit::quant_detail {
namespace {
namespace avx2 {
#define FEDSPLIT_QUANT_VNNI 0
#include "infer/quant_kernels_avx2_body.h"
#include "infer/quant_gemm_avx2_body.h"
#undef FEDSPLIT_QUANT_VNNI
}  // namespace avx2
}  // namespace

// The same kernels with dpbusd; quant_kernels.cpp calls them only when the CPU has AVX512-VNNI,
// -VL and -BW, so only these functions carry those target options. The GEMM tile uses 512-bit
// registers (16 activation rows per vector; 32 registers hold a tile of 6 weight rows x 32
// activation rows; on a loaded 2-core machine it measured as fast as 4 rows or up to ~10% faster).
#ifndef VNNI_LANES  // -DVNNI_LANES=vnni::Lanes8 compares the 256-bit tile
#define VNNI_LANES vnni::Lanes16
#endif
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vnni,avx512vl")
// GCC 12 warns inside avx512fintrin.h (its _mm512_undefined_* placeholders), not about this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace {
namespace vnni {
#define FEDSPLIT_QUANT_VNNI 1
#include "infer/quant_kernels_avx2_body.h"
#include "infer/quant_gemm_avx2_body.h"
#undef FEDSPLIT_QUANT_VNNI
}  // namespace vnni
}  // namespace

void gemm_q8_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride) {
  vnni::gemm_rows_c<VNNI_LANES, GgmlType::Q8_0, 6, 2>(w, row_bytes, r0, r1, a, batch, y, y_stride);
}

void gemm_q4_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride) {
  vnni::gemm_rows_c<VNNI_LANES, GgmlType::Q4_0, 6, 2>(w, row_bytes, r0, r1, a, batch, y, y_stride);
}

void gemv_q8_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y) {
  vnni::gemv_rows<GgmlType::Q8_0>(w, row_bytes, r0, r1, xs, xq, xsum, blocks, y);
}

void gemv_q4_0_vnni(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y) {
  vnni::gemv_rows<GgmlType::Q4_0>(w, row_bytes, r0, r1, xs, xq, xsum, blocks, y);
}
// Interleaved: 2 groups (32 weight rows) x 5 activation rows per tile (see kGroupTileVnni).
void gemm_q8_0x16_vnni(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride) {
  vnni::group_gemm<vnni::Lanes16, GgmlType::Q8_0, 2, kGroupTileVnni>(w, g0, g1, a, batch, y, y_stride);
}

void gemm_q4_0x16_vnni(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride) {
  vnni::group_gemm<vnni::Lanes16, GgmlType::Q4_0, 2, kGroupTileVnni>(w, g0, g1, a, batch, y, y_stride);
}
#pragma GCC diagnostic pop
#pragma GCC pop_options

using namespace avx2;

void quantize_row_avx2(const float* x, int64_t cols, float* scales, int8_t* codes) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    __m256 v[4];
    __m256 amax = zero;
    __m256 bad = zero;  // lanes where x * 0 is NaN: x is infinite or NaN
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(xb + 8 * k);
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[k]));
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_mul_ps(v[k], zero), zero, _CMP_NEQ_UQ));
    }
    if (_mm256_movemask_ps(bad) != 0) {
      scales[b] = __builtin_nanf("");
      std::memset(codes + b * kBlock, 0, kBlock);
      continue;
    }
    // The same float operations as the portable quantize_activation (max is exact in any order).
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float d = _mm_cvtss_f32(m) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    scales[b] = d;
    const __m256 vid = _mm256_set1_ps(id);
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[k], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q[k] = _mm256_cvtps_epi32(_mm256_min_ps(hi, _mm256_max_ps(lo, r)));
    }
    // packs work per 128-bit lane; the permute puts the 32 codes back in order.
    const __m256i q16 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const __m256i ordered = _mm256_permutevar8x32_epi32(q16, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + b * kBlock), ordered);
  }
}

// 16 registers only: a 2 x 2 tile.
void gemm_q8_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride) {
  gemm_rows_c<Lanes8, GgmlType::Q8_0, 2, 2>(w, row_bytes, r0, r1, a, batch, y, y_stride);
}

void gemm_q4_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a,
                    int64_t batch, float* y, int64_t y_stride) {
  gemm_rows_c<Lanes8, GgmlType::Q4_0, 2, 2>(w, row_bytes, r0, r1, a, batch, y, y_stride);
}

void gemv_q8_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y) {
  gemv_rows<GgmlType::Q8_0>(w, row_bytes, r0, r1, xs, xq, xsum, blocks, y);
}

void gemv_q4_0_avx2(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs,
                    const int8_t* xq, const int32_t* xsum, int64_t blocks, float* y) {
  gemv_rows<GgmlType::Q4_0>(w, row_bytes, r0, r1, xs, xq, xsum, blocks, y);
}

void gemm_q8_0x16_avx2(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride) {
  group_gemm<Lanes8, GgmlType::Q8_0, 1, kGroupTileAvx2>(w, g0, g1, a, batch, y, y_stride);
}

void gemm_q4_0x16_avx2(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                       int64_t y_stride) {
  group_gemm<Lanes8, GgmlType::Q4_0, 1, kGroupTileAvx2>(w, g0, g1, a, batch, y, y_stride);
}

}  // namespace fedsplit::quant_detail
