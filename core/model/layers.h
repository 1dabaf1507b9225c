// The building blocks of Decoder: projections, norms, rotary embeddings, attention, MLP, block.
// Submodules are registered under HF's names for the config's family, so that a HF state-dict key
// maps to a module path by a prefix rename only.
#pragma once
#include <torch/torch.h>

#include <ostream>
#include <string>
#include <utility>

#include "core/model/config.h"

namespace fedsplit {

/// A linear projection y = x W^T + b with W [out, in] (nn.Linear's layout). Attention and MLP
/// look their projections up by name at every call, so peft/ can swap one for a subclass
/// (overriding `forward`) with `parent->replace_module(name, ...)`.
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in_features, int64_t out_features, bool bias);
  ~ProjectionImpl() override = default;
  virtual torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;
  /// Makes `weight` and `bias` the very tensors of `base`, frozen: for a subclass that adds to a
  /// frozen projection (an adapter), at no memory cost beyond its own parameters.
  void share_frozen(const ProjectionImpl& base);

  int64_t in_features;
  int64_t out_features;
  /// [out_features, in_features]
  torch::Tensor weight;
  /// [out_features], or undefined when the projection has no bias.
  torch::Tensor bias;
};
TORCH_MODULE(Projection);

/// RMSNorm (HF's: normalise in fp32, cast back, scale) or LayerNorm with bias.
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(NormKind kind, int64_t size, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  NormKind kind;
  double eps;
  /// [size], initialised to 1.
  torch::Tensor weight;
  /// [size] for LayerNorm, undefined for RMSNorm.
  torch::Tensor bias;
};
TORCH_MODULE(Norm);

/// RoPE tables for positions 0 .. max_position-1: {cos, sin}, each [max_position, head_dim/2] in
/// fp32, computed as transformers does (inv_freq in fp32, HF's linear and llama3 scaling).
std::pair<torch::Tensor, torch::Tensor> rope_tables(const DecoderConfig& config);

/// Rotates `x` [B, T, H, D] by the angles of `cos`/`sin` [T, D/2] in HF's rotate_half convention
/// (first half of each head pairs with the second half); returns [B, H, T, D], contiguous.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

/// Causal self-attention. llama/qwen2: q_proj, k_proj, v_proj, o_proj. gpt2: c_attn (fused q|k|v),
/// c_proj.
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const DecoderConfig& config);
  /// x [B, T, hidden]; cos/sin [T, head_dim/2] in x's dtype, or undefined without RoPE.
  /// prefix_keys/prefix_values [kv_heads, P, head_dim] (both or neither): P key/value pairs placed in
  /// front of the T tokens' own for every batch element, as a KV cache holds them (RoPE, if any,
  /// already applied; nothing is applied here). Every query sees all P of them; the T tokens stay
  /// causal among themselves.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& prefix_keys = {}, const torch::Tensor& prefix_values = {});

 private:
  bool fused_;
  int64_t heads_;
  int64_t kv_heads_;
  int64_t head_dim_;
  double dropout_;
};
TORCH_MODULE(Attention);

/// Gated MLP down_proj(act(gate_proj(x)) * up_proj(x)) (llama, qwen2) or c_proj(act(c_fc(x))) (gpt2).
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const DecoderConfig& config);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool gated_;
  Activation activation_;
};
TORCH_MODULE(Mlp);

/// One pre-norm transformer block: h + attn(norm1(h)), then h + mlp(norm2(h)).
/// llama/qwen2 names: self_attn, mlp, input_layernorm, post_attention_layernorm.
/// gpt2 names: ln_1, attn, ln_2, mlp.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const DecoderConfig& config);
  /// h [B, T, hidden]; cos/sin and the optional prefix key/values as AttentionImpl::forward takes them.
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& prefix_keys = {}, const torch::Tensor& prefix_values = {});

  Norm norm1{nullptr};
  Attention attn{nullptr};
  Norm norm2{nullptr};
  Mlp mlp{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(Block);

/// The projection registered as `name` directly under `parent` at this moment.
ProjectionImpl& child_projection(const torch::nn::Module& parent, const std::string& name);

/// Names of the projections that write into the residual stream (scaled down at init).
bool is_residual_projection(const std::string& module_path);

}  // namespace fedsplit
