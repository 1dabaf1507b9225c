// Training throughput of a GPT-2-shaped Decoder on random tokens: forward, backward, clip, AdamW.
// Prints one JSON line; bench/run compares it with bench/train_throughput.py (PyTorch eager).
// With --lora R only rank-R LoRA adapters on the attention projections train (bench/peft); with
// --base-bits 8|4 as well, the frozen projections are held quantized (groups of 64).
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "bench/kernel_profile.h"
#include "core/model/decoder.h"
#include "core/util/compat.h"
#include "core/util/memory.h"
#include "peft/lora.h"
#include "peft/quantized.h"
#include "train/adamw.h"

using namespace fedsplit;

int main(int argc, char** argv) {
  int64_t layers = 6, d = 256, heads = 8, T = 256, B = 8, vocab = 8192, steps = 10, warmup = 2, threads = 2, lora = 0, base_bits = 0;
  std::string device_name = "cpu";
  bool bf16 = false;
  bool phases = false;
  std::string profile;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::string v = argv[i + 1];
    if (k == "--layers") layers = std::stoll(v);
    else if (k == "--d") d = std::stoll(v);
    else if (k == "--heads") heads = std::stoll(v);
    else if (k == "--T") T = std::stoll(v);
    else if (k == "--B") B = std::stoll(v);
    else if (k == "--vocab") vocab = std::stoll(v);
    else if (k == "--steps") steps = std::stoll(v);
    else if (k == "--threads") threads = std::stoll(v);
    else if (k == "--device") device_name = v;
    else if (k == "--bf16") bf16 = v == "1";
    else if (k == "--phases") phases = v == "1";
    else if (k == "--profile") profile = v;
    else if (k == "--lora") lora = std::stoll(v);
    else if (k == "--base-bits") base_bits = std::stoll(v);
    else {
      std::cerr << "unknown flag " << k << "\n";
      return 2;
    }
  }
  torch::set_num_threads(static_cast<int>(threads));
  const torch::Device device(device_name);
  const DecoderConfig c = family_config(ModelFamily::gpt2, vocab, d, layers, heads, heads, 4 * d, T);
  Decoder model(c);
  const int64_t parameters = count_parameters(model);  // before quantization turns weights into buffers
  if (lora > 0) {
    quantize_frozen_base(model, BaseQuantOptions{static_cast<int>(base_bits), 64});
    LoraOptions o;
    o.r = lora;
    o.alpha = 2.0 * lora;
    o.target_modules = {"attn.c_attn", "attn.c_proj"};
    apply_lora(model, o, 0);
  }
  model->to(device);
  model->train();
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& p : model->named_parameters()) params.emplace_back(p.key(), p.value());
  AdamW opt(params, AdamWOptions{});
  // Drawn on the device, as the PyTorch peer does: no host-to-device copy in the timed loop.
  auto gen_ids = [&] { return torch::randint(0, vocab, {B, T + 1}, torch::TensorOptions().dtype(torch::kLong).device(device)); };
  // With --phases 1 each phase is timed (synchronising the device between phases).
  std::map<std::string, double> phase_ms;
  auto mark = [&](const char* name, std::chrono::steady_clock::time_point& t) {
    if (!phases) return;
    if (device.is_cuda()) torch::cuda::synchronize();
    const auto now = std::chrono::steady_clock::now();
    phase_ms[name] += std::chrono::duration<double, std::milli>(now - t).count();
    t = now;
  };
  auto step = [&] {
    auto t = std::chrono::steady_clock::now();
    auto ids = gen_ids();
    opt.zero_grad();
    torch::Tensor loss;
    {
      compat::AutocastBF16 autocast(bf16 && device.is_cuda());
      auto logits = model->forward(ids.narrow(1, 0, T));
      mark("forward", t);
      loss = torch::nn::functional::cross_entropy(logits.reshape({-1, vocab}).to(torch::kFloat),
                                                  ids.narrow(1, 1, T).reshape({-1}));
      mark("loss", t);
    }
    loss.backward();
    mark("backward", t);
    clip_grad_norm(opt.params(), 1.0);
    mark("clip", t);
    opt.step(1e-4);
    mark("optimizer", t);
    return loss;
  };
  for (int64_t i = 0; i < warmup; ++i) step();
  phase_ms.clear();  // phases are timed over the measured steps only
  if (!profile.empty()) {
    // A kernel trace of 3 steps, for comparing with the peer's (bench/compare_traces.py).
    KernelProfile trace(profile);
    for (int i = 0; i < 3; ++i) step();
    if (device.is_cuda()) torch::cuda::synchronize();
  }
  if (device.is_cuda()) torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  torch::Tensor loss;
  for (int64_t i = 0; i < steps; ++i) loss = step();
  loss.item<double>();
  if (device.is_cuda()) torch::cuda::synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t trainable = 0;
  for (const auto& p : opt.params()) trainable += p.value.numel();
  nlohmann::json out = {{"impl", "fedsplit"}, {"method", lora == 0 ? "full" : base_bits ? "lora-int" + std::to_string(base_bits) : "lora"}, {"tokens_per_s", B * T * steps / secs},
                        {"step_ms", 1e3 * secs / steps}, {"params", parameters}, {"trainable", trainable},
                        {"peak_host_bytes", peak_host_memory_bytes()}, {"peak_cuda_bytes", peak_cuda_memory_bytes()},
                        {"threads", threads}, {"device", device_name}, {"torch", TORCH_VERSION}};
  if (phases) {
    for (auto& [name, ms] : phase_ms) ms /= static_cast<double>(steps);
    out["phase_ms"] = phase_ms;
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
