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

// e^x within 2 ulp (Cody-Waite reduction by ln 2, then Cephes' degree-6 polynomial), written
// without calls or branches so that loops over it vectorise: libm's expf, one call per element,
// took a quarter of the prompt's attention and gating time. x is clamped to [-87, 88], where e^x
// is a normal float (below, the callers' results are the same: a softmax weight or a gate of 0).
__attribute__((always_inline)) inline float exp_clamped(float x) {
  x = std::min(88.0f, std::max(-87.0f, x));
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const float t = x * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // x - n ln 2, in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &t, 4);
  const int32_t scale_bits = ((bits - 0x4B400000) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &scale_bits, 4);
  return p * scale;
}

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
  for (int64_t j = 0; j < len; ++j) scores[j] = exp_clamped(scores[j] - max_score);
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

// In blocks of kLanes, as axpy, so that -O2 vectorises it; the AVX2 clone does 8 lanes at once with
// the same per-element operations (no FMA), so both give the same results.
__attribute__((target_clones("avx2", "default"))) void silu_mul(const float* gate, const float* up, int64_t n,
                                                               float* out) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    float g[kLanes];
    for (int l = 0; l < kLanes; ++l) g[l] = gate[i + l] / (1.0f + exp_clamped(-gate[i + l])) * up[i + l];
    for (int l = 0; l < kLanes; ++l) out[i + l] = g[l];
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + exp_clamped(-gate[i])) * up[i];
}

void add_in_place(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace fedsplit
