#include "compress/gptq.h"

#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "core/util/error.h"
#include "peft/quantized.h"

namespace fedsplit {
namespace {

void check_options(const GptqOptions& o, int64_t in_features) {
  effective_group_size(o.quant, in_features);
  if (o.block_size <= 0) throw ConfigError("gptq block_size must be positive, got " + std::to_string(o.block_size));
  // A group that straddled two blocks would take its scale from columns the block's lazy update
  // has not reached yet.
  if (o.quant.group_size > 0 && o.block_size % o.quant.group_size != 0)
    throw ConfigError("gptq block_size " + std::to_string(o.block_size) + " must be a multiple of group_size " +
                      std::to_string(o.quant.group_size));
  if (!(o.percdamp >= 0)) throw ConfigError("gptq percdamp must be >= 0, got " + std::to_string(o.percdamp));
}

// peft/quantized.h's absmax scale, for the columns `w` [out, k] of one group (or the whole row).
torch::Tensor absmax_scale(const torch::Tensor& w, int bits) {
  return w.abs().amax(1) / static_cast<double>(quant_max(bits));
}

// The upper Cholesky factor of (H + damping)^-1, in fp64 (the inverse of a badly conditioned H
// loses too much in fp32), returned as fp32.
torch::Tensor inverse_cholesky_upper(torch::Tensor h, double percdamp) {
  const auto damp = percdamp * h.diagonal().mean().item<double>();
  h.diagonal().add_(damp);
  torch::Tensor lower, info;
  std::tie(lower, info) = torch::linalg_cholesky_ex(h);
  const auto not_pd = [](const torch::Tensor& i) { return i.item<int64_t>() != 0; };
  if (not_pd(info))
    throw Error("gptq: the Hessian plus damping is not positive definite (minor " +
                std::to_string(info.item<int64_t>()) + "): raise percdamp or add calibration tokens");
  torch::Tensor upper;
  std::tie(upper, info) = torch::linalg_cholesky_ex(torch::cholesky_inverse(lower), /*upper=*/true);
  if (not_pd(info)) throw Error("gptq: the inverse Hessian lost positive definiteness: raise percdamp");
  return upper.to(torch::kFloat32);
}

}  // namespace

GptqHessian::GptqHessian(int64_t in_features) : in_features_(in_features) {
  if (in_features <= 0)
    throw ConfigError("GptqHessian: in_features must be positive, got " + std::to_string(in_features));
}

void GptqHessian::add_batch(const torch::Tensor& x) {
  if (x.dim() < 1 || x.size(-1) != in_features_)
    throw ConfigError("GptqHessian: calibration inputs must end in " + std::to_string(in_features_) +
                      " features, got " + (x.dim() < 1 ? std::string("a scalar") : std::to_string(x.size(-1))));
  torch::NoGradGuard no_grad;
  auto flat = x.detach().reshape({-1, in_features_}).to(torch::kFloat32);
  if (!sum_xxt_.defined()) sum_xxt_ = torch::zeros({in_features_, in_features_}, flat.options());
  flat = flat.to(sum_xxt_.device());
  sum_xxt_.addmm_(flat.t(), flat);
  tokens_ += flat.size(0);
}

torch::Tensor GptqHessian::hessian() const {
  if (tokens_ == 0) throw Error("GptqHessian: no calibration inputs were added");
  return sum_xxt_ * (2.0 / static_cast<double>(tokens_));
}

GptqResult gptq_quantize(const torch::Tensor& weight, const torch::Tensor& hessian, const GptqOptions& options) {
  if (weight.dim() != 2)
    throw ConfigError("gptq expects a weight [out, in], got " + std::to_string(weight.dim()) + " dimensions");
  const int64_t out = weight.size(0), in = weight.size(1);
  if (hessian.dim() != 2 || hessian.size(0) != in || hessian.size(1) != in)
    throw ConfigError("gptq: the Hessian must be [" + std::to_string(in) + ", " + std::to_string(in) +
                      "] for a weight with " + std::to_string(in) + " inputs");
  check_options(options, in);
  const int bits = options.quant.bits;
  const int64_t group = effective_group_size(options.quant, in);
  const bool per_channel = options.quant.group_size == 0;
  torch::NoGradGuard no_grad;

  auto w = weight.detach().to(torch::kFloat32).clone();
  auto h = hessian.detach().to(w.device(), torch::kFloat64).clone();
  // A dead input contributes nothing to the output: its weights are set to 0 and its Hessian row
  // to the identity's, so it is quantized exactly (to 0) and feeds back no error.
  const auto dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1.0);
  w.masked_fill_(dead.unsqueeze(0), 0.0);

  torch::Tensor perm;
  if (options.act_order) {
    perm = std::get<1>(torch::sort(h.diagonal(), /*stable=*/true, /*dim=*/0, /*descending=*/true));
    w = w.index_select(1, perm);
    h = h.index_select(0, perm).index_select(1, perm);
  }
  const auto u = inverse_cholesky_upper(h, options.percdamp);

  auto q = torch::zeros_like(w);
  auto codes = torch::zeros({out, in}, w.options().dtype(torch::kInt8));
  std::vector<torch::Tensor> group_scales;
  torch::Tensor scale;
  if (per_channel) scale = absmax_scale(w, bits);

  for (int64_t i1 = 0; i1 < in; i1 += options.block_size) {
    const int64_t i2 = std::min(i1 + options.block_size, in);
    auto block = w.slice(1, i1, i2).clone();  // columns i1..i2 with the in-block updates
    auto errors = torch::zeros_like(block);   // (w - q) / U_ii per column, for the lazy update
    const auto u_block = u.slice(0, i1, i2).slice(1, i1, i2);
    for (int64_t i = 0; i < i2 - i1; ++i) {
      const int64_t col = i1 + i;
      if (!per_channel && col % group == 0) {
        scale = absmax_scale(block.slice(1, i, i + group), bits);
        group_scales.push_back(scale);
      }
      const auto column = block.select(1, i);
      const auto c = quantize_to_codes(column, scale, bits);
      const auto qc = c.to(torch::kFloat32) * scale;
      codes.select(1, col).copy_(c);
      q.select(1, col).copy_(qc);
      const auto err = (column - qc) / u_block[i][i];
      if (i + 1 < i2 - i1) block.slice(1, i + 1).addr_(err, u_block[i].slice(0, i + 1), 1, -1);
      errors.select(1, i).copy_(err);
    }
    if (i2 < in) w.slice(1, i2).addmm_(errors, u.slice(0, i1, i2).slice(1, i2), 1, -1);
  }

  const auto position_group = torch::div(torch::arange(in, w.options().dtype(torch::kLong)), group, "floor");
  auto g_idx = position_group;
  if (options.act_order) {
    const auto inverse = torch::argsort(perm);
    q = q.index_select(1, inverse);
    codes = codes.index_select(1, inverse);
    g_idx = position_group.index_select(0, inverse);  // column perm[k] sits at position k
  }
  const auto scales = per_channel ? scale.unsqueeze(1) : torch::stack(group_scales, 1);
  return {q, codes, scales, g_idx};
}

}  // namespace fedsplit
