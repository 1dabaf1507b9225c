#include "infer/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "infer/thread_pool.h"

namespace fedsplit {
namespace {

// Eight independent partial sums: a fixed order (so deterministic) that GCC turns into vector adds
// at -O2, which a single float accumulator would forbid.
constexpr int kLanes = 8;

__attribute__((always_inline)) inline float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  float sum = 0.0f;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int l = 0; l < kLanes; ++l) sum += acc[l];
  return sum;
}

float sum_squares(const float* a, int64_t n) { return dot(a, a, n); }

// Eight floats (and int32s) as one GCC vector: one AVX register in the AVX2 clones, two SSE ones
// otherwise, the same IEEE operation on every lane either way. -O2 does not vectorise the loops
// below by itself (their bit casts and clamps fail its cheap cost model).
// Every helper taking or returning one is always inlined, so no call passes it and GCC's note on
// the AVX calling convention does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float Floats8 __attribute__((vector_size(32)));
typedef int32_t Ints8 __attribute__((vector_size(32)));

// e^x within 2 ulp (Cody-Waite reduction by ln 2, then Cephes' degree-6 polynomial), for F = float
// or Floats8 (I = int32_t or Ints8): the same operations, so a lane of the vector form equals the
// scalar form. libm's expf, one call per element, took a quarter of the prompt's attention and
// gating time. x is clamped to [-87, 88], where e^x is a normal float (below, the callers' results
// are the same: a softmax weight or a gate of 0).
template <class F, class I>
__attribute__((always_inline)) inline F exp_clamped(const F& value) {
  const F lo = F{} - 87.0f, hi = F{} + 88.0f;
  F x = value < lo ? lo : value;
  x = x > hi ? hi : x;
  const float round = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const F t = x * 1.44269504088896341f + round;
  const F n = t - round;
  const F r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // x - n ln 2, in two parts
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  I bits;
  std::memcpy(&bits, &t, sizeof bits);
  const I scale_bits = ((bits - 0x4B400000) + 127) << 23;  // 2^n
  F scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

// body8(i) for i = 0, 8, 16 .. while 8 floats remain, then body1(i) for the rest.
template <class Body8, class Body1>
__attribute__((always_inline)) inline void for_each_float(int64_t n, Body8 body8, Body1 body1) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) body8(i);
  for (; i < n; ++i) body1(i);
}

__attribute__((always_inline)) inline Floats8 load8(const float* p) {
  Floats8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline void store8(float* p, const Floats8& v) { std::memcpy(p, &v, sizeof v); }

// out[d] += p * v[d], in blocks of kLanes so that GCC's -O2 vectorises it (each element is the
// same one multiply and one add either way).
__attribute__((always_inline)) inline void axpy(float p, const float* __restrict v, float* __restrict out,
                                                int64_t n) {
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int l = 0; l < kLanes; ++l) out[d + l] += p * v[d + l];
  for (; d < n; ++d) out[d] += p * v[d];
}

// One (head, token) of attention_cached; `scores` has room for `len` floats. Also built for AVX2
// (picked at load time where the CPU has it): 8-float vectors instead of 4 for the same per-lane
// operations (no FMA), so both builds give identical results.
__attribute__((target_clones("avx2", "default"))) void attend_one(const float* q, const float* keys,
                                                                 const float* values, int64_t len,
                                                                 int64_t head_dim,
                float scale, float* scores, float* out) {
  float max_score = -INFINITY;
  for (int64_t j = 0; j < len; ++j) {
    scores[j] = dot(q, keys + j * head_dim, head_dim) * scale;
    max_score = std::max(max_score, scores[j]);
  }
  for_each_float(
      len, [&](int64_t j) { store8(scores + j, exp_clamped<Floats8, Ints8>(load8(scores + j) - max_score)); },
      [&](int64_t j) { scores[j] = exp_clamped<float, int32_t>(scores[j] - max_score); });
  float partial[kLanes] = {};  // a fixed summation order, in vector lanes
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes)
    for (int l = 0; l < kLanes; ++l) partial[l] += scores[j + l];
  float total = 0.0f;
  for (; j < len; ++j) total += scores[j];
  for (int l = 0; l < kLanes; ++l) total += partial[l];
  const float inv_total = 1.0f / total;
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t j = 0; j < len; ++j) axpy(scores[j] * inv_total, values + j * head_dim, out, head_dim);
}

}  // namespace

void rms_norm_rows(const float* x, const float* weight, int64_t rows, int64_t cols, double eps, float* out) {
  const float feps = static_cast<float>(eps);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = out + r * cols;
    const float mean = sum_squares(xr, cols) / static_cast<float>(cols);
    const float inv = 1.0f / std::sqrt(mean + feps);
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * inv * weight[c];
  }
}

void rope_in_place(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t first_position,
                   const float* inv_freq, RopeStyle style) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_t(static_cast<size_t>(half));
  std::vector<float> sin_t(static_cast<size_t>(half));
  // Offsets of the two members of pair i inside a head.
  const int64_t stride = style == RopeStyle::adjacent_pairs ? 2 : 1;
  const int64_t second = style == RopeStyle::adjacent_pairs ? 1 : half;
  for (int64_t t = 0; t < tokens; ++t) {
    const float pos = static_cast<float>(first_position + t);
    for (int64_t i = 0; i < half; ++i) {  // once per token, shared by its heads
      const float angle = pos * inv_freq[i];
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* xh = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        float* pa = xh + i * stride;
        float* pb = pa + second;
        const float a = *pa;
        const float b = *pb;
        *pa = a * cos_t[i] - b * sin_t[i];
        *pb = a * sin_t[i] + b * cos_t[i];
      }
    }
  }
}

void attention_cached(const float* q, const float* k_cache, const float* v_cache, int64_t tokens,
                      int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t cache_stride,
                      int64_t first_position, float* out, int threads) {
  const int64_t group = heads / kv_heads;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const int64_t max_len = first_position + tokens;
  // Work item i = h * tokens + t: a chunk covers whole heads, so chunks get similar causal lengths.
  parallel_for(threads, heads * tokens, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(max_len));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t h = i / tokens;
      const int64_t t = i % tokens;
      const int64_t kv = h / group;
      attend_one(q + (t * heads + h) * head_dim, k_cache + kv * cache_stride * head_dim,
                 v_cache + kv * cache_stride * head_dim, first_position + t + 1, head_dim, scale,
                 scores.data(), out + (t * heads + h) * head_dim);
    }
  });
}

// The AVX2 clone does 8 lanes in one register, the default build in two: the same per-lane
// operations (no FMA), so both give the same results.
__attribute__((target_clones("avx2", "default"))) void silu_mul(const float* gate, const float* up, int64_t n,
                                                               float* out) {
  for_each_float(
      n,
      [&](int64_t i) {
        const Floats8 g = load8(gate + i);
        store8(out + i, g / (1.0f + exp_clamped<Floats8, Ints8>(-g)) * load8(up + i));
      },
      [&](int64_t i) { out[i] = gate[i] / (1.0f + exp_clamped<float, int32_t>(-gate[i])) * up[i]; });
}

void add_in_place(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace fedsplit
