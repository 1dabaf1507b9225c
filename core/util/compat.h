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

namespace fedsplit::compat {

#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
inline constexpr bool kHasFusedAttention = true;
#else
inline constexpr bool kHasFusedAttention = false;
#endif

/// Additive causal mask [T, S] (0 where key s may be seen by query t, -inf after it), aligned so
/// that the last query sees every key (S >= T: queries are the last T positions). Cached per thread
/// for the last shape, since every layer of a forward pass asks for the same one.
inline const torch::Tensor& causal_bias(int64_t T, int64_t S, int64_t repeat, const torch::TensorOptions& options) {
  thread_local torch::Tensor cached;
  thread_local int64_t cached_t = -1, cached_s = -1, cached_r = -1;
  if (cached_t != T || cached_s != S || cached_r != repeat || !cached.defined() ||
      cached.device() != options.device() || cached.scalar_type() != options.dtype().toScalarType()) {
    auto bias = torch::full({T, S}, -std::numeric_limits<float>::infinity(), options).triu_(S - T + 1);
    cached = repeat > 1 ? bias.repeat({repeat, 1}) : bias;
    cached_t = T, cached_s = S, cached_r = repeat;
  }
  return cached;
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
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  auto expand = [&](const torch::Tensor& t) {
    return rep == 1 ? t : t.unsqueeze(2).expand({B, KV, rep, S, D}).reshape({B, H, S, D});
  };
  if (T == S) {
    return at::scaled_dot_product_attention(q, expand(k), expand(v), /*attn_mask=*/{}, dropout_p, /*is_causal=*/true);
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

/// Autocast to bf16 on CUDA for the scope of this object (no-op on CPU).
class AutocastBF16 {
 public:
  explicit AutocastBF16(bool enable) : enabled_(enable) {
    if (!enabled_) return;
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
#endif
    at::autocast::set_enabled(true);
  }
  ~AutocastBF16() {
    if (!enabled_) return;
    at::autocast::clear_cache();
    at::autocast::set_enabled(false);
  }
  AutocastBF16(const AutocastBF16&) = delete;
  AutocastBF16& operator=(const AutocastBF16&) = delete;

 private:
  bool enabled_;
};

}  // namespace fedsplit::compat
