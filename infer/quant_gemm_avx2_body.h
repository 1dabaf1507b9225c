// Internal to infer/quant_kernels_avx2.cpp, which includes it twice (after
// quant_kernels_avx2_body.h): plain AVX2 and, with FEDSPLIT_QUANT_VNNI set, AVX512-VNNI + VL.
// No include guard on purpose.
//
// Both kernels compute every output as llama.cpp-style tiles do: one float per (weight row,
// activation row), acc = fma(float(int dot of block b), d_w[b] * d_x[b], acc) for b = 0, 1, ...
// with acc starting at 0. The integer dot is exact whichever way it is formed, so the GEMM tile
// (lanes = activation rows) and the GEMV (lanes = weight rows) give the same bits.

// Unsigned 4-byte weight chunks, broadcast to all eight lanes, and the constant that turns the
// unsigned dot back into the signed one: dot(w, x) = dot(u, x) - Bias * sum(x).
//   Q8_0 with VNNI: u = w + 128 (dpbusd takes unsigned x signed bytes, exact in int32).
//   Q4_0: u = the raw nibble = w + 8 (maddubs cannot saturate: 2 * 15 * 127 < 32767).
//   Q8_0 without VNNI: no bias; the signs move onto x per product (see chunk_dot).
template <GgmlType Type>
constexpr int32_t bias() {
  return Type == GgmlType::Q4_0 ? 8 : (FEDSPLIT_QUANT_VNNI ? 128 : 0);
}

template <GgmlType Type>
__m256i weight_chunk(const uint8_t* blk, int i) {
  // Broadcast straight from memory (a load-port operation); the shift stays in vector registers.
  auto broadcast = [](const uint8_t* p) {
    return _mm256_castps_si256(_mm256_broadcast_ss(reinterpret_cast<const float*>(p)));
  };
  if (Type == GgmlType::Q8_0) {
    const __m256i w = broadcast(blk + 2 + 4 * i);
    return bias<Type>() != 0 ? _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))) : w;
  }
  // Weights 4i..4i+3: low nibbles of bytes 4i.. for i < 4, high nibbles of bytes 4(i-4).. after.
  const __m256i w = broadcast(blk + 2 + 4 * (i & 3));
  return _mm256_and_si256(i < 4 ? w : _mm256_srli_epi16(w, 4), _mm256_set1_epi8(0x0F));
}

// acc + the eight 4-byte dot products of u (weights) and x (activations).
template <GgmlType Type>
inline __m256i chunk_dot(__m256i acc, __m256i u, __m256i x) {
#if FEDSPLIT_QUANT_VNNI
  return _mm256_dpbusd_epi32(acc, u, x);
#else
  if (bias<Type>() == 0) {  // Q8_0: |w| times x with w's sign, as block_dot
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(u, u), _mm256_sign_epi8(x, u));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
#endif
}

template <GgmlType Type>
constexpr int64_t block_bytes() {
  return Type == GgmlType::Q8_0 ? kQ8_0Bytes : kQ4_0Bytes;
}

// R weight rows x C groups of 8 activation rows, all blocks: R * C float accumulators stay in
// registers while each weight chunk is loaded once per C groups and each activation chunk once per R
// rows. Rows r0.., groups g0..; writes only activation rows < batch. The loops are unrolled by
// pragma: at -O2 GCC would otherwise keep the accumulator arrays on the stack.
template <GgmlType Type, int R, int C>
void gemm_tile(const uint8_t* w, int64_t row_bytes, int64_t r0, const PackedActs& a, int64_t g0, int64_t batch,
               float* y, int64_t y_stride) {
  constexpr int64_t BB = block_bytes<Type>();
  __m256 facc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) facc[r][c] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.blocks; ++b) {
    __m256i iacc[R][C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      // Start from -Bias * sum(x), so the accumulator ends at the signed dot.
      const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sums + ((g0 + c) * a.blocks + b) * 8));
      // Bias is 0, 8 or 128: a shift, not the slow mullo.
      constexpr int shift = bias<Type>() == 8 ? 3 : 7;
      const __m256i start = bias<Type>() == 0 ? _mm256_setzero_si256()
                                              : _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s, shift));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) iacc[r][c] = start;
    }
    const int8_t* xb[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) xb[c] = a.codes + ((g0 + c) * a.blocks + b) * 256;
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      __m256i x[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) x[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb[c] + 32 * i));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256i u = weight_chunk<Type>(w + (r0 + r) * row_bytes + b * BB, i);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) iacc[r][c] = chunk_dot<Type>(iacc[r][c], u, x[c]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 dw = _mm256_set1_ps(load_fp16(w + (r0 + r) * row_bytes + b * BB));
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const __m256 dx = _mm256_loadu_ps(a.scales + ((g0 + c) * a.blocks + b) * 8);
        facc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][c]), _mm256_mul_ps(dw, dx), facc[r][c]);
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
    const int64_t n0 = (g0 + c) * 8;
    const int64_t lanes = std::min<int64_t>(8, batch - n0);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      alignas(32) float out[8];
      _mm256_store_ps(out, facc[r][c]);
#pragma GCC unroll 8
      for (int64_t k = 0; k < lanes; ++k) y[(n0 + k) * y_stride + r0 + r] = out[k];
    }
  }
}

template <GgmlType Type, int R, int C>
void gemm_rows_c(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a, int64_t batch,
                 float* y, int64_t y_stride) {
  const int64_t groups = (batch + 7) / 8;
  int64_t r = r0;
  for (; r + R <= r1; r += R) {
    int64_t g = 0;
    for (; g + C <= groups; g += C) gemm_tile<Type, R, C>(w, row_bytes, r, a, g, batch, y, y_stride);
    for (; g < groups; ++g) gemm_tile<Type, R, 1>(w, row_bytes, r, a, g, batch, y, y_stride);
  }
  for (; r < r1; ++r)
    for (int64_t g = 0; g < groups; ++g) gemm_tile<Type, 1, 1>(w, row_bytes, r, a, g, batch, y, y_stride);
}

// The 8 int32 partial sums of one weight block (row p) with the activation block xq: u = unsigned
// weights as in weight_chunk, in plain element order.
template <GgmlType Type>
inline __m256i block_partials(const uint8_t* blk, __m256i x) {
  __m256i u;
  if (Type == GgmlType::Q8_0) {
    u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    if (bias<Type>() != 0) u = _mm256_xor_si256(u, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
  }
  return chunk_dot<Type>(_mm256_setzero_si256(), u, x);
}

// Eight vectors of partial sums -> one vector of their eight totals (lane k = total of v[k]).
inline __m256i reduce8(const __m256i v[8]) {
  const __m256i t0 = _mm256_hadd_epi32(v[0], v[1]), t1 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i t2 = _mm256_hadd_epi32(v[4], v[5]), t3 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i u0 = _mm256_hadd_epi32(t0, t1), u1 = _mm256_hadd_epi32(t2, t3);
  // u0 = [rows 0-3 low halves | rows 0-3 high halves], u1 likewise for rows 4-7.
  return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

// Rows [r0, r1) of W times one quantized activation row, eight rows per step (lanes = rows); a last
// partial step repeats row r1 - 1 and stores only the real rows.
template <GgmlType Type>
void gemv_rows(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const float* xs, const int8_t* xq,
               const int32_t* xsum, int64_t blocks, float* y) {
  constexpr int64_t BB = block_bytes<Type>();
  for (int64_t r = r0; r < r1; r += 8) {
    const uint8_t* row[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) row[k] = w + std::min(r + k, r1 - 1) * row_bytes;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * kBlock));
      __m256i v[8];
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k) v[k] = block_partials<Type>(row[k] + b * BB, x);
      const __m256i dot = _mm256_sub_epi32(reduce8(v), _mm256_set1_epi32(bias<Type>() * xsum[b]));
      // Inserted one by one: a store-and-reload through memory would stall on store forwarding.
      auto h = [&](int k) { return *reinterpret_cast<const short*>(row[k] + b * BB); };
      const __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), h(4), h(5), h(6), h(7)));
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(xs[b])), acc);
    }
    alignas(32) float out[8];
    _mm256_store_ps(out, acc);
    for (int64_t k = 0; k < std::min<int64_t>(8, r1 - r); ++k) y[r + k] = out[k];
  }
}
