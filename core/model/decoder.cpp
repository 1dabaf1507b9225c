#include "core/model/decoder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace fedsplit {
namespace {

DecoderConfig resolved(DecoderConfig c) {
  validate(c);
  c.head_dim = c.resolved_head_dim();
  return c;
}

}  // namespace

DecoderImpl::DecoderImpl(const DecoderConfig& config, bool init) : options(resolved(config)) {
  const auto& c = options;
  const bool gpt2 = c.family == ModelFamily::gpt2;
  tokens_ = register_module(gpt2 ? "wte" : "embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  if (c.positions == PositionKind::learned) {
    positions_ = register_module(gpt2 ? "wpe" : "embed_positions", torch::nn::Embedding(c.max_position, c.hidden_size));
  }
  layers_ = torch::nn::ModuleList();
  for (int64_t i = 0; i < c.num_layers; ++i) layers_->push_back(Block(c));
  register_module(gpt2 ? "h" : "layers", layers_);
  final_norm_ = register_module(gpt2 ? "ln_f" : "norm", Norm(c.norm, c.hidden_size, c.norm_eps));
  if (!c.tie_embeddings) register_module("lm_head", Projection(c.hidden_size, c.vocab_size, false));
  if (c.positions == PositionKind::rope) std::tie(rope_cos_, rope_sin_) = rope_tables(c);
  if (init) init_weights(0);
}

Block DecoderImpl::layer(int64_t i) const {
  TORCH_CHECK(i >= 0 && i < num_layers(), "layer ", i, " out of range [0, ", num_layers(), ")");
  return Block(layers_->ptr<BlockImpl>(static_cast<size_t>(i)));
}

torch::Tensor DecoderImpl::embed(const torch::Tensor& input_ids, int64_t position_offset) {
  TORCH_CHECK(input_ids.dim() == 2, "input_ids must be [batch, time], got ", input_ids.sizes());
  TORCH_CHECK(input_ids.scalar_type() == torch::kInt64, "input_ids must be int64, got ", input_ids.scalar_type());
  const int64_t T = input_ids.size(1);
  TORCH_CHECK(position_offset >= 0 && position_offset + T <= options.max_position, "positions ", position_offset,
              "..", position_offset + T - 1, " exceed max_position ", options.max_position);
  if (input_ids.device().is_cpu() && input_ids.numel() > 0) {
    // A clear message for a tokenizer/model mismatch instead of an index error deep in embedding.
    const auto [lo, hi] = torch::aminmax(input_ids);
    TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < options.vocab_size, "token ids span [",
                lo.item<int64_t>(), ", ", hi.item<int64_t>(), "] but vocab_size is ", options.vocab_size);
  }
  auto h = tokens_->forward(input_ids);
  if (positions_) h = h + positions_->weight.narrow(0, position_offset, T);
  if (is_training() && options.dropout > 0) h = torch::dropout(h, options.dropout, true);
  return h;
}

std::pair<torch::Tensor, torch::Tensor> DecoderImpl::rope_for(int64_t offset, int64_t length,
                                                             const torch::Tensor& like) const {
  if (!rope_cos_.defined()) return {};
  TORCH_CHECK(offset >= 0 && offset + length <= options.max_position, "positions ", offset, "..",
              offset + length - 1, " exceed max_position ", options.max_position);
  const auto opts = torch::TensorOptions().device(like.device()).dtype(like.scalar_type());
  return {rope_cos_.narrow(0, offset, length).to(opts), rope_sin_.narrow(0, offset, length).to(opts)};
}

torch::Tensor DecoderImpl::run_layers(torch::Tensor h, int64_t begin, int64_t end, int64_t position_offset) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= num_layers(), "layers [", begin, ", ", end,
              ") out of range for ", num_layers(), " layers");
  TORCH_CHECK(h.dim() == 3 && h.size(2) == options.hidden_size, "hidden states must be [batch, time, ",
              options.hidden_size, "], got ", h.sizes());
  const auto [cos, sin] = rope_for(position_offset, h.size(1), h);
  if (!prefix_.defined()) {
    for (int64_t i = begin; i < end; ++i) h = layers_->ptr<BlockImpl>(static_cast<size_t>(i))->forward(h, cos, sin);
    return h;
  }
  // Sliced from the packed tensor at every call (not once when set), so that autograd reaches it and
  // an optimizer's in-place update or a move to another device is seen.
  const int64_t kv_heads = options.num_kv_heads;
  const int64_t head_dim = options.head_dim;
  const auto per_layer = prefix_.to(h.options()).reshape({prefix_length(), num_layers(), 2, kv_heads, head_dim});
  for (int64_t i = begin; i < end; ++i) {
    const auto pair = per_layer.select(1, i).permute({1, 2, 0, 3});  // [2, kv_heads, P, head_dim]
    h = layers_->ptr<BlockImpl>(static_cast<size_t>(i))->forward(h, cos, sin, pair[0], pair[1]);
  }
  return h;
}

void DecoderImpl::set_prefix_key_values(torch::Tensor packed) {
  if (packed.defined()) {
    const int64_t width = num_layers() * 2 * options.num_kv_heads * options.head_dim;
    TORCH_CHECK(packed.dim() == 2 && packed.size(0) > 0 && packed.size(1) == width,
                "prefix key/values must be [P, ", width, "] (num_layers * 2 * kv_heads * head_dim), got ",
                packed.sizes());
  }
  prefix_ = std::move(packed);
}

torch::Tensor DecoderImpl::head(const torch::Tensor& h) {
  const auto normed = final_norm(h);
  if (options.tie_embeddings) return torch::linear(normed, tokens_->weight);
  return child_projection(*this, "lm_head").forward(normed);
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& input_ids) { return forward(input_ids, prefix_length()); }

torch::Tensor DecoderImpl::forward(const torch::Tensor& input_ids, int64_t position_offset) {
  return head(run_layers(embed(input_ids, position_offset), 0, num_layers(), position_offset));
}

void DecoderImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  // Drawn on the CPU in module order from one generator, then copied: device-independent.
  auto gen = at::detail::createCPUGenerator(seed);
  const double std = options.initializer_range;
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(options.num_layers));
  auto normal = [&](torch::Tensor& t, double s) {
    t.copy_(torch::empty(t.sizes(), torch::kFloat32).normal_(0.0, s, gen));
  };
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    torch::nn::Module* m = item.value().get();
    if (auto* p = dynamic_cast<ProjectionImpl*>(m)) {
      normal(p->weight, is_residual_projection(item.key()) ? residual_std : std);
      if (p->bias.defined()) p->bias.zero_();
    } else if (auto* n = dynamic_cast<NormImpl*>(m)) {
      n->weight.fill_(1.0);
      if (n->bias.defined()) n->bias.zero_();
    } else if (auto* e = dynamic_cast<torch::nn::EmbeddingImpl*>(m)) {
      normal(e->weight, std);
    }
  }
}

void DecoderImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  if (rope_cos_.defined()) {
    rope_cos_ = rope_cos_.to(device);
    rope_sin_ = rope_sin_.to(device);
  }
}

void DecoderImpl::to(torch::Dtype dtype, bool non_blocking) { torch::nn::Module::to(dtype, non_blocking); }

void DecoderImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  if (rope_cos_.defined()) {
    rope_cos_ = rope_cos_.to(device);
    rope_sin_ = rope_sin_.to(device);
  }
}

std::pair<std::shared_ptr<torch::nn::Module>, std::string> module_parent(const Decoder& model, const std::string& path) {
  const auto dot = path.rfind('.');
  if (dot == std::string::npos) return {model.ptr(), path};
  const auto modules = model->named_modules("", /*include_self=*/false);
  const auto* parent = modules.find(path.substr(0, dot));
  TORCH_CHECK(parent != nullptr, "no module '", path.substr(0, dot), "'");
  return {*parent, path.substr(dot + 1)};
}

int64_t count_parameters(const Decoder& model) {
  int64_t n = 0;
  for (const auto& p : model->parameters()) n += p.numel();
  return n;
}

}  // namespace fedsplit
