// The one place where LibTorch versions differ (Debian's 1.13 on CPU, 2.x with CUDA on GPUs).
#pragma once
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <optional>

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

// True when building against LibTorch major.minor or newer.
#if defined(TORCH_VERSION_MAJOR)
#define FEDSPLIT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))
#else
#define FEDSPLIT_TORCH_AT_LEAST(major, minor) 0
#endif

namespace fedsplit::compat {

// FEDSPLIT_EXPLICIT_ATTENTION forces the 1.13 path on 2.x too (to compare the two on one machine).
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2 && !defined(FEDSPLIT_EXPLICIT_ATTENTION)
#define FEDSPLIT_FUSED_ATTENTION 1
inline constexpr bool kHasFusedAttention = true;
#else
inline constexpr bool kHasFusedAttention = false;
#endif

/// Additive causal mask [T, S] (0 where key s may be seen by query t, -inf after it), aligned so
/// that the last query sees every key (S >= T: queries are the last T positions), stacked `repeat`
/// times along the rows. Every layer of a forward pass asks for the same one, so the last one is
/// kept per thread unless it is large.
inline torch::Tensor causal_bias(int64_t T, int64_t S, int64_t repeat, const torch::TensorOptions& options) {
  thread_local torch::Tensor cached;
  thread_local int64_t cached_t = -1, cached_s = -1, cached_r = -1;
  if (cached.defined() && cached_t == T && cached_s == S && cached_r == repeat && cached.device() == options.device() &&
      cached.scalar_type() == options.dtype().toScalarType()) {
    return cached;
  }
  auto bias = torch::full({T, S}, -std::numeric_limits<float>::infinity(), options).triu_(S - T + 1);
  if (repeat > 1) bias = bias.repeat({repeat, 1});
  constexpr int64_t kMaxCached = int64_t{1} << 22;  // 16 MB of fp32
  if (bias.numel() <= kMaxCached) {
    cached = bias;
    cached_t = T, cached_s = S, cached_r = repeat;
  }
  return bias;
}

/// Causal self-attention, scaled by 1/sqrt(D). q [B, H, T, D]; k, v [B, KV, S, D] with KV dividing
/// H (grouped-query attention: query head h reads KV head h / (H / KV), as HF's repeat_kv), S >= T
/// (the T queries are the last positions). Any strides. Returns [B, H, T, D]. `dropout_p` applies to
/// the attention weights (pass 0 outside training).
inline torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      double dropout_p = 0.0) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t KV = k.size(1), S = k.size(2);
  TORCH_CHECK(H % KV == 0 && S >= T, "causal_attention: bad shapes q ", q.sizes(), " k ", k.sizes());
  const int64_t rep = H / KV;
#if defined(FEDSPLIT_FUSED_ATTENTION)
  auto expand = [&](const torch::Tensor& t) {
    return rep == 1 ? t : t.unsqueeze(2).expand({B, KV, rep, S, D}).reshape({B, H, S, D});
  };
  if (T == S) {
#if FEDSPLIT_TORCH_AT_LEAST(2, 5)  // the kernel reads grouped K/V itself
    return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, dropout_p, /*is_causal=*/true, /*scale=*/{},
                                            /*enable_gqa=*/rep > 1);
#else
    return at::scaled_dot_product_attention(q, expand(k), expand(v), /*attn_mask=*/{}, dropout_p, /*is_causal=*/true);
#endif
  }
  // is_causal aligns the mask top-left; queries after a cache need it bottom-right.
  return at::scaled_dot_product_attention(q, expand(k), expand(v), causal_bias(T, S, 1, q.options()), dropout_p, false);
#else
  // Without a fused kernel: one baddbmm applies scale and mask, one softmax, one bmm. The rep query
  // heads of a KV group are stacked along the rows ([rep*T, S] per group), so K and V are never
  // copied rep times.
  const auto qg = q.reshape({B * KV, rep * T, D});
  const auto kg = k.reshape({B * KV, S, D});
  const auto vg = v.reshape({B * KV, S, D});
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  auto scores = torch::baddbmm(causal_bias(T, S, rep, q.options()), qg, kg.transpose(1, 2), /*beta=*/1, /*alpha=*/scale);
  auto probs = torch::softmax(scores, -1, torch::kFloat);
  if (probs.scalar_type() != q.scalar_type()) probs = probs.to(q.scalar_type());
  if (dropout_p > 0) probs = torch::dropout(probs, dropout_p, /*train=*/true);
  return torch::bmm(probs, vg).view({B, H, T, D});
#endif
}

/// The dtype CUDA autocast runs a matmul on `x` in right now, or x's own dtype when autocast is off.
/// Custom autograd functions are not autocast-aware: they cast their inputs with this themselves.
inline at::ScalarType autocast_matmul_dtype(const at::Tensor& x) {
  if (!x.is_cuda() || !at::isFloatingType(x.scalar_type())) return x.scalar_type();
#if FEDSPLIT_TORCH_AT_LEAST(2, 4)
  if (at::autocast::is_autocast_enabled(at::kCUDA)) return at::autocast::get_autocast_dtype(at::kCUDA);
#else
  if (at::autocast::is_enabled()) return at::autocast::get_autocast_gpu_dtype();
#endif
  return x.scalar_type();
}

/// Autocast to bf16 on CUDA for the scope of this object (no-op on CPU).
class AutocastBF16 {
 public:
  explicit AutocastBF16(bool enable) : enabled_(enable) {
    if (!enabled_) return;
#if FEDSPLIT_TORCH_AT_LEAST(2, 4)  // per-device API; the global one is deprecated there
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~AutocastBF16() {
    if (!enabled_) return;
    at::autocast::clear_cache();
#if FEDSPLIT_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
  }
  AutocastBF16(const AutocastBF16&) = delete;
  AutocastBF16& operator=(const AutocastBF16&) = delete;

 private:
  bool enabled_;
};

}  // namespace fedsplit::compat
