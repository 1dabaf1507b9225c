// The one place where LibTorch versions differ (Debian's 1.13 on CPU, 2.x with CUDA on GPUs).
#pragma once
#include <torch/torch.h>

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

/// Causal self-attention on [B, H, T, D] tensors (K/V already expanded to H heads). Uses the
/// fused kernel (flash / memory-efficient) where LibTorch has one, else the explicit softmax.
inline torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
#else
  const int64_t T = q.size(-2);
  const int64_t S = k.size(-2);
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  auto mask = torch::ones({T, S}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(S - T + 1);
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1, torch::kFloat).to(q.scalar_type()), v);
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
