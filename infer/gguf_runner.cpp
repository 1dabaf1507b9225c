#include "infer/gguf_runner.h"

#include <cmath>
#include <map>
#include <set>

#include "compress/gguf.h"
#include "compress/gguf_llama.h"
#include "compress/gguf_quant.h"
#include "core/util/error.h"
#include "infer/quant_kernels.h"

namespace fedsplit {
namespace {

// One weight matrix [rows = out, cols = in] as the file stores it.
struct Weight {
  GgmlType type = GgmlType::F32;
  std::vector<uint8_t> bytes;  // Q8_0 / Q4_0 blocks
  torch::Tensor dense;         // F32 / F16, as fp32 [rows, cols]
  int64_t rows = 0, cols = 0;

  bool quantized() const { return type == GgmlType::Q8_0 || type == GgmlType::Q4_0; }

  // x [T, cols] fp32 contiguous -> [T, rows].
  torch::Tensor apply(const torch::Tensor& x, int threads) const {
    if (!quantized()) return torch::matmul(x, dense.t());
    auto y = torch::empty({x.size(0), rows}, torch::kFloat);
    quant_matmul(QuantMatrix{type, bytes.data(), rows, cols}, x.data_ptr<float>(), x.size(0), y.data_ptr<float>(),
                 threads);
    return y;
  }

  // Row `r` as fp32 [cols] (an embedding lookup).
  torch::Tensor row(int64_t r) const {
    if (!quantized()) return dense[r];
    auto out = torch::empty({cols}, torch::kFloat);
    const size_t stride = ggml_row_bytes(type, cols);
    dequantize_values(type, bytes.data() + static_cast<size_t>(r) * stride, cols, out.data_ptr<float>());
    return out;
  }
};

Weight weight_of(GgufTensor& t, const std::string& where) {
  Weight w;
  w.type = t.type;
  w.cols = static_cast<int64_t>(t.dims[0]);
  w.rows = t.dims.size() > 1 ? static_cast<int64_t>(t.dims[1]) : 1;
  if (w.quantized()) {
    w.bytes = std::move(t.data);
    return w;
  }
  if (t.type != GgmlType::F32 && t.type != GgmlType::F16)
    throw FormatError(where + ": tensor " + t.name + " is " + ggml_type_name(static_cast<uint32_t>(t.type)) +
                      "; the engine reads F32, F16, Q8_0 and Q4_0");
  std::vector<float> values(static_cast<size_t>(w.rows * w.cols));
  dequantize_values(t.type, t.data.data(), w.rows * w.cols, values.data());
  w.dense = torch::from_blob(values.data(), {w.rows, w.cols}, torch::kFloat).clone();
  t.data.clear();
  return w;
}

torch::Tensor vector_of(GgufTensor& t, const std::string& where) { return weight_of(t, where).dense.reshape({-1}); }

struct Layer {
  torch::Tensor attn_norm, ffn_norm, q_bias, k_bias, v_bias;
  Weight q, k, v, o, gate, up, down;
  torch::Tensor k_cache, v_cache;  // [kv_heads, context, head_dim]
};

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * weight;
}

}  // namespace

struct GgufRunner::Impl {
  DecoderConfig config;
  std::string architecture;
  int threads = 1;
  int64_t context = 0, position = 0;
  Weight embedding, output;
  bool tied = false;
  torch::Tensor output_norm;
  std::vector<Layer> layers;
  torch::Tensor inv_freq;  // [head_dim / 2]

  // q or k [T, heads, D] rotated at positions position .. position+T-1.
  torch::Tensor rope(const torch::Tensor& x) const {
    const int64_t T = x.size(0), D = x.size(2);
    const auto pos = torch::arange(position, position + T, torch::kFloat).unsqueeze(1);
    const auto angles = (pos * inv_freq).unsqueeze(1);  // [T, 1, D/2]
    const auto cos = angles.cos(), sin = angles.sin();
    if (architecture == "llama") {  // adjacent pairs (2i, 2i+1), the permuted rows' layout
      const auto pairs = x.reshape({T, x.size(1), D / 2, 2});
      const auto a = pairs.select(3, 0), b = pairs.select(3, 1);
      return torch::stack({a * cos - b * sin, a * sin + b * cos}, 3).reshape({T, x.size(1), D});
    }
    const auto a = x.slice(2, 0, D / 2), b = x.slice(2, D / 2, D);  // halves, HF's order
    return torch::cat({a * cos - b * sin, a * sin + b * cos}, 2);
  }

  torch::Tensor attention(Layer& layer, const torch::Tensor& x) {
    const int64_t T = x.size(0), H = config.num_heads, KV = config.num_kv_heads, D = config.resolved_head_dim();
    auto q = layer.q.apply(x, threads), k = layer.k.apply(x, threads), v = layer.v.apply(x, threads);
    if (layer.q_bias.defined()) q = q + layer.q_bias, k = k + layer.k_bias, v = v + layer.v_bias;
    q = rope(q.reshape({T, H, D}));
    k = rope(k.reshape({T, KV, D}));
    layer.k_cache.slice(1, position, position + T).copy_(k.transpose(0, 1));
    layer.v_cache.slice(1, position, position + T).copy_(v.reshape({T, KV, D}).transpose(0, 1));
    const int64_t seen = position + T;
    const auto keys = layer.k_cache.slice(1, 0, seen).repeat_interleave(H / KV, 0);    // [H, seen, D]
    const auto values = layer.v_cache.slice(1, 0, seen).repeat_interleave(H / KV, 0);
    auto scores = torch::matmul(q.transpose(0, 1), keys.transpose(1, 2)) / std::sqrt(static_cast<double>(D));
    // Token t (at position position + t) sees positions 0 .. position + t.
    const auto mask = torch::ones({T, seen}, torch::kBool).triu(position + 1);
    scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
    const auto mixed = torch::matmul(torch::softmax(scores, -1), values);  // [H, T, D]
    return layer.o.apply(mixed.transpose(0, 1).reshape({T, H * D}).contiguous(), threads);
  }

  torch::Tensor mlp(const Layer& layer, const torch::Tensor& x) const {
    const auto hidden = torch::silu(layer.gate.apply(x, threads)) * layer.up.apply(x, threads);
    return layer.down.apply(hidden.contiguous(), threads);
  }
};

GgufRunner::GgufRunner(const std::string& path, int threads, int64_t context) : impl_(std::make_unique<Impl>()) {
  GgufFile file = read_gguf(path);
  std::set<std::string> names;
  std::map<std::string, GgufTensor*> tensors;
  for (auto& t : file.tensors) names.insert(t.name), tensors[t.name] = &t;
  const auto embd = tensors.find("token_embd.weight");
  if (embd == tensors.end()) throw FormatError(path + ": no token_embd.weight: not a llama or qwen2 model file");
  if (file.metadata.find("fedsplit.stage_count") && gguf_uint(file.metadata, "fedsplit.stage_count", path) > 1)
    throw ConfigError(path + " is one stage of a pipeline export: run the export's manifest.json across its stages");
  Impl& m = *impl_;
  m.config = config_from_gguf(file.metadata, names, static_cast<int64_t>(embd->second->dims[1]), path);
  m.architecture = gguf_string(file.metadata, "general.architecture", path);
  m.threads = std::max(1, threads);
  m.context = context > 0 ? context : m.config.max_position;
  if (m.config.rope_scaling != RopeScaling::none)
    throw ConfigError(path + ": RoPE scaling is not supported by the engine yet");
  auto take = [&](const std::string& name) -> GgufTensor& {
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw FormatError(path + ": tensor " + name + " is missing");
    return *it->second;
  };
  m.embedding = weight_of(take("token_embd.weight"), path);
  m.output_norm = vector_of(take("output_norm.weight"), path);
  m.tied = names.count("output.weight") == 0;
  if (!m.tied) m.output = weight_of(take("output.weight"), path);
  const int64_t D = m.config.resolved_head_dim();
  for (int64_t i = 0; i < m.config.num_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    Layer layer;
    layer.attn_norm = vector_of(take(b + "attn_norm.weight"), path);
    layer.ffn_norm = vector_of(take(b + "ffn_norm.weight"), path);
    layer.q = weight_of(take(b + "attn_q.weight"), path);
    layer.k = weight_of(take(b + "attn_k.weight"), path);
    layer.v = weight_of(take(b + "attn_v.weight"), path);
    layer.o = weight_of(take(b + "attn_output.weight"), path);
    layer.gate = weight_of(take(b + "ffn_gate.weight"), path);
    layer.up = weight_of(take(b + "ffn_up.weight"), path);
    layer.down = weight_of(take(b + "ffn_down.weight"), path);
    if (m.config.attn_qkv_bias) {
      layer.q_bias = vector_of(take(b + "attn_q.bias"), path);
      layer.k_bias = vector_of(take(b + "attn_k.bias"), path);
      layer.v_bias = vector_of(take(b + "attn_v.bias"), path);
    }
    layer.k_cache = torch::zeros({m.config.num_kv_heads, m.context, D}, torch::kFloat);
    layer.v_cache = torch::zeros_like(layer.k_cache);
    m.layers.push_back(std::move(layer));
  }
  m.inv_freq = torch::pow(m.config.rope_theta, -torch::arange(0, D, 2, torch::kDouble) / static_cast<double>(D))
                   .to(torch::kFloat);
}

GgufRunner::~GgufRunner() = default;

torch::Tensor GgufRunner::forward(const std::vector<int64_t>& tokens) {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T == 0) return torch::empty({0, m.config.vocab_size});
  if (m.position + T > m.context)
    throw DataError("the sequence would reach " + std::to_string(m.position + T) + " tokens, more than the context of " +
                    std::to_string(m.context) + ": shorten the prompt or the generation");
  std::vector<torch::Tensor> rows;
  for (const int64_t id : tokens) {
    if (id < 0 || id >= m.config.vocab_size)
      throw DataError("token id " + std::to_string(id) + " is outside the vocabulary of " +
                      std::to_string(m.config.vocab_size));
    rows.push_back(m.embedding.row(id));
  }
  torch::Tensor h = torch::stack(rows);
  for (auto& layer : m.layers) {
    h = h + m.attention(layer, rms_norm(h, layer.attn_norm, m.config.norm_eps).contiguous());
    h = h + m.mlp(layer, rms_norm(h, layer.ffn_norm, m.config.norm_eps).contiguous());
  }
  m.position += T;
  const auto normed = rms_norm(h, m.output_norm, m.config.norm_eps).contiguous();
  return m.tied ? m.embedding.apply(normed, m.threads) : m.output.apply(normed, m.threads);
}

void GgufRunner::reset() { impl_->position = 0; }
int64_t GgufRunner::position() const { return impl_->position; }
int64_t GgufRunner::context() const { return impl_->context; }
const DecoderConfig& GgufRunner::config() const { return impl_->config; }
const std::string& GgufRunner::architecture() const { return impl_->architecture; }

}  // namespace fedsplit
