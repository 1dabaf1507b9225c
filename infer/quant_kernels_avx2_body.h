// Internal to infer/quant_kernels_avx2.cpp, which includes it twice: once plain (AVX2) and once
// under AVX512-VNNI + VL target options with FEDSPLIT_QUANT_VNNI set, each time in its own
// namespace. No include guard on purpose; it relies on <immintrin.h>, <cstring> and
// quant_kernels_impl.h being included first.
float load_fp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);  // little-endian, as GGUF stores it
  return _cvtsh_ss(h);           // exact, as fp16_to_fp32
}

// Eight int32 partial sums of the 32 products w[j] * x[j] (signed int8 both), as floats.
// maddubs wants an unsigned first operand: |w| times x with w's sign moved onto x. Exact: a pair
// sum is at most 2 * 128 * 127 = 32512, below int16's saturation.
// With AVX512-VNNI, dpbusd forms the same four-product sums in one instruction (exact in int32), so
// both variants give identical results.
inline __m256 block_dot(__m256i w, __m256i x) {
  const __m256i abs_w = _mm256_sign_epi8(w, w);
  const __m256i signed_x = _mm256_sign_epi8(x, w);
#if FEDSPLIT_QUANT_VNNI
  const __m256i quads = _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, signed_x);
#else
  const __m256i pairs = _mm256_maddubs_epi16(abs_w, signed_x);
  const __m256i quads = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
#endif
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

// row_dot for four activation rows at once (a prompt batch): each weight block is loaded and
// decoded once and used four times. Every output goes through exactly row_dot's operations in
// row_dot's order (same scale product, same integer dot, same FMA chain and final sum), so it is
// bit for bit what row_dot gives for that activation row.
template <int64_t BlockBytes, __m256i (*Load)(const uint8_t*)>
void row_dot4(const uint8_t* row, const float* xs, int64_t xs_stride, const int8_t* xq, int64_t xq_stride,
              int64_t blocks, float* out, int64_t out_stride) {
  __m256 acc0[4], acc1[4];
  for (int k = 0; k < 4; ++k) acc0[k] = acc1[k] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 1 < blocks; b += 2) {
    const uint8_t* b0 = row + b * BlockBytes;
    const uint8_t* b1 = b0 + BlockBytes;
    const __m256i w0 = Load(b0), w1 = Load(b1);
    const float d0 = load_fp16(b0), d1 = load_fp16(b1);
    for (int k = 0; k < 4; ++k) {
      const int8_t* xk = xq + k * xq_stride + b * kBlock;
      const float* sk = xs + k * xs_stride + b;
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xk));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xk + kBlock));
      acc0[k] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * sk[0]), block_dot(w0, x0), acc0[k]);
      acc1[k] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * sk[1]), block_dot(w1, x1), acc1[k]);
    }
  }
  if (b < blocks) {
    const uint8_t* b0 = row + b * BlockBytes;
    const __m256i w0 = Load(b0);
    const float d0 = load_fp16(b0);
    for (int k = 0; k < 4; ++k) {
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k * xq_stride + b * kBlock));
      acc0[k] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * xs[k * xs_stride + b]), block_dot(w0, x0), acc0[k]);
    }
  }
  for (int k = 0; k < 4; ++k) out[k * out_stride] = hsum(_mm256_add_ps(acc0[k], acc1[k]));
}
