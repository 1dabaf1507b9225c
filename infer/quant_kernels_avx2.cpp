// The AVX2 + FMA + F16C row dots. This file alone is compiled with -mavx2 -mfma -mf16c (see
// infer/CMakeLists.txt); quant_kernels.cpp calls it only when the CPU reports AVX2 and FMA.
#include <immintrin.h>

#include <cstring>

#include "infer/quant_kernels_impl.h"

namespace fedsplit::quant_detail {
namespace {

float load_fp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);  // little-endian, as GGUF stores it
  return _cvtsh_ss(h);           // exact, as fp16_to_fp32
}

// Eight int32 partial sums of the 32 products w[j] * x[j] (signed int8 both), as floats.
// maddubs wants an unsigned first operand: |w| times x with w's sign moved onto x. Exact: a pair
// sum is at most 2 * 128 * 127 = 32512, below int16's saturation.
__m256 block_dot(__m256i w, __m256i x) {
  const __m256i abs_w = _mm256_sign_epi8(w, w);
  const __m256i signed_x = _mm256_sign_epi8(x, w);
  const __m256i pairs = _mm256_maddubs_epi16(abs_w, signed_x);
  const __m256i quads = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
  return _mm256_cvtepi32_ps(quads);
}

__m256i load_q8_0(const uint8_t* blk) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
}

// Byte j of a Q4_0 block: weight j in the low nibble, weight j + 16 in the high nibble; -8 each.
__m256i load_q4_0(const uint8_t* blk) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}

float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 shuf = _mm_movehdup_ps(s);
  s = _mm_add_ps(s, shuf);
  shuf = _mm_movehl_ps(shuf, s);
  s = _mm_add_ss(s, shuf);
  return _mm_cvtss_f32(s);
}

// Two accumulators (even and odd blocks) hide the FMA latency; the order is fixed, so results are
// deterministic.
template <int64_t BlockBytes, __m256i (*Load)(const uint8_t*)>
float row_dot(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks) {
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 1 < blocks; b += 2) {
    const uint8_t* b0 = row + b * BlockBytes;
    const uint8_t* b1 = b0 + BlockBytes;
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kBlock));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + (b + 1) * kBlock));
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(load_fp16(b0) * xs[b]), block_dot(Load(b0), x0), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(load_fp16(b1) * xs[b + 1]), block_dot(Load(b1), x1), acc1);
  }
  if (b < blocks) {
    const uint8_t* b0 = row + b * BlockBytes;
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kBlock));
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(load_fp16(b0) * xs[b]), block_dot(Load(b0), x0), acc0);
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

}  // namespace

float dot_q8_0_avx2(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks) {
  return row_dot<kQ8_0Bytes, load_q8_0>(row, xs, xq, blocks);
}

float dot_q4_0_avx2(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks) {
  return row_dot<kQ4_0Bytes, load_q4_0>(row, xs, xq, blocks);
}

}  // namespace fedsplit::quant_detail
