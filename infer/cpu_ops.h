// The small fp32 operations of a llama decoder layer on plain row-major arrays, for the CPU engine:
// at our model sizes one LibTorch op per step costs more in dispatch than in arithmetic, so these
// loops replace rms_norm, RoPE, cached attention, SiLU-gating and residual adds. Each output
// element is computed by one thread in a fixed order, so results do not depend on `threads`.
//
// Torch-free.
#pragma once
#include <cstdint>

namespace fedsplit {

/// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for each of `rows` rows of `cols` floats.
/// out may equal x.
void rms_norm_rows(const float* x, const float* weight, int64_t rows, int64_t cols, double eps, float* out);

/// Which elements of a head RoPE rotates together: (x[2i], x[2i+1]) as in GGUF llama files, or
/// (x[i], x[i + D/2]) as in HF's rotate_half.
enum class RopeStyle { adjacent_pairs, halves };

/// Rotates x [tokens, heads, head_dim] in place; token t sits at position first_position + t.
/// Pair i turns by angle = float(position) * inv_freq[i] (a float product, as in LibTorch);
/// inv_freq has head_dim / 2 entries. head_dim must be even.
void rope_in_place(float* x, int64_t tokens, int64_t heads, int64_t head_dim, int64_t first_position,
                   const float* inv_freq, RopeStyle style);

/// Causal attention of `tokens` new queries against a KV cache. q [tokens, heads, head_dim] (already
/// rotated); k_cache and v_cache [kv_heads, cache_stride, head_dim], holding positions
/// 0 .. first_position + tokens - 1. Head h reads kv head h / (heads / kv_heads); token t attends to
/// positions 0 .. first_position + t with scores scaled by 1 / sqrt(head_dim) and a float softmax.
/// out [tokens, heads * head_dim]. Parallel over (head, token) through infer/thread_pool.h.
void attention_cached(const float* q, const float* k_cache, const float* v_cache, int64_t tokens,
                      int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t cache_stride,
                      int64_t first_position, float* out, int threads);

/// out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i]; out may equal gate.
/// Here and in the softmax, exp is a vectorisable polynomial within 2 ulp of e^x, its argument
/// clamped to [-87, 88].
void silu_mul(const float* gate, const float* up, int64_t n, float* out);

/// x[i] += y[i].
void add_in_place(float* x, const float* y, int64_t n);

}  // namespace fedsplit
