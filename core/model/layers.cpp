#include "core/model/layers.h"

#include <cmath>

#include "core/util/compat.h"

namespace fedsplit {

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) { return torch::linear(x, weight, bias); }

void ProjectionImpl::share_frozen(const ProjectionImpl& base) {
  torch::NoGradGuard no_grad;
  weight.set_data(base.weight.detach());
  weight.requires_grad_(false);
  if (bias.defined()) {
    bias.set_data(base.bias.detach());
    bias.requires_grad_(false);
  }
}

void ProjectionImpl::pretty_print(std::ostream& stream) const {
  stream << "fedsplit::Projection(in_features=" << in_features << ", out_features=" << out_features
         << ", bias=" << (bias.defined() ? "true" : "false") << ")";
}

NormImpl::NormImpl(NormKind k, int64_t size, double e) : kind(k), eps(e) {
  weight = register_parameter("weight", torch::ones({size}));
  if (kind == NormKind::layer) bias = register_parameter("bias", torch::zeros({size}));
}

namespace {

// RMSNorm with a hand-written backward: the forward is transformers' (statistics in fp32, cast back
// before the scale), but autograd keeps only x and the per-row 1/rms instead of every intermediate,
// and the backward takes a few fused passes instead of a dozen. Skips the weight's gradient when
// the weight is frozen (adapters).
struct RmsNormFunction : torch::autograd::Function<RmsNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               double eps) {
    const auto xf = x.to(torch::kFloat32);
    const auto rstd = torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
    ctx->save_for_backward({x, weight, rstd});
    return weight * (xf * rstd).to(x.scalar_type());
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& weight = saved[1];
    const auto& rstd = saved[2];
    const auto& grad = grads[0];
    const auto normed = x.to(torch::kFloat32) * rstd;
    torch::Tensor grad_weight;
    if (ctx->needs_input_grad(1)) {
      const auto rows = grad.reshape({-1, grad.size(-1)});
      grad_weight = (rows * normed.to(x.scalar_type()).reshape({-1, grad.size(-1)})).sum(0).to(weight.scalar_type());
    }
    torch::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      // d/dx of x * r(x): r * (g - n * mean(g * n)), with g the gradient at n = x * r.
      const auto g = (grad * weight).to(torch::kFloat32);
      const auto dot = (g * normed).mean(-1, /*keepdim=*/true);
      grad_x = torch::addcmul(g * rstd, normed, rstd * dot, -1).to(x.scalar_type());
    }
    return {grad_x, grad_weight, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  if (kind == NormKind::layer) return torch::layer_norm(x, {weight.size(0)}, weight, bias, eps);
  return RmsNormFunction::apply(x, weight, eps);
}

void NormImpl::pretty_print(std::ostream& stream) const {
  stream << "fedsplit::Norm(" << (kind == NormKind::rms ? "rms" : "layer") << ", " << weight.size(0)
         << ", eps=" << eps << ")";
}

std::pair<torch::Tensor, torch::Tensor> rope_tables(const DecoderConfig& c) {
  torch::NoGradGuard no_grad;
  const int64_t dim = c.resolved_head_dim();
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  // Same fp32 operations as transformers, so that positions far out round the same way.
  auto inv_freq = torch::pow(c.rope_theta, torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / dim)
                      .reciprocal();
  if (c.rope_scaling == RopeScaling::linear) {
    inv_freq = inv_freq / c.rope_factor;
  } else if (c.rope_scaling == RopeScaling::llama3) {
    const double old_len = static_cast<double>(c.rope_original_max_position);
    const double low_wavelen = old_len / c.rope_low_freq_factor;
    const double high_wavelen = old_len / c.rope_high_freq_factor;
    const auto wavelen = inv_freq.reciprocal() * (2 * M_PI);
    auto scaled = torch::where(wavelen > low_wavelen, inv_freq / c.rope_factor, inv_freq);
    const auto smooth = (wavelen.reciprocal() * old_len - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
    const auto smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
    const auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv_freq = torch::where(medium, smoothed, scaled);
  }
  const auto angles = torch::outer(torch::arange(c.max_position, f32), inv_freq);
  return {angles.cos().contiguous(), angles.sin().contiguous()};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  // Elementwise work on the [B, H, T, D] view of the projection's [B, T, H, D] output; the cat
  // writes the contiguous [B, H, T, D] that attention wants, so the transpose costs no extra copy.
  // With cos = cat(c, c): x*cos + rotate_half(x)*sin = cat(x1*c - x2*s, x2*c + x1*s).
  const auto xt = x.transpose(1, 2);
  const int64_t half = xt.size(-1) / 2;
  const auto x1 = xt.narrow(-1, 0, half);
  const auto x2 = xt.narrow(-1, half, half);
  return torch::cat({torch::addcmul(x1 * cos, x2, sin, -1), torch::addcmul(x2 * cos, x1, sin)}, -1);
}

ProjectionImpl& child_projection(const torch::nn::Module& parent, const std::string& name) {
  const auto children = parent.named_children();
  const auto* child = children.find(name);
  TORCH_CHECK(child != nullptr, "module ", parent.name(), " has no child '", name, "'");
  auto* projection = dynamic_cast<ProjectionImpl*>(child->get());
  TORCH_CHECK(projection != nullptr, "module '", name, "' must derive from fedsplit::ProjectionImpl to replace a projection");
  return *projection;
}

bool is_residual_projection(const std::string& path) {
  auto ends_with = [&](const std::string& s) {
    return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with("o_proj") || ends_with("down_proj") || ends_with("c_proj");
}

AttentionImpl::AttentionImpl(const DecoderConfig& c)
    : fused_(c.family == ModelFamily::gpt2),
      heads_(c.num_heads),
      kv_heads_(c.num_kv_heads),
      head_dim_(c.resolved_head_dim()),
      dropout_(c.attention_dropout) {
  const int64_t q = heads_ * head_dim_;
  const int64_t kv = kv_heads_ * head_dim_;
  if (fused_) {
    register_module("c_attn", Projection(c.hidden_size, q + 2 * kv, c.attn_qkv_bias));
    register_module("c_proj", Projection(q, c.hidden_size, c.attn_out_bias));
  } else {
    register_module("q_proj", Projection(c.hidden_size, q, c.attn_qkv_bias));
    register_module("k_proj", Projection(c.hidden_size, kv, c.attn_qkv_bias));
    register_module("v_proj", Projection(c.hidden_size, kv, c.attn_qkv_bias));
    register_module("o_proj", Projection(q, c.hidden_size, c.attn_out_bias));
  }
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                     const torch::Tensor& prefix_keys, const torch::Tensor& prefix_values) {
  const int64_t B = x.size(0);
  const int64_t T = x.size(1);
  const int64_t q_width = heads_ * head_dim_;
  const int64_t kv_width = kv_heads_ * head_dim_;
  torch::Tensor q, k, v;  // [B, T, heads, D] views
  if (fused_) {
    // split, not three narrows: its backward is one concatenation, where each narrow's backward
    // would fill a zero tensor of the full width and the three would then be added.
    const auto qkv = child_projection(*this, "c_attn").forward(x).split_with_sizes({q_width, kv_width, kv_width}, -1);
    q = qkv[0].view({B, T, heads_, head_dim_});
    k = qkv[1].view({B, T, kv_heads_, head_dim_});
    v = qkv[2].view({B, T, kv_heads_, head_dim_});
  } else {
    q = child_projection(*this, "q_proj").forward(x).view({B, T, heads_, head_dim_});
    k = child_projection(*this, "k_proj").forward(x).view({B, T, kv_heads_, head_dim_});
    v = child_projection(*this, "v_proj").forward(x).view({B, T, kv_heads_, head_dim_});
  }
  if (cos.defined()) {
    q = apply_rope(q, cos, sin);
    k = apply_rope(k, cos, sin);
  } else {
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
  }
  v = v.transpose(1, 2);
  if (prefix_keys.defined()) {
    TORCH_CHECK(prefix_values.defined() && prefix_keys.dim() == 3 && prefix_keys.size(0) == kv_heads_ &&
                    prefix_keys.size(2) == head_dim_ && prefix_values.sizes() == prefix_keys.sizes(),
                "prefix keys/values must both be [", kv_heads_, ", P, ", head_dim_, "], got ", prefix_keys.sizes(),
                " and ", prefix_values.sizes());
    // The prefix comes first, so the queries are the last T of S = P + T positions: causal_attention
    // then lets every query see the whole prefix and the real tokens up to itself.
    auto batched = [&](const torch::Tensor& t) { return t.to(k.dtype()).unsqueeze(0).expand({B, -1, -1, -1}); };
    k = torch::cat({batched(prefix_keys), k}, 2);
    v = torch::cat({batched(prefix_values), v}, 2);
  }
  const double p = is_training() ? dropout_ : 0.0;
  const auto y = compat::causal_attention(q, k, v, p);  // [B, heads, T, D]
  return child_projection(*this, fused_ ? "c_proj" : "o_proj").forward(y.transpose(1, 2).reshape({B, T, q_width}));
}

MlpImpl::MlpImpl(const DecoderConfig& c) : gated_(c.gated_mlp), activation_(c.activation) {
  if (gated_) {
    register_module("gate_proj", Projection(c.hidden_size, c.intermediate_size, c.mlp_bias));
    register_module("up_proj", Projection(c.hidden_size, c.intermediate_size, c.mlp_bias));
    register_module("down_proj", Projection(c.intermediate_size, c.hidden_size, c.mlp_bias));
  } else {
    register_module("c_fc", Projection(c.hidden_size, c.intermediate_size, c.mlp_bias));
    register_module("c_proj", Projection(c.intermediate_size, c.hidden_size, c.mlp_bias));
  }
}

namespace {
torch::Tensor activate(Activation a, const torch::Tensor& x) {
  switch (a) {
    case Activation::silu: return torch::silu(x);
    case Activation::gelu: return torch::gelu(x);
    case Activation::gelu_tanh: return torch::gelu(x, "tanh");
    case Activation::relu: return torch::relu(x);
  }
  return x;
}
}  // namespace

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  if (gated_) {
    const auto gate = activate(activation_, child_projection(*this, "gate_proj").forward(x));
    return child_projection(*this, "down_proj").forward(gate * child_projection(*this, "up_proj").forward(x));
  }
  return child_projection(*this, "c_proj").forward(activate(activation_, child_projection(*this, "c_fc").forward(x)));
}

BlockImpl::BlockImpl(const DecoderConfig& c) : dropout_(c.dropout) {
  const bool gpt2 = c.family == ModelFamily::gpt2;
  // Registration order follows transformers, so parameters enumerate in the same order.
  if (gpt2) {
    norm1 = register_module("ln_1", Norm(c.norm, c.hidden_size, c.norm_eps));
    attn = register_module("attn", Attention(c));
    norm2 = register_module("ln_2", Norm(c.norm, c.hidden_size, c.norm_eps));
    mlp = register_module("mlp", Mlp(c));
  } else {
    attn = register_module("self_attn", Attention(c));
    mlp = register_module("mlp", Mlp(c));
    norm1 = register_module("input_layernorm", Norm(c.norm, c.hidden_size, c.norm_eps));
    norm2 = register_module("post_attention_layernorm", Norm(c.norm, c.hidden_size, c.norm_eps));
  }
}

torch::Tensor BlockImpl::forward(torch::Tensor h, const torch::Tensor& cos, const torch::Tensor& sin,
                                 const torch::Tensor& prefix_keys, const torch::Tensor& prefix_values) {
  const bool drop = is_training() && dropout_ > 0;
  auto a = attn->forward(norm1->forward(h), cos, sin, prefix_keys, prefix_values);
  if (drop) a = torch::dropout(a, dropout_, true);
  h = h + a;
  auto m = mlp->forward(norm2->forward(h));
  if (drop) m = torch::dropout(m, dropout_, true);
  return h + m;
}

}  // namespace fedsplit
