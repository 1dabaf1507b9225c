// labels: unit
// infer/cpu_ops against the LibTorch computations they replace (the ones of infer/gguf_runner.cpp):
// rms_norm, both RoPE layouts at position offsets, cached causal attention with GQA and several new
// tokens, silu gating and residual adds; attention bit for bit the same on 1, 2 and 3 threads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "infer/cpu_ops.h"

namespace fedsplit {
namespace {

std::vector<float> to_vector(const torch::Tensor& t) {
  const auto c = t.contiguous().to(torch::kFloat);
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// max |got - want| / max(1e-3, max |want|): a relative error that a result of ~0 cannot blow up.
double relative_max_error(const std::vector<float>& got, const torch::Tensor& want_tensor) {
  const auto want = to_vector(want_tensor);
  EXPECT_EQ(got.size(), want.size());
  double diff = 0.0;
  double scale = 1e-3;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return diff / scale;
}

constexpr double kTolerance = 1e-5;  // float summation order differs from LibTorch's, nothing else

TEST(CpuOps, RmsNormMatchesTorch) {
  torch::manual_seed(1);
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 384}, {5, 384}, {3, 7}, {2, 1024}}) {
    const auto x = torch::randn({rows, cols}) * 3.0;
    const auto w = torch::randn({cols});
    const double eps = 1e-5;
    const auto want = x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * w;
    auto xs = to_vector(x);
    const auto ws = to_vector(w);
    std::vector<float> out(xs.size());
    rms_norm_rows(xs.data(), ws.data(), rows, cols, eps, out.data());
    EXPECT_LT(relative_max_error(out, want), kTolerance) << rows << "x" << cols;
    rms_norm_rows(xs.data(), ws.data(), rows, cols, eps, xs.data());  // in place
    EXPECT_EQ(std::memcmp(xs.data(), out.data(), out.size() * sizeof(float)), 0);
  }
}

// gguf_runner's LibTorch RoPE.
torch::Tensor torch_rope(const torch::Tensor& x, int64_t position, const torch::Tensor& inv_freq, RopeStyle style) {
  const int64_t T = x.size(0), D = x.size(2);
  const auto pos = torch::arange(position, position + T, torch::kFloat).unsqueeze(1);
  const auto angles = (pos * inv_freq).unsqueeze(1);
  const auto cos = angles.cos(), sin = angles.sin();
  if (style == RopeStyle::adjacent_pairs) {
    const auto pairs = x.reshape({T, x.size(1), D / 2, 2});
    const auto a = pairs.select(3, 0), b = pairs.select(3, 1);
    return torch::stack({a * cos - b * sin, a * sin + b * cos}, 3).reshape({T, x.size(1), D});
  }
  const auto a = x.slice(2, 0, D / 2), b = x.slice(2, D / 2, D);
  return torch::cat({a * cos - b * sin, a * sin + b * cos}, 2);
}

torch::Tensor inv_freq_for(int64_t D, double theta) {
  return torch::pow(theta, -torch::arange(0, D, 2, torch::kDouble) / static_cast<double>(D)).to(torch::kFloat);
}

TEST(CpuOps, RopeMatchesTorchInBothLayouts) {
  torch::manual_seed(2);
  struct Case {
    int64_t tokens, heads, head_dim, position;
  };
  for (const Case c :
       {Case{1, 6, 64, 0}, Case{1, 6, 64, 37}, Case{5, 2, 64, 3}, Case{7, 3, 16, 0}, Case{2, 1, 8, 1000}}) {
    for (RopeStyle style : {RopeStyle::adjacent_pairs, RopeStyle::halves}) {
      SCOPED_TRACE(std::to_string(c.tokens) + " tokens, " + std::to_string(c.heads) + " heads of " +
                   std::to_string(c.head_dim) + " at " + std::to_string(c.position) +
                   (style == RopeStyle::halves ? " halves" : " pairs"));
      const auto x = torch::randn({c.tokens, c.heads, c.head_dim});
      const auto inv_freq = inv_freq_for(c.head_dim, 10000.0);
      const auto freqs = to_vector(inv_freq);
      auto xs = to_vector(x);
      rope_in_place(xs.data(), c.tokens, c.heads, c.head_dim, c.position, freqs.data(), style);
      EXPECT_LT(relative_max_error(xs, torch_rope(x, c.position, inv_freq, style)), kTolerance);
      // The layouts differ (so the test can tell them apart) except where every angle is 0.
      if (c.position > 0) {
        const auto other = style == RopeStyle::halves ? RopeStyle::adjacent_pairs : RopeStyle::halves;
        EXPECT_GT(relative_max_error(xs, torch_rope(x, c.position, inv_freq, other)), 1e-2);
      }
    }
  }
}

// gguf_runner's LibTorch attention over a cache [KV, stride, D] holding `seen` positions.
torch::Tensor torch_attention(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                              int64_t position) {
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2), KV = k_cache.size(0);
  const int64_t seen = position + T;
  const auto keys = k_cache.slice(1, 0, seen).repeat_interleave(H / KV, 0);
  const auto values = v_cache.slice(1, 0, seen).repeat_interleave(H / KV, 0);
  auto scores = torch::matmul(q.transpose(0, 1), keys.transpose(1, 2)) / std::sqrt(static_cast<double>(D));
  const auto mask = torch::ones({T, seen}, torch::kBool).triu(position + 1);
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  return torch::matmul(torch::softmax(scores, -1), values).transpose(0, 1).reshape({T, H * D});
}

TEST(CpuOps, AttentionMatchesTorchWithGqaOffsetsAndCausalMask) {
  torch::manual_seed(3);
  struct Case {
    int64_t tokens, heads, kv_heads, head_dim, position, stride;
  };
  for (const Case c : {Case{1, 6, 6, 64, 0, 16}, Case{1, 6, 6, 64, 40, 64}, Case{9, 6, 6, 64, 0, 9},
                       Case{4, 6, 2, 64, 5, 32}, Case{3, 4, 1, 16, 11, 20}, Case{6, 8, 4, 32, 0, 6}}) {
    SCOPED_TRACE(std::to_string(c.tokens) + " tokens, " + std::to_string(c.heads) + "/" +
                 std::to_string(c.kv_heads) + " heads of " + std::to_string(c.head_dim) + " at " +
                 std::to_string(c.position));
    const auto q = torch::randn({c.tokens, c.heads, c.head_dim}) * 2.0;
    // Positions past the ones in use hold garbage that must not be read.
    auto k_cache = torch::randn({c.kv_heads, c.stride, c.head_dim}) * 2.0;
    auto v_cache = torch::randn({c.kv_heads, c.stride, c.head_dim});
    const int64_t seen = c.position + c.tokens;
    k_cache.slice(1, seen, c.stride).fill_(std::numeric_limits<float>::quiet_NaN());
    v_cache.slice(1, seen, c.stride).fill_(std::numeric_limits<float>::quiet_NaN());
    const auto want = torch_attention(q, k_cache, v_cache, c.position);
    const auto qs = to_vector(q), ks = to_vector(k_cache), vs = to_vector(v_cache);
    std::vector<float> one(static_cast<size_t>(c.tokens * c.heads * c.head_dim));
    attention_cached(qs.data(), ks.data(), vs.data(), c.tokens, c.heads, c.kv_heads, c.head_dim, c.stride,
                     c.position, one.data(), 1);
    EXPECT_LT(relative_max_error(one, want), kTolerance);
    for (int threads : {2, 3}) {
      std::vector<float> many(one.size(), -1.0f);
      attention_cached(qs.data(), ks.data(), vs.data(), c.tokens, c.heads, c.kv_heads, c.head_dim, c.stride,
                       c.position, many.data(), threads);
      EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0) << threads << " threads";
    }
    if (c.tokens > 1) {  // without the causal mask the result would differ
      const int64_t group = c.heads / c.kv_heads;
      const auto keys = k_cache.slice(1, 0, seen).repeat_interleave(group, 0);
      const auto values = v_cache.slice(1, 0, seen).repeat_interleave(group, 0);
      const auto scores = torch::matmul(q.transpose(0, 1), keys.transpose(1, 2)) /
                          std::sqrt(static_cast<double>(c.head_dim));
      const auto unmasked = torch::matmul(torch::softmax(scores, -1), values);
      EXPECT_GT(relative_max_error(one, unmasked.transpose(0, 1).reshape({c.tokens, -1})), 1e-2);
    }
  }
}

TEST(CpuOps, SiluMulAndAddMatchTorch) {
  torch::manual_seed(4);
  for (int64_t n : {1, 7, 1024, 2817}) {
    const auto gate = torch::randn({n}) * 4.0;
    const auto up = torch::randn({n});
    auto gs = to_vector(gate);
    const auto us = to_vector(up);
    silu_mul(gs.data(), us.data(), n, gs.data());
    EXPECT_LT(relative_max_error(gs, torch::silu(gate) * up), kTolerance) << n;
    auto xs = to_vector(gate);
    add_in_place(xs.data(), us.data(), n);
    EXPECT_EQ(relative_max_error(xs, gate + up), 0.0) << n;  // one float add: exact
  }
  // Every gate from -120 to 120 (e^-gate in and past its clamp to [-87, 88]), each against
  // double-precision silu: within 4e-7 of the larger of the value and 1e-20 (the kernel's e^x is
  // a polynomial within 2 ulp).
  std::vector<float> gates, ones;
  for (float g = -120.0f; g <= 120.0f; g += 0.0371f) gates.push_back(g), ones.push_back(1.0f);
  std::vector<float> out = gates;
  silu_mul(gates.data(), ones.data(), static_cast<int64_t>(gates.size()), out.data());
  for (size_t i = 0; i < gates.size(); ++i) {
    const double want = gates[i] / (1.0 + std::exp(-static_cast<double>(gates[i])));
    EXPECT_LE(std::abs(out[i] - want), 4e-7 * std::max(std::abs(want), 1e-20)) << "gate " << gates[i];
  }
}

}  // namespace
}  // namespace fedsplit
