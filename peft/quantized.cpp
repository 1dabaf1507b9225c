#include "peft/quantized.h"

#include <numeric>

#include "core/model/hf.h"
#include "core/util/compat.h"
#include "core/util/error.h"
#include "peft/lora.h"

namespace fedsplit {
namespace {

// x W^T with W dequantized from codes in forward and again in backward: autograd keeps the codes
// (already resident) instead of a fp32 copy of W per layer, which is the memory QLoRA saves.
struct QuantizedLinearFunction : torch::autograd::Function<QuantizedLinearFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& data,
                               const torch::Tensor& scales, int64_t bits, int64_t group_size) {
    ctx->save_for_backward({data, scales});
    ctx->saved_data["bits"] = bits;
    ctx->saved_data["group_size"] = group_size;
    return torch::linear(x, dequantize_weight(data, scales, static_cast<int>(bits), group_size, x.scalar_type()));
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    torch::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      const auto& grad = grads[0];
      const auto w = dequantize_weight(saved[0], saved[1], static_cast<int>(ctx->saved_data["bits"].toInt()),
                                       ctx->saved_data["group_size"].toInt(), grad.scalar_type());
      grad_x = torch::matmul(grad, w);
    }
    return {grad_x, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// Projections inside the blocks. lm_head (the only top-level one) stays in full precision: its
// errors land directly on the logits, and QLoRA-style recipes keep the head (and the embeddings,
// which are not projections) unquantized; with tied embeddings it is not a projection anyway.
bool is_block_projection(const std::string& path) { return path.find('.') != std::string::npos; }

}  // namespace

int64_t quant_max(int bits) {
  TORCH_CHECK(bits == 4 || bits == 8, "quantization bits must be 4 or 8, got ", bits);
  return bits == 8 ? 127 : 7;
}

QuantizedWeight quantize_weight(const torch::Tensor& weight, int bits, int64_t group_size) {
  TORCH_CHECK(weight.dim() == 2, "quantize_weight expects [out, in], got ", weight.sizes());
  const int64_t out = weight.size(0), in = weight.size(1);
  TORCH_CHECK(group_size > 0 && in % group_size == 0, "group size ", group_size, " does not divide ", in);
  const double qmax = static_cast<double>(quant_max(bits));
  torch::NoGradGuard no_grad;
  const auto w = weight.detach().to(torch::kFloat32).reshape({out, in / group_size, group_size});
  const auto scales = w.abs().amax(-1) / qmax;
  // An all-zero group divides by 1 instead of 0: codes 0, and scale 0 still decodes to 0.
  const auto divisor = torch::where(scales > 0, scales, torch::ones_like(scales));
  const auto codes = torch::round(w / divisor.unsqueeze(-1)).clamp(-qmax, qmax).to(torch::kInt8).reshape({out, in});
  return {bits == 8 ? codes : pack_int4(codes), scales};
}

torch::Tensor dequantize_weight(const torch::Tensor& data, const torch::Tensor& scales, int bits, int64_t group_size,
                                torch::Dtype dtype) {
  const auto codes = bits == 4 ? unpack_int4(data) : data;
  const int64_t out = codes.size(0), in = codes.size(1);
  const auto w = codes.to(torch::kFloat32).view({out, in / group_size, group_size}) * scales.unsqueeze(-1);
  return w.view({out, in}).to(dtype);
}

torch::Tensor pack_int4(const torch::Tensor& codes) {
  TORCH_CHECK(codes.size(-1) % 2 == 0, "pack_int4 needs an even last dimension, got ", codes.sizes());
  TORCH_CHECK(codes.numel() == 0 || (codes.min().item<int64_t>() >= -8 && codes.max().item<int64_t>() <= 7),
              "pack_int4 codes must lie in [-8, 7]");
  auto shape = codes.sizes().vec();
  shape.back() /= 2;
  const auto u = (codes.to(torch::kInt16) + 8).to(torch::kUInt8).reshape({-1, 2});
  const auto low = u.select(1, 0), high = u.select(1, 1);
  return torch::bitwise_or(low, torch::bitwise_left_shift(high, 4)).reshape(shape);
}

torch::Tensor unpack_int4(const torch::Tensor& packed) {
  TORCH_CHECK(packed.scalar_type() == torch::kUInt8, "unpack_int4 expects uint8, got ", packed.scalar_type());
  auto shape = packed.sizes().vec();
  shape.back() *= 2;
  const auto low = torch::bitwise_and(packed, 15), high = torch::bitwise_right_shift(packed, 4);
  return (torch::stack({low, high}, -1).to(torch::kInt8) - 8).reshape(shape);
}

void check_quant_options(int bits, int64_t group_size, int64_t in_features, const std::string& module) {
  if (bits != 4 && bits != 8)
    throw ConfigError("base quantization bits must be 4 or 8 (0 = off), got " + std::to_string(bits) + " for " +
                      module);
  if (group_size <= 0)
    throw ConfigError("base quantization group_size must be positive, got " + std::to_string(group_size) + " for " +
                      module);
  if (in_features % group_size != 0)
    throw ConfigError("base quantization group_size " + std::to_string(group_size) + " does not divide in_features " +
                      std::to_string(in_features) + " of " + module + ": choose a group size that divides it");
  if (bits == 4 && in_features % 2 != 0)
    throw ConfigError("4-bit quantization packs two inputs per byte, but " + module + " has an odd in_features " +
                      std::to_string(in_features) + ": use bits 8");
}

QuantizedProjectionImpl::QuantizedProjectionImpl(const ProjectionImpl& source, int b, int64_t group,
                                                 const std::string& module)
    : ProjectionImpl(source.in_features, source.out_features, source.bias.defined()), bits(b), group_size(group) {
  check_quant_options(bits, group_size, in_features, module);
  torch::NoGradGuard no_grad;
  auto q = quantize_weight(source.weight, bits, group_size);
  qweight = register_buffer("qweight", q.data);
  scales = register_buffer("scales", q.scales);
  // Drop the fp32 matrix ProjectionImpl allocated: the point is not to hold it. The 0-element
  // tensor keeps the weight's dtype and device for code that asks (LoRA builds A/B from them).
  weight.set_data(torch::empty({0}, source.weight.options()));
  weight.requires_grad_(false);
  if (bias.defined()) {
    bias.set_data(source.bias.detach());
    bias.requires_grad_(source.bias.requires_grad());
  }
}

torch::Tensor QuantizedProjectionImpl::linear_no_bias(const torch::Tensor& x) const {
  // Under bf16 autocast, compute in bf16 as nn.Linear would: a fp32 product here would be slower
  // and make every activation after it fp32.
  const auto in = x.to(compat::autocast_matmul_dtype(x));
  return QuantizedLinearFunction::apply(in, qweight, scales, static_cast<int64_t>(bits), group_size);
}

torch::Tensor QuantizedProjectionImpl::forward(const torch::Tensor& x) {
  const auto y = linear_no_bias(x);
  // The bias in y's dtype, as linear under autocast adds it: a fp32 bias would promote the output.
  return bias.defined() ? y + bias.to(y.scalar_type()) : y;
}

torch::Tensor QuantizedProjectionImpl::dequantized_weight(torch::Dtype dtype) const {
  return dequantize_weight(qweight, scales, bits, group_size, dtype);
}

int64_t QuantizedProjectionImpl::weight_bytes() const {
  return qweight.numel() * static_cast<int64_t>(qweight.element_size()) +
         scales.numel() * static_cast<int64_t>(scales.element_size());
}

void QuantizedProjectionImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  to_keeping_buffer_dtypes(*this, device, dtype, non_blocking);
}

void QuantizedProjectionImpl::to(torch::Dtype dtype, bool non_blocking) {
  to_keeping_buffer_dtypes(*this, c10::nullopt, dtype, non_blocking);
}

void QuantizedProjectionImpl::pretty_print(std::ostream& stream) const {
  stream << "fedsplit::QuantizedProjection(in_features=" << in_features << ", out_features=" << out_features
         << ", bias=" << (bias.defined() ? "true" : "false") << ", bits=" << bits << ", group_size=" << group_size
         << ")";
}

void to_keeping_buffer_dtypes(torch::nn::Module& module, const c10::optional<torch::Device>& device,
                              const c10::optional<torch::Dtype>& dtype, bool non_blocking) {
  for (auto& item : module.named_parameters(/*recurse=*/false)) {
    auto& p = item.value();
    const auto options = p.options().device(device.value_or(p.device())).dtype(dtype.value_or(p.scalar_type()));
    p.set_data(p.to(options, non_blocking));
  }
  for (auto& item : module.named_buffers(/*recurse=*/false)) {
    auto& b = item.value();
    if (device) b.set_data(b.to(*device, non_blocking));
  }
}

void quantize_frozen_base(Decoder& model, const BaseQuantOptions& o) {
  if (o.bits == 0) return;
  if (!lora_modules(model).empty())
    throw ConfigError("quantize_frozen_base: LoRA is already applied; quantize the base first, then apply LoRA");
  const ModelFamily family = model->options.family;
  const auto modules = model->named_modules("", /*include_self=*/false);
  std::vector<std::string> paths;
  for (const auto& path : projection_paths(model)) {
    if (!is_block_projection(path)) continue;
    const auto& module = *modules.find(path);
    if (std::dynamic_pointer_cast<QuantizedProjectionImpl>(module))
      throw ConfigError("quantize_frozen_base: " + hf_module_path(path, family) +
                        " is already quantized; quantize once");
    check_quant_options(o.bits, o.group_size, std::dynamic_pointer_cast<ProjectionImpl>(module)->in_features,
                        hf_module_path(path, family) + " (base_bits " + std::to_string(o.bits) + ", base_group_size " +
                            std::to_string(o.group_size) + ")");
    paths.push_back(path);
  }
  for (const auto& path : paths) {
    const auto [parent, name] = module_parent(model, path);
    const ProjectionImpl& plain = child_projection(*parent, name);
    QuantizedProjection q(plain, o.bits, o.group_size, hf_module_path(path, family));
    q->train(plain.is_training());
    parent->replace_module(name, q);
  }
}

int64_t frozen_weight_bytes(const Decoder& model) {
  int64_t bytes = 0;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    if (!is_block_projection(item.key())) continue;
    const auto* m = item.value().get();
    const auto plain_bytes = [](const torch::Tensor& w) { return w.numel() * static_cast<int64_t>(w.element_size()); };
    if (const auto* lora = dynamic_cast<const LoraProjectionImpl*>(m)) {
      bytes += plain_bytes(lora->weight) + (lora->quantized_base ? lora->quantized_base->weight_bytes() : 0);
    } else if (const auto* q = dynamic_cast<const QuantizedProjectionImpl*>(m)) {
      bytes += q->weight_bytes();
    } else if (const auto* p = dynamic_cast<const ProjectionImpl*>(m)) {
      bytes += plain_bytes(p->weight);
    }
  }
  return bytes;
}

}  // namespace fedsplit
