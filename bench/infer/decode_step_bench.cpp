// Times the engine's per-token work at the pretrain-base sizes (hidden 384, 6 heads of 64, 6
// layers, intermediate 1024, vocab 8192) with random Q8_0/Q4_0 weights: one decode step (matvecs,
// cpu_ops, attention over a cache of --context positions) and one prompt batch, on 1 and 2 threads.
// Torch-free; built as build/bench/bench_decode_step_bench:
//   build/bench/bench_decode_step_bench [prompt tokens = 64] [decode steps = 128]
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <random>
#include <vector>

#include "compress/gguf_quant.h"
#include "infer/cpu_ops.h"
#include "infer/quant_kernels.h"

using namespace fedsplit;

namespace {

constexpr int64_t kHidden = 384, kHeads = 6, kHeadDim = 64, kLayers = 6, kInter = 1024, kVocab = 8192;

struct Weights {
  std::vector<uint8_t> bytes;
  QuantMatrix m;
};

Weights make(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = d(rng);
  // In the layout the engine gives the matrix at load (infer/gguf_stage.cpp).
  const QuantLayout layout = preferred_layout(type, rows, cols);
  const auto plain = quantize_rows(type, w.data(), rows, cols);
  Weights out{to_layout(type, plain.data(), rows, cols, layout), {}};
  out.m = QuantMatrix{type, out.bytes.data(), rows, cols, layout};
  return out;
}

struct Layer {
  Weights q, k, v, o, gate, up, down;
  std::vector<float> k_cache, v_cache;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// T tokens at position `pos` through all layers and the head; returns nothing useful, only time.
void forward(std::vector<Layer>& layers, const Weights& head, int64_t T, int64_t pos, int64_t stride,
             int threads, std::vector<float>& x) {
  std::vector<float> norm(T * kHidden), q(T * kHidden), k(T * kHidden), v(T * kHidden), att(T * kHidden),
      proj(T * kHidden), gate(T * kInter), up(T * kInter), logits(kVocab);
  std::vector<float> ones(kInter, 1.0f), inv_freq(kHeadDim / 2);
  for (int64_t i = 0; i < kHeadDim / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / kHeadDim);
  for (auto& L : layers) {
    rms_norm_rows(x.data(), ones.data(), T, kHidden, 1e-5, norm.data());
    quant_matmul(L.q.m, norm.data(), T, q.data(), threads);
    quant_matmul(L.k.m, norm.data(), T, k.data(), threads);
    quant_matmul(L.v.m, norm.data(), T, v.data(), threads);
    rope_in_place(q.data(), T, kHeads, kHeadDim, pos, inv_freq.data(), RopeStyle::adjacent_pairs);
    rope_in_place(k.data(), T, kHeads, kHeadDim, pos, inv_freq.data(), RopeStyle::adjacent_pairs);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < kHeads; ++h)
        for (int64_t d = 0; d < kHeadDim; ++d) {
          L.k_cache[(h * stride + pos + t) * kHeadDim + d] = k[(t * kHeads + h) * kHeadDim + d];
          L.v_cache[(h * stride + pos + t) * kHeadDim + d] = v[(t * kHeads + h) * kHeadDim + d];
        }
    attention_cached(q.data(), L.k_cache.data(), L.v_cache.data(), T, kHeads, kHeads, kHeadDim, stride, pos,
                     att.data(), threads);
    quant_matmul(L.o.m, att.data(), T, proj.data(), threads);
    add_in_place(x.data(), proj.data(), T * kHidden);
    rms_norm_rows(x.data(), ones.data(), T, kHidden, 1e-5, norm.data());
    quant_matmul(L.gate.m, norm.data(), T, gate.data(), threads);
    quant_matmul(L.up.m, norm.data(), T, up.data(), threads);
    silu_mul(gate.data(), up.data(), T * kInter, gate.data());
    quant_matmul(L.down.m, gate.data(), T, proj.data(), threads);
    add_in_place(x.data(), proj.data(), T * kHidden);
  }
  rms_norm_rows(x.data() + (T - 1) * kHidden, ones.data(), 1, kHidden, 1e-5, norm.data());
  quant_matvec(head.m, norm.data(), logits.data(), threads);
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t prompt = argc > 1 ? std::atoll(argv[1]) : 64;
  const int64_t decode = argc > 2 ? std::atoll(argv[2]) : 128;
  const int64_t stride = prompt + decode;
  std::mt19937 rng(1);
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    std::vector<Layer> layers(kLayers);
    for (auto& L : layers) {
      L.q = make(type, kHidden, kHidden, rng);
      L.k = make(type, kHidden, kHidden, rng);
      L.v = make(type, kHidden, kHidden, rng);
      L.o = make(type, kHidden, kHidden, rng);
      L.gate = make(type, kInter, kHidden, rng);
      L.up = make(type, kInter, kHidden, rng);
      L.down = make(type, kHidden, kInter, rng);
      L.k_cache.assign(kHeads * stride * kHeadDim, 0.0f);
      L.v_cache.assign(kHeads * stride * kHeadDim, 0.0f);
    }
    const Weights head = make(type, kVocab, kHidden, rng);
    for (int threads : {1, 2}) {
      double best_prompt = 1e9, best_decode = 1e9;
      for (int rep = 0; rep < 3; ++rep) {
        std::normal_distribution<float> d(0.0f, 1.0f);
        std::vector<float> x(prompt * kHidden);
        for (auto& v : x) v = d(rng);
        double t0 = now();
        forward(layers, head, prompt, 0, stride, threads, x);
        double t1 = now();
        std::vector<float> xt(kHidden);
        for (int64_t i = 0; i < decode; ++i) {
          for (auto& v : xt) v = d(rng);
          forward(layers, head, 1, prompt + i, stride, threads, xt);
        }
        double t2 = now();
        best_prompt = std::min(best_prompt, t1 - t0);
        best_decode = std::min(best_decode, t2 - t1);
      }
      std::printf("%s %s threads=%d: prompt %lld tok at %.0f tok/s, decode %lld tok at %.0f tok/s\n",
                  ggml_type_name(static_cast<uint32_t>(type)).c_str(), quant_kernel_name(), threads,
                  static_cast<long long>(prompt), prompt / best_prompt, static_cast<long long>(decode),
                  decode / best_decode);
    }
  }
}
