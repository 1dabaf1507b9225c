#include "infer/gguf_stage.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "compress/gguf.h"
#include "compress/gguf_llama.h"
#include "compress/gguf_quant.h"
#include "core/util/error.h"
#include "infer/cpu_ops.h"
#include "infer/cuda_graph.h"
#include "infer/device_sync.h"
#include "infer/quant_kernels.h"
#include "infer/thread_pool.h"

namespace fedsplit {
namespace {

// One weight matrix [rows = out, cols = in] as the file stores it.
struct Weight {
  GgmlType type = GgmlType::F32;
  std::vector<uint8_t> blocks;  // Q8_0 / Q4_0 bytes, read by the kernels (CPU only)
  QuantLayout layout = QuantLayout::plain;  // how `blocks` are arranged (see use_kernel_layout)
  torch::Tensor dense;          // otherwise fp32 [rows, cols] on the stage's device
  int64_t rows = 0, cols = 0, stored_bytes = 0;

  // x [T, cols] fp32 -> [T, rows].
  torch::Tensor apply(const torch::Tensor& x, int threads) const {
    if (dense.defined()) return torch::matmul(x, dense.t());
    const auto input = x.contiguous();
    auto y = torch::empty({x.size(0), rows}, torch::kFloat);
    quant_matmul(matrix(), input.data_ptr<float>(), x.size(0), y.data_ptr<float>(), threads);
    return y;
  }

  // Rows `ids` as fp32 [T, cols] (an embedding lookup).
  torch::Tensor rows_of(const std::vector<int64_t>& ids) const {
    if (dense.defined()) {
      const auto index = to_device_async(torch::tensor(ids, torch::kLong), dense.device());
      return dense.index_select(0, index);
    }
    auto out = torch::empty({static_cast<int64_t>(ids.size()), cols}, torch::kFloat);
    for (size_t i = 0; i < ids.size(); ++i)
      dequantize_matrix_row(matrix(), ids[i], out.data_ptr<float>() + static_cast<int64_t>(i) * cols);
    return out;
  }

  QuantMatrix matrix() const { return QuantMatrix{type, blocks.data(), rows, cols, layout}; }

  // Rearranges the blocks into the layout the CPU kernels run fastest on (the same bytes and
  // results; interleaved rows of 16 where the AVX2 kernels run). Done once the matrix is final:
  // after stacking, which concatenates plain rows.
  void use_kernel_layout() {
    if (blocks.empty()) return;
    layout = preferred_layout(type, rows, cols);
    if (layout != QuantLayout::plain) blocks = to_layout(type, blocks.data(), rows, cols, layout);
  }
};

bool kernel_type(GgmlType type) { return type == GgmlType::Q8_0 || type == GgmlType::Q4_0; }

// The tensor's weight; quantized blocks stay as they are for the CPU kernels, everything else
// becomes fp32 on `device`.
Weight weight_of(GgufTensor& t, const torch::Device& device, const std::string& where) {
  Weight w;
  w.type = t.type;
  w.cols = static_cast<int64_t>(t.dims[0]);
  w.rows = t.dims.size() > 1 ? static_cast<int64_t>(t.dims[1]) : 1;
  w.stored_bytes = static_cast<int64_t>(t.data.size());
  if (!kernel_type(t.type) && t.type != GgmlType::F32 && t.type != GgmlType::F16)
    throw FormatError(where + ": tensor " + t.name + " is " + ggml_type_name(static_cast<uint32_t>(t.type)) +
                      "; the engine reads F32, F16, Q8_0 and Q4_0");
  if (kernel_type(t.type) && device.is_cpu()) {
    w.blocks = std::move(t.data);
    return w;
  }
  std::vector<float> values(static_cast<size_t>(w.rows * w.cols));
  dequantize_values(t.type, t.data.data(), w.rows * w.cols, values.data());
  w.dense = torch::from_blob(values.data(), {w.rows, w.cols}, torch::kFloat).to(device, /*non_blocking=*/false, true);
  t.data = {};
  return w;
}

// Projections of the same input, stacked into one matrix when they share a type: one product then
// serves them all (one activation quantization and one parallel region on the CPU, one launch on
// CUDA). Quantized rows are independent blocks, so stacking is concatenating their bytes.
struct Projections {
  std::vector<Weight> parts;   // one stacked matrix, or one per projection when the types differ
  std::vector<int64_t> widths;  // each projection's output width

  explicit Projections(std::vector<Weight> weights) {
    for (const auto& w : weights) widths.push_back(w.rows);
    const bool same_type = std::all_of(weights.begin(), weights.end(),
                                       [&](const Weight& w) { return w.type == weights.front().type; });
    if (!same_type) {
      parts = std::move(weights);
      return;
    }
    Weight stacked = std::move(weights.front());
    std::vector<torch::Tensor> dense{stacked.dense};
    for (size_t i = 1; i < weights.size(); ++i) {
      stacked.blocks.insert(stacked.blocks.end(), weights[i].blocks.begin(), weights[i].blocks.end());
      dense.push_back(weights[i].dense);
      stacked.rows += weights[i].rows;
      stacked.stored_bytes += weights[i].stored_bytes;
    }
    if (stacked.dense.defined()) stacked.dense = torch::cat(dense);
    parts.push_back(std::move(stacked));
  }

  void use_kernel_layout() {
    for (auto& w : parts) w.use_kernel_layout();
  }

  // x [T, cols] -> [T, sum of widths], the projections side by side.
  torch::Tensor apply(const torch::Tensor& x, int threads) const {
    if (parts.size() == 1) return parts.front().apply(x, threads);
    std::vector<torch::Tensor> outs;
    for (const auto& w : parts) outs.push_back(w.apply(x, threads));
    return torch::cat(outs, 1);
  }

  int64_t stored_bytes() const {
    int64_t total = 0;
    for (const auto& w : parts) total += w.stored_bytes;
    return total;
  }
};

struct Layer {
  torch::Tensor attn_norm, ffn_norm, q_bias, k_bias, v_bias;
  std::optional<Projections> qkv, gate_up;
  Weight o, down;
  int64_t stored_bytes = 0;
  std::vector<torch::Tensor> k_cache, v_cache;  // per slot: [kv_heads, context, head_dim]
};

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * weight;
}

int64_t metadata_int(const GgufMetadata& meta, const std::string& key, int64_t fallback, const std::string& where) {
  return meta.find(key) ? static_cast<int64_t>(gguf_uint(meta, key, where)) : fallback;
}

}  // namespace

struct GgufStage::Impl {
  std::string path;
  DecoderConfig config;
  std::string architecture;
  StageIdentity identity;
  int threads = 1;
  int64_t context = 0, slots = 1;
  torch::Device device = torch::kCPU;
  Weight embedding, output;
  torch::Tensor output_norm;
  bool has_embedding = false, has_head = false;
  std::vector<Layer> layers;  // layers[i] is block identity.layer_begin + i
  torch::Tensor inv_freq;     // [head_dim / 2]
  // Per position on the device (the LibTorch path): llama, cos + i sin [context, head_dim / 2]
  // (complex); qwen2, cos and sin [context, 2, head_dim / 2].
  torch::Tensor rope_table;
  torch::Tensor cache_positions;     // 0 .. context-1, long on the device (the graphs' attention mask)
  struct DecodeGraph {
    torch::Tensor input, position, output;  // what the graph reads and writes: [1, hidden], long [1]
    std::unique_ptr<CapturedGraph> graph;
  };
  std::vector<DecodeGraph> decode_graphs;  // per slot; empty without graphs

  size_t layer_offset(int64_t index) const {
    if (index < identity.layer_begin || index >= identity.layer_end)
      throw ConfigError(path + " holds blocks " + std::to_string(identity.layer_begin) + ".." +
                        std::to_string(identity.layer_end - 1) + ", not block " + std::to_string(index));
    return static_cast<size_t>(index - identity.layer_begin);
  }

  // q or k [T, heads, D] rotated at positions position .. position+T-1 (the LibTorch path).
  torch::Tensor rope(const torch::Tensor& x, int64_t position) const {
    return rotate(x, rope_table.slice(0, position, position + x.size(0)));
  }

  // x [T, heads, D] turned by `angles`, rows of rope_table for its T positions.
  torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& angles) const {
    const int64_t T = x.size(0), heads = x.size(1), D = x.size(2);
    if (architecture == "llama") {  // adjacent pairs (2i, 2i+1), the permuted rows' layout: one complex product
      const auto pairs = torch::view_as_complex(x.reshape({T, heads, D / 2, 2}).contiguous());
      return torch::view_as_real(pairs * angles.unsqueeze(1)).reshape({T, heads, D});
    }
    const auto cos = angles.select(1, 0).unsqueeze(1), sin = angles.select(1, 1).unsqueeze(1);
    const auto a = x.slice(2, 0, D / 2), b = x.slice(2, D / 2, D);  // halves, HF's order
    return torch::cat({a * cos - b * sin, a * sin + b * cos}, 2);
  }

  // q, k and v of x [T, hidden] (the LibTorch path): views of the stacked product's columns, plus
  // the biases where the model has them.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> project_qkv(const Layer& layer, const torch::Tensor& x) const {
    const int64_t H = config.num_heads, KV = config.num_kv_heads, D = config.resolved_head_dim();
    const auto qkv = layer.qkv->apply(x, threads);
    auto q = qkv.slice(1, 0, H * D), k = qkv.slice(1, H * D, (H + KV) * D), v = qkv.slice(1, (H + KV) * D);
    if (layer.q_bias.defined()) q = q + layer.q_bias, k = k + layer.k_bias, v = v + layer.v_bias;
    return {q, k, v};
  }

  torch::Tensor attention(Layer& layer, int64_t slot, const torch::Tensor& x, int64_t position) {
    const int64_t T = x.size(0), H = config.num_heads, KV = config.num_kv_heads, D = config.resolved_head_dim();
    auto [q, k, v] = project_qkv(layer, x);
    q = rope(q.reshape({T, H, D}), position);
    k = rope(k.reshape({T, KV, D}), position);
    auto& k_cache = layer.k_cache[static_cast<size_t>(slot)];
    auto& v_cache = layer.v_cache[static_cast<size_t>(slot)];
    k_cache.slice(1, position, position + T).copy_(k.transpose(0, 1));
    v_cache.slice(1, position, position + T).copy_(v.reshape({T, KV, D}).transpose(0, 1));
    const int64_t seen = position + T;
    auto keys = k_cache.slice(1, 0, seen), values = v_cache.slice(1, 0, seen);  // [KV, seen, D]
    if (H != KV) keys = keys.repeat_interleave(H / KV, 0), values = values.repeat_interleave(H / KV, 0);
    auto scores = torch::matmul(q.transpose(0, 1), keys.transpose(1, 2)) / std::sqrt(static_cast<double>(D));
    // Token t (at position position + t) sees positions 0 .. position + t: only several new tokens
    // need a mask.
    if (T > 1) {
      const auto mask = torch::ones({T, seen}, torch::TensorOptions(torch::kBool).device(device)).triu(position + 1);
      scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
    }
    const auto mixed = torch::matmul(torch::softmax(scores, -1), values);  // [H, T, D]
    return layer.o.apply(mixed.transpose(0, 1).reshape({T, H * D}), threads);
  }

  // One token of slot `slot` at the position held in `position` (long [1] on the device), every
  // block of the stage, with no value read back to the host: what a CUDA graph can capture.
  torch::Tensor decode_step(int64_t slot, torch::Tensor h, const torch::Tensor& position) {
    for (auto& layer : layers) {
      const auto x = h + attention_at(layer, slot, rms_norm(h, layer.attn_norm, config.norm_eps), position);
      h = x + mlp(layer, rms_norm(x, layer.ffn_norm, config.norm_eps));
    }
    return h;
  }

  // attention() of one token whose position is device data: the new key and value go in by
  // index_copy_, and the query reads the whole cache with the positions after its own masked.
  torch::Tensor attention_at(Layer& layer, int64_t slot, const torch::Tensor& x, const torch::Tensor& position) {
    const int64_t H = config.num_heads, KV = config.num_kv_heads, D = config.resolved_head_dim();
    auto [q, k, v] = project_qkv(layer, x);
    const auto angles = rope_table.index_select(0, position);
    q = rotate(q.reshape({1, H, D}), angles);
    k = rotate(k.reshape({1, KV, D}), angles);
    auto& k_cache = layer.k_cache[static_cast<size_t>(slot)];
    auto& v_cache = layer.v_cache[static_cast<size_t>(slot)];
    k_cache.index_copy_(1, position, k.transpose(0, 1));
    v_cache.index_copy_(1, position, v.reshape({1, KV, D}).transpose(0, 1));
    // Head h reads kv head h / (H / KV): q as [KV, H / KV, D] meets its kv head's keys.
    auto scores = torch::matmul(q.reshape({KV, H / KV, D}), k_cache.transpose(1, 2)) / std::sqrt(static_cast<double>(D));
    scores = scores.masked_fill(cache_positions.gt(position), -std::numeric_limits<float>::infinity());
    const auto mixed = torch::matmul(torch::softmax(scores, -1), v_cache);  // [KV, H / KV, D]
    return layer.o.apply(mixed.reshape({1, H * D}), threads);
  }

  // Captures slot `slot`'s one-token step, at load, so that no request waits for it (the runs
  // before the capture write the slot's position 0, which its first prompt overwrites).
  void capture_decode(int64_t slot) {
    DecodeGraph& g = decode_graphs[static_cast<size_t>(slot)];
    const auto options = torch::TensorOptions(torch::kFloat).device(device);
    g.input = torch::zeros({1, config.hidden_size}, options);
    g.position = torch::zeros({1}, options.dtype(torch::kLong));
    g.graph = std::make_unique<CapturedGraph>([&] { g.output = decode_step(slot, g.input, g.position); }, device);
  }

  // A slot's one-token step through its captured graph.
  torch::Tensor decode_with_graph(int64_t slot, const torch::Tensor& h, int64_t position) {
    DecodeGraph& g = decode_graphs[static_cast<size_t>(slot)];
    g.input.copy_(h);
    g.position.fill_(position);
    g.graph->replay();
    return g.output.clone();  // the next replay overwrites g.output
  }

  torch::Tensor mlp(const Layer& layer, const torch::Tensor& x) const {
    const auto gate_up = layer.gate_up->apply(x, threads);
    const int64_t I = layer.gate_up->widths[0];
    return layer.down.apply(torch::silu(gate_up.slice(1, 0, I)) * gate_up.slice(1, I), threads);
  }

  // The same block on the CPU as plain loops over the buffers (infer/cpu_ops.h): at these sizes a
  // LibTorch op costs more in dispatch than in arithmetic.
  torch::Tensor run_layer_cpu(Layer& layer, int64_t slot, const torch::Tensor& input, int64_t position) {
    const int64_t T = input.size(0), C = config.hidden_size, H = config.num_heads, KV = config.num_kv_heads,
                  D = config.resolved_head_dim();
    torch::Tensor h = input.contiguous().clone();  // the residual stream, updated in place
    float* hp = h.data_ptr<float>();
    auto x = torch::empty({T, C});
    rms_norm_rows(hp, layer.attn_norm.data_ptr<float>(), T, C, config.norm_eps, x.data_ptr<float>());
    // q, k and v out of the stacked product's rows [T, (H + 2 KV) D].
    const auto qkv = layer.qkv->apply(x, threads);
    auto q = torch::empty({T, H * D}), k = torch::empty({T, KV * D}), v = torch::empty({T, KV * D});
    for (int64_t t = 0; t < T; ++t) {
      const float* row = qkv.data_ptr<float>() + t * (H + 2 * KV) * D;
      std::copy_n(row, H * D, q.data_ptr<float>() + t * H * D);
      std::copy_n(row + H * D, KV * D, k.data_ptr<float>() + t * KV * D);
      std::copy_n(row + (H + KV) * D, KV * D, v.data_ptr<float>() + t * KV * D);
    }
    if (layer.q_bias.defined()) {
      for (int64_t t = 0; t < T; ++t) {
        add_in_place(q.data_ptr<float>() + t * H * D, layer.q_bias.data_ptr<float>(), H * D);
        add_in_place(k.data_ptr<float>() + t * KV * D, layer.k_bias.data_ptr<float>(), KV * D);
        add_in_place(v.data_ptr<float>() + t * KV * D, layer.v_bias.data_ptr<float>(), KV * D);
      }
    }
    const RopeStyle style = architecture == "llama" ? RopeStyle::adjacent_pairs : RopeStyle::halves;
    rope_in_place(q.data_ptr<float>(), T, H, D, position, inv_freq.data_ptr<float>(), style);
    rope_in_place(k.data_ptr<float>(), T, KV, D, position, inv_freq.data_ptr<float>(), style);
    float* k_cache = layer.k_cache[static_cast<size_t>(slot)].data_ptr<float>();
    float* v_cache = layer.v_cache[static_cast<size_t>(slot)].data_ptr<float>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < KV; ++j) {
        const int64_t at = (j * context + position + t) * D, from = (t * KV + j) * D;
        std::copy_n(k.data_ptr<float>() + from, D, k_cache + at);
        std::copy_n(v.data_ptr<float>() + from, D, v_cache + at);
      }
    auto mixed = torch::empty({T, H * D});
    attention_cached(q.data_ptr<float>(), k_cache, v_cache, T, H, KV, D, context, position, mixed.data_ptr<float>(),
                     threads);
    add_in_place(hp, layer.o.apply(mixed, threads).data_ptr<float>(), T * C);
    rms_norm_rows(hp, layer.ffn_norm.data_ptr<float>(), T, C, config.norm_eps, x.data_ptr<float>());
    // Each row [gate | up] of the stacked product becomes one row silu(gate) * up of `hidden`.
    const auto gate_up = layer.gate_up->apply(x, threads);
    const int64_t I = layer.gate_up->widths[0];
    auto hidden = torch::empty({T, I});
    const float* g = gate_up.data_ptr<float>();
    float* out = hidden.data_ptr<float>();
    parallel_for(threads, T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) silu_mul(g + t * 2 * I, g + t * 2 * I + I, I, out + t * I);
    });
    add_in_place(hp, layer.down.apply(hidden, threads).data_ptr<float>(), T * C);
    return h;
  }

  void check_slot(int64_t slot, int64_t position, int64_t tokens) const {
    if (slot < 0 || slot >= slots)
      throw ConfigError("slot " + std::to_string(slot) + " is outside the stage's " + std::to_string(slots) + " slots");
    if (position < 0 || position + tokens > context)
      throw DataError("the sequence would reach " + std::to_string(position + tokens) +
                      " tokens, more than the context of " + std::to_string(context) +
                      ": shorten the prompt or the generation");
  }
};

GgufStage::GgufStage(const std::string& path, const StageOptions& options) : impl_(std::make_unique<Impl>()) {
  GgufFile file = read_gguf(path);
  Impl& m = *impl_;
  m.path = path;
  m.device = options.device;
  m.threads = std::max(1, options.threads);
  m.slots = options.slots;
  if (m.slots < 1) throw ConfigError("a stage needs at least one slot, not " + std::to_string(m.slots));
  std::set<std::string> names;
  std::map<std::string, GgufTensor*> tensors;
  for (auto& t : file.tensors) names.insert(t.name), tensors[t.name] = &t;
  auto take = [&](const std::string& name) -> GgufTensor& {
    const auto it = tensors.find(name);
    if (it == tensors.end()) throw FormatError(path + ": tensor " + name + " is missing");
    return *it->second;
  };

  const GgufMetadata& meta = file.metadata;
  m.architecture = gguf_string(meta, "general.architecture", path);
  m.has_embedding = names.count("token_embd.weight") > 0;
  m.has_head = names.count("output_norm.weight") > 0;
  int64_t vocab = options.vocab_size;
  if (m.has_embedding) vocab = static_cast<int64_t>(take("token_embd.weight").dims[1]);
  else if (names.count("output.weight")) vocab = static_cast<int64_t>(take("output.weight").dims[1]);
  if (vocab <= 0)
    throw FormatError(path + " holds neither the embedding nor the head, so its vocabulary size is unknown: load it "
                      "through the export's manifest.json");

  StageIdentity& id = m.identity;
  if (meta.find("fedsplit.export_id")) id.export_id = gguf_string(meta, "fedsplit.export_id", path);
  id.stage = metadata_int(meta, "fedsplit.stage", 0, path);
  id.stage_count = metadata_int(meta, "fedsplit.stage_count", 1, path);
  // Bias flags are read from blk.0 by config_from_gguf; a later stage's first block answers for it.
  const int64_t block_count = metadata_int(meta, m.architecture + ".block_count", 0, path);
  id.layer_begin = metadata_int(meta, "fedsplit.layer_begin", 0, path);
  id.layer_end = metadata_int(meta, "fedsplit.layer_end", block_count, path);
  const std::string first_block = "blk." + std::to_string(id.layer_begin) + ".";
  for (const char* part : {"attn_q.bias", "attn_output.bias", "ffn_up.bias"})
    if (names.count(first_block + part)) names.insert(std::string("blk.0.") + part);
  m.config = config_from_gguf(meta, names, vocab, path);
  if (id.layer_begin >= id.layer_end || id.layer_end > m.config.num_layers || id.stage >= id.stage_count)
    throw FormatError(path + ": fedsplit.stage " + std::to_string(id.stage) + " of " + std::to_string(id.stage_count) +
                      " with blocks [" + std::to_string(id.layer_begin) + ", " + std::to_string(id.layer_end) +
                      ") does not fit a model of " + std::to_string(m.config.num_layers) + " blocks");
  if (m.has_embedding != (id.stage == 0) || m.has_head != (id.stage == id.stage_count - 1))
    throw FormatError(path + ": stage " + std::to_string(id.stage) + " of " + std::to_string(id.stage_count) +
                      (m.has_embedding ? " holds" : " lacks") + " token_embd.weight and " +
                      (m.has_head ? "holds" : "lacks") + " output_norm.weight: the file is damaged or mislabelled");
  if (m.config.rope_scaling != RopeScaling::none)
    throw ConfigError(path + ": RoPE scaling is not supported by the engine yet");
  if (m.config.attn_out_bias || m.config.mlp_bias)
    throw ConfigError(path + ": output-projection and MLP biases are not supported by the engine");
  m.context = options.context > 0 ? options.context : m.config.max_position;

  if (m.has_embedding) m.embedding = weight_of(take("token_embd.weight"), m.device, path);
  if (m.has_head) {
    m.output_norm = weight_of(take("output_norm.weight"), m.device, path).dense.reshape({-1});
    // A one-stage file of a tied model has no output.weight: the head reads the embedding.
    if (names.count("output.weight")) m.output = weight_of(take("output.weight"), m.device, path);
    else if (!m.has_embedding) throw FormatError(path + ": tensor output.weight is missing");
  }
  m.embedding.use_kernel_layout();
  m.output.use_kernel_layout();
  const int64_t D = m.config.resolved_head_dim();
  for (int64_t i = id.layer_begin; i < id.layer_end; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    auto vector = [&](const std::string& name) { return weight_of(take(b + name), m.device, path).dense.reshape({-1}); };
    Layer layer;
    layer.attn_norm = vector("attn_norm.weight");
    layer.ffn_norm = vector("ffn_norm.weight");
    auto matrix = [&](const char* name) { return weight_of(take(b + name), m.device, path); };
    layer.qkv.emplace(std::vector<Weight>{matrix("attn_q.weight"), matrix("attn_k.weight"), matrix("attn_v.weight")});
    layer.o = matrix("attn_output.weight");
    layer.gate_up.emplace(std::vector<Weight>{matrix("ffn_gate.weight"), matrix("ffn_up.weight")});
    layer.down = matrix("ffn_down.weight");
    layer.qkv->use_kernel_layout();
    layer.o.use_kernel_layout();
    layer.gate_up->use_kernel_layout();
    layer.down.use_kernel_layout();
    layer.stored_bytes =
        layer.qkv->stored_bytes() + layer.o.stored_bytes + layer.gate_up->stored_bytes() + layer.down.stored_bytes;
    if (m.config.attn_qkv_bias) {
      layer.q_bias = vector("attn_q.bias");
      layer.k_bias = vector("attn_k.bias");
      layer.v_bias = vector("attn_v.bias");
    }
    for (int64_t s = 0; s < m.slots; ++s) {
      const auto cache_options = torch::TensorOptions(torch::kFloat).device(m.device);
      layer.k_cache.push_back(torch::zeros({m.config.num_kv_heads, m.context, D}, cache_options));
      layer.v_cache.push_back(torch::zeros({m.config.num_kv_heads, m.context, D}, cache_options));
    }
    m.layers.push_back(std::move(layer));
  }
  m.inv_freq = torch::pow(m.config.rope_theta, -torch::arange(0, D, 2, torch::kDouble) / static_cast<double>(D))
                   .to(torch::kFloat);
  if (!m.device.is_cpu()) {  // angles as the CPU path computes them: float(position) * inv_freq
    const auto angles = torch::arange(0, m.context, torch::kFloat).unsqueeze(1) * m.inv_freq;
    m.rope_table = (m.architecture == "llama" ? torch::complex(angles.cos(), angles.sin())
                                               : torch::stack({angles.cos(), angles.sin()}, 1))
                       .to(m.device);
    if (options.cuda_graphs && m.device.is_cuda() && CapturedGraph::available()) {
      m.cache_positions = torch::arange(m.context, torch::TensorOptions(torch::kLong).device(m.device));
      m.decode_graphs.resize(static_cast<size_t>(m.slots));
      torch::NoGradGuard no_grad;
      for (int64_t slot = 0; slot < m.slots; ++slot) m.capture_decode(slot);
    }
  }
}

GgufStage::~GgufStage() = default;

torch::Tensor GgufStage::embed(const std::vector<int64_t>& tokens) const {
  const Impl& m = *impl_;
  if (!m.has_embedding) throw ConfigError(m.path + " is not the first stage: it has no token embedding");
  for (const int64_t id : tokens)
    if (id < 0 || id >= m.config.vocab_size)
      throw DataError("token id " + std::to_string(id) + " is outside the vocabulary of " +
                      std::to_string(m.config.vocab_size));
  return m.embedding.rows_of(tokens);
}

torch::Tensor GgufStage::run_layer(int64_t layer_index, int64_t slot, const torch::Tensor& h, int64_t position) {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  m.check_slot(slot, position, h.size(0));
  Layer& layer = m.layers[m.layer_offset(layer_index)];
  if (m.device.is_cpu()) return m.run_layer_cpu(layer, slot, h, position);
  auto x = h + m.attention(layer, slot, rms_norm(h, layer.attn_norm, m.config.norm_eps), position);
  return x + m.mlp(layer, rms_norm(x, layer.ffn_norm, m.config.norm_eps));
}

torch::Tensor GgufStage::run_layers(int64_t slot, torch::Tensor h, int64_t position) {
  Impl& m = *impl_;
  if (!m.decode_graphs.empty() && h.size(0) == 1) {
    torch::NoGradGuard no_grad;
    m.check_slot(slot, position, 1);
    return m.decode_with_graph(slot, h, position);
  }
  for (int64_t i = impl_->identity.layer_begin; i < impl_->identity.layer_end; ++i) h = run_layer(i, slot, h, position);
  return h;
}

torch::Tensor GgufStage::head(const torch::Tensor& h) const {
  const Impl& m = *impl_;
  if (!m.has_head) throw ConfigError(m.path + " is not the last stage: it has no head");
  torch::NoGradGuard no_grad;
  torch::Tensor normed;
  if (m.device.is_cpu()) {
    const auto input = h.contiguous();
    normed = torch::empty_like(input);
    rms_norm_rows(input.data_ptr<float>(), m.output_norm.data_ptr<float>(), input.size(0), input.size(1),
                  m.config.norm_eps, normed.data_ptr<float>());
  } else {
    normed = rms_norm(h, m.output_norm, m.config.norm_eps);
  }
  return (m.output.rows > 0 ? m.output : m.embedding).apply(normed, m.threads);
}

const StageIdentity& GgufStage::identity() const { return impl_->identity; }
bool GgufStage::first() const { return impl_->has_embedding; }
bool GgufStage::last() const { return impl_->has_head; }
int64_t GgufStage::layer_begin() const { return impl_->identity.layer_begin; }
int64_t GgufStage::layer_end() const { return impl_->identity.layer_end; }
int64_t GgufStage::context() const { return impl_->context; }
int64_t GgufStage::slots() const { return impl_->slots; }
torch::Device GgufStage::device() const { return impl_->device; }
const DecoderConfig& GgufStage::config() const { return impl_->config; }
const std::string& GgufStage::architecture() const { return impl_->architecture; }

int64_t GgufStage::layer_weight_bytes(int64_t layer) const {
  const Layer& l = impl_->layers[impl_->layer_offset(layer)];
  return l.stored_bytes + (l.attn_norm.numel() + l.ffn_norm.numel()) * 4;
}
int64_t GgufStage::embed_weight_bytes() const { return impl_->has_embedding ? impl_->embedding.stored_bytes : 0; }
int64_t GgufStage::head_weight_bytes() const {
  const Impl& m = *impl_;
  return m.has_head ? m.output_norm.numel() * 4 + m.output.stored_bytes : 0;
}
int64_t GgufStage::kv_bytes_per_token() const {
  return 2 * impl_->config.num_kv_heads * impl_->config.resolved_head_dim() * 4;
}

}  // namespace fedsplit
