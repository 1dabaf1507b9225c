// Internal to infer/quant_kernels_avx2.cpp, which includes it twice (after
// quant_kernels_avx2_body.h): plain AVX2 and, with FEDSPLIT_QUANT_VNNI set, AVX512-VNNI + VL.
// No include guard on purpose.
//
// All kernels here compute every output as llama.cpp-style tiles do: one float per (weight row,
// activation row), acc = fma(float(int dot of block b), d_w[b] * d_x[b], acc) for b = 0, 1, ...
// with acc starting at 0. The integer dot is exact whichever way it is formed, so the GEMM tile
// (lanes = activation rows), the GEMV (lanes = weight rows) and the interleaved group tile (lanes =
// weight rows, at the end) give the same bits.

// Unsigned 4-byte weight chunks, broadcast to all lanes, and the constant that turns the unsigned
// dot back into the signed one: dot(w, x) = dot(u, x) - Bias * sum(x).
//   Q8_0 with VNNI: u = w + 128 (dpbusd takes unsigned x signed bytes, exact in int32).
//   Q4_0: u = the raw nibble = w + 8 (maddubs cannot saturate: 2 * 15 * 127 < 32767).
//   Q8_0 without VNNI: no bias; the signs move onto x per product (see chunk_dot).
template <GgmlType Type>
constexpr int32_t bias() {
  return Type == GgmlType::Q4_0 ? 8 : (FEDSPLIT_QUANT_VNNI ? 128 : 0);
}

template <GgmlType Type>
constexpr int64_t block_bytes() {
  return Type == GgmlType::Q8_0 ? kQ8_0Bytes : kQ4_0Bytes;
}

// acc + the eight 4-byte dot products of u (weights) and x (activations).
template <GgmlType Type>
inline __m256i chunk_dot(__m256i acc, __m256i u, __m256i x) {
#if FEDSPLIT_QUANT_VNNI
  return _mm256_dpbusd_epi32(acc, u, x);
#else
  if (bias<Type>() == 0) {  // Q8_0: |w| times x with w's sign
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(u, u), _mm256_sign_epi8(x, u));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
#endif
}

// The GEMM tile's vector operations for 8 lanes (AVX2) or, with VNNI, 16 lanes (AVX-512): lane k
// of every operation does the same IEEE arithmetic either way, so both give the same bits.
struct Lanes8 {
  using I = __m256i;
  using F = __m256;
  static constexpr int L = 8;
  static I load(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static F loadf(const float* p) { return _mm256_loadu_ps(p); }
  static I bcast32(const uint8_t* p) {  // from memory: a load-port operation
    return _mm256_castps_si256(_mm256_broadcast_ss(reinterpret_cast<const float*>(p)));
  }
  static I zero() { return _mm256_setzero_si256(); }
  template <int S>
  static I neg_shl(I v) { return _mm256_sub_epi32(zero(), _mm256_slli_epi32(v, S)); }
  static I xor80(I v) { return _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80))); }
  static I low4(I v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
  static I srl4(I v) { return _mm256_srli_epi16(v, 4); }
  template <GgmlType Type>
  static I dot(I acc, I u, I x) { return chunk_dot<Type>(acc, u, x); }
  static F setf(float v) { return _mm256_set1_ps(v); }
  static F zerof() { return _mm256_setzero_ps(); }
  static F fma_scaled(F acc, I dot, F dw, F dx) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, dx), acc);
  }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static I seti(int32_t v) { return _mm256_set1_epi32(v); }
  static F loadph(const uint8_t* p) {  // L fp16 -> float, exact
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

#if FEDSPLIT_QUANT_VNNI
struct Lanes16 {
  using I = __m512i;
  using F = __m512;
  static constexpr int L = 16;
  static I load(const void* p) { return _mm512_loadu_si512(p); }
  static F loadf(const float* p) { return _mm512_loadu_ps(p); }
  static I bcast32(const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
  }
  static I zero() { return _mm512_setzero_si512(); }
  template <int S>
  static I neg_shl(I v) { return _mm512_sub_epi32(zero(), _mm512_slli_epi32(v, S)); }
  static I xor80(I v) { return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80))); }
  static I low4(I v) { return _mm512_and_si512(v, _mm512_set1_epi8(0x0F)); }
  static I srl4(I v) { return _mm512_srli_epi16(v, 4); }
  template <GgmlType Type>
  static I dot(I acc, I u, I x) { return _mm512_dpbusd_epi32(acc, u, x); }
  static F setf(float v) { return _mm512_set1_ps(v); }
  static F zerof() { return _mm512_setzero_ps(); }
  static F fma_scaled(F acc, I dot, F dw, F dx) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, dx), acc);
  }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static I seti(int32_t v) { return _mm512_set1_epi32(v); }
  static F loadph(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
};
#endif

template <class V, GgmlType Type>
typename V::I weight_chunk(const uint8_t* blk, int i) {
  if (Type == GgmlType::Q8_0) {
    const auto w = V::bcast32(blk + 2 + 4 * i);
    return bias<Type>() != 0 ? V::xor80(w) : w;
  }
  // Weights 4i..4i+3: low nibbles of bytes 4i.. for i < 4, high nibbles of bytes 4(i-4).. after.
  const auto w = V::bcast32(blk + 2 + 4 * (i & 3));
  return V::low4(i < 4 ? w : V::srl4(w));
}

// R weight rows x C lane groups (V::L activation rows each), all blocks: R * C float accumulators
// stay in registers while each weight chunk is loaded once per C groups and each activation chunk
// once per R rows. Rows r0.., activation rows n0..; writes only activation rows < batch. The loops
// are unrolled by pragma: at -O2 GCC would otherwise keep the accumulator arrays on the stack.
template <class V, GgmlType Type, int R, int C>
void gemm_tile(const uint8_t* w, int64_t row_bytes, int64_t r0, const PackedActs& a, int64_t n0, int64_t batch,
               float* y, int64_t y_stride) {
  using I = typename V::I;
  using F = typename V::F;
  constexpr int64_t BB = block_bytes<Type>();
  const int64_t g0 = n0 / 8;  // in packed groups of 8
  F facc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) facc[r][c] = V::zerof();
  for (int64_t b = 0; b < a.blocks; ++b) {
    I iacc[R][C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      // Start from -Bias * sum(x), so the accumulator ends at the signed dot (a shift: Bias is 8
      // or 128).
      const I s = V::load(a.sums + (b * a.groups + g0) * 8 + c * V::L);
      const I start = bias<Type>() == 0 ? V::zero() : V::template neg_shl<bias<Type>() == 8 ? 3 : 7>(s);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) iacc[r][c] = start;
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const int8_t* xi = a.codes + ((b * 8 + i) * a.groups + g0) * 32;
      I x[C];
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) x[c] = V::load(xi + c * V::L * 4);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const I u = weight_chunk<V, Type>(w + (r0 + r) * row_bytes + b * BB, i);
#pragma GCC unroll 8
        for (int c = 0; c < C; ++c) iacc[r][c] = V::template dot<Type>(iacc[r][c], u, x[c]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const F dw = V::setf(load_fp16(w + (r0 + r) * row_bytes + b * BB));
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) {
        const F dx = V::loadf(a.scales + (b * a.groups + g0) * 8 + c * V::L);
        facc[r][c] = V::fma_scaled(facc[r][c], iacc[r][c], dw, dx);
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
    const int64_t nc = n0 + c * V::L;
    const int64_t lanes = std::min<int64_t>(V::L, batch - nc);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float out[V::L];
      V::store(out, facc[r][c]);
      for (int64_t k = 0; k < lanes; ++k) y[(nc + k) * y_stride + r0 + r] = out[k];
    }
  }
}

// R rows from r against all activation rows: C groups at a time, then single groups.
template <class V, GgmlType Type, int R, int C>
void gemm_row_block(const uint8_t* w, int64_t row_bytes, int64_t r, const PackedActs& a, int64_t batch, float* y,
                    int64_t y_stride) {
  constexpr int64_t L = V::L;
  int64_t n = 0;
  for (; n + C * L <= batch; n += C * L) gemm_tile<V, Type, R, C>(w, row_bytes, r, a, n, batch, y, y_stride);
  for (; n < batch; n += L) gemm_tile<V, Type, R, 1>(w, row_bytes, r, a, n, batch, y, y_stride);
}

// Rows [r0, r1): R-row blocks, then at most one block each of 4, 2 and 1 rows for the rest.
template <class V, GgmlType Type, int R, int C>
void gemm_rows_c(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t r1, const PackedActs& a, int64_t batch,
                 float* y, int64_t y_stride) {
  static_assert(R <= 7, "the tail handles at most 7 rows");
  int64_t r = r0;
  for (; r + R <= r1; r += R) gemm_row_block<V, Type, R, C>(w, row_bytes, r, a, batch, y, y_stride);
  if (R > 4 && r + 4 <= r1) {
    gemm_row_block<V, Type, 4, C>(w, row_bytes, r, a, batch, y, y_stride);
    r += 4;
  }
  if (R > 2 && r + 2 <= r1) {
    gemm_row_block<V, Type, 2, C>(w, row_bytes, r, a, batch, y, y_stride);
    r += 2;
  }
  if (r < r1) gemm_row_block<V, Type, 1, C>(w, row_bytes, r, a, batch, y, y_stride);
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

// Interleaved Q8_0 / Q4_0 (QuantLayout::interleaved): lanes = V::L weight rows of a 16-row group,
// from row `lane0` of the group (0, or 8 for the second half with 8 lanes). Only the unpacking of
// the weight chunks and (without VNNI) the integer dot differ between the types.

template <GgmlType Type>
constexpr int64_t group_block_bytes() {
  return kGroupRows * block_bytes<Type>();
}

// The unsigned weights of one group block for the lanes: u[j] = weights 4j..4j+3 of each lane's
// row, which meet activation codes 4j..4j+3. Q8_0: chunk j (u = w + Bias, see bias()); Q4_0: low
// nibbles of chunk j for j < 4, high nibbles of chunk j - 4 after.
template <class V, GgmlType Type>
inline void group_block_weights(const uint8_t* blk, int64_t lane0, typename V::I u[8]) {
  const uint8_t* chunks = blk + kGroupRows * 2 + lane0 * 4;
  if (Type == GgmlType::Q8_0) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const auto raw = V::load(chunks + j * kGroupChunkBytes);
      u[j] = bias<Type>() != 0 ? V::xor80(raw) : raw;
    }
    return;
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    const auto raw = V::load(chunks + i * kGroupChunkBytes);
    u[i] = V::low4(raw);
    u[i + 4] = V::low4(V::srl4(raw));
  }
}

// Each lane's signed integer dot of its block with the 32 activation codes x, for G groups'
// weights u[k] (each activation broadcast serves all G), given the bias -Bias * sum(x).
template <class V, GgmlType Type, int G>
inline void group_block_dots(const typename V::I (&u)[G][8], const int8_t* x, int32_t bias, typename V::I (&dot)[G]) {
  if constexpr (FEDSPLIT_QUANT_VNNI || Type == GgmlType::Q8_0) {
    // dpbusd, or Q8_0's exact sign trick (see chunk_dot): one int32 accumulation per chunk.
#pragma GCC unroll 4
    for (int k = 0; k < G; ++k) dot[k] = V::seti(bias);
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const auto xb = V::bcast32(reinterpret_cast<const uint8_t*>(x + 4 * j));
#pragma GCC unroll 4
      for (int k = 0; k < G; ++k) dot[k] = V::template dot<Type>(dot[k], u[k][j], xb);
    }
  } else {
    // Q4_0 on AVX2: int16 sums are exact, 8 pairs of |15 * 127| at most per lane, 30480 < 32767;
    // so one madd per block instead of one per chunk.
    typename V::I s16[G];
#pragma GCC unroll 4
    for (int k = 0; k < G; ++k) s16[k] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const auto xb = V::bcast32(reinterpret_cast<const uint8_t*>(x + 4 * j));
#pragma GCC unroll 4
      for (int k = 0; k < G; ++k) s16[k] = _mm256_add_epi16(s16[k], _mm256_maddubs_epi16(u[k][j], xb));
    }
#pragma GCC unroll 4
    for (int k = 0; k < G; ++k)
      dot[k] = _mm256_add_epi32(_mm256_madd_epi16(s16[k], _mm256_set1_epi16(1)), _mm256_set1_epi32(bias));
  }
}

// The lanes of G consecutive groups (from grp, gstride bytes apart) times N activation rows (tile
// rows from the entry of tile row 0, block 0), all blocks: G * N float accumulators while each
// block's weights are unpacked once and each activation broadcast serves G groups. Stores y rows
// r0.. (group k: r0 + 16k..) of activation rows n0..n0+N-1.
template <class V, GgmlType Type, int G, int N>
void group_tile(const uint8_t* grp, int64_t gstride, int64_t lane0, const ActTiles& a, int64_t entry0, int64_t n0,
                float* y, int64_t y_stride, int64_t r0) {
  using F = typename V::F;
  using I = typename V::I;
  F facc[G][N];
#pragma GCC unroll 4
  for (int k = 0; k < G; ++k)
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n) facc[k][n] = V::zerof();
  const int8_t* codes = a.codes + entry0 * kBlock;
  const float* scales = a.scales + entry0;
  const int32_t* bias = a.bias + entry0;
  for (int64_t b = 0; b < a.blocks; ++b) {
    I u[G][8];
    F dw[G];
#pragma GCC unroll 4
    for (int k = 0; k < G; ++k) {
      const uint8_t* blk = grp + k * gstride + b * group_block_bytes<Type>();
      group_block_weights<V, Type>(blk, lane0, u[k]);
      dw[k] = V::loadph(blk + lane0 * 2);
    }
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n) {
      I dot[G];
      group_block_dots<V, Type, G>(u, codes + n * kBlock, bias[n], dot);
      const F dx = V::setf(scales[n]);
#pragma GCC unroll 4
      for (int k = 0; k < G; ++k) facc[k][n] = V::fma_scaled(facc[k][n], dot[k], dw[k], dx);
    }
    codes += a.tile * kBlock;
    scales += a.tile;
    bias += a.tile;
  }
#pragma GCC unroll 4
  for (int k = 0; k < G; ++k)
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n) V::store(y + (n0 + n) * y_stride + r0 + k * kGroupRows, facc[k][n]);
}

// The last `count` (at most N) activation rows: one tile of exactly that many.
template <class V, GgmlType Type, int G, int N>
void group_tile_rest(const uint8_t* grp, int64_t gstride, int64_t lane0, const ActTiles& a, int64_t entry0,
                     int64_t n0, int64_t count, float* y, int64_t y_stride, int64_t r0) {
  if constexpr (N > 0) {
    if (count == N) return group_tile<V, Type, G, N>(grp, gstride, lane0, a, entry0, n0, y, y_stride, r0);
    group_tile_rest<V, Type, G, N - 1>(grp, gstride, lane0, a, entry0, n0, count, y, y_stride, r0);
  }
}

// Groups [g0, g1) of the interleaved matrix at w against all activation rows: G groups and N = a.tile
// activation rows at a time, then single groups.
template <class V, GgmlType Type, int G, int N>
void group_gemm(const uint8_t* w, int64_t g0, int64_t g1, const ActTiles& a, int64_t batch, float* y,
                int64_t y_stride) {
  const int64_t gstride = a.blocks * group_block_bytes<Type>();
  for (int64_t g = g0; g < g1;) {
    if (G > 1 && g + G > g1) return group_gemm<V, Type, 1, N>(w, g, g1, a, batch, y, y_stride);
    for (int64_t lane0 = 0; lane0 < kGroupRows; lane0 += V::L) {
      const uint8_t* grp = w + g * gstride;
      const int64_t r0 = g * kGroupRows + lane0;
      int64_t n = 0;
      for (; n + N <= batch; n += N)
        group_tile<V, Type, G, N>(grp, gstride, lane0, a, n * a.blocks, n, y, y_stride, r0);
      if (n < batch)
        group_tile_rest<V, Type, G, N - 1>(grp, gstride, lane0, a, n * a.blocks, n, batch - n, y, y_stride, r0);
    }
    g += G;
  }
}
