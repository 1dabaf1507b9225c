// labels: gpu
// On a CUDA device: the fixtures' logits match transformers' in fp32, and the training loop's
// pieces (bf16 autocast, AdamW, clipping) learn a fixed batch. Skips cleanly without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/io/safetensors.h"
#include "core/model/hf.h"
#include "core/util/compat.h"
#include "tests/test_support.h"
#include "train/adamw.h"

using namespace fedsplit;
using fedsplit::testing::fixtures;

namespace {
bool have_cuda() { return torch::cuda::is_available(); }
}  // namespace

TEST(Gpu, FixtureLogitsMatchOnCuda) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  // TF32 would change fp32 matmuls at the 1e-3 level; the reference is strict fp32.
  at::globalContext().setAllowTF32CuBLAS(false);
  for (const char* name : {"llama", "qwen2", "gpt2"}) {
    const std::string dir = fixtures() + "/hf-tiny/" + name;
    Decoder model = load_hf_model(dir);
    model->to(torch::kCUDA);
    const auto ref = load_safetensors(dir + "/reference.safetensors");
    torch::NoGradGuard no_grad;
    auto logits = model->forward(ref.at("input_ids").to(torch::kCUDA)).cpu();
    EXPECT_LE((logits - ref.at("logits")).abs().max().item<double>(), 1e-4) << name;  // fp32 tolerance
  }
}

TEST(Gpu, Bf16TrainingLearnsAFixedBatch) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  Decoder model = load_hf_model(fixtures() + "/hf-tiny/llama");
  model->to(torch::kCUDA);
  model->train();
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (const auto& p : model->named_parameters()) params.emplace_back(p.key(), p.value());
  AdamW opt(params, AdamWOptions{0.9, 0.95, 1e-8, 0.0});
  torch::manual_seed(0);
  auto ids = torch::randint(0, 512, {4, 33}, torch::kLong).to(torch::kCUDA);
  auto loss_of = [&] {
    compat::AutocastBF16 autocast(true);
    auto logits = model->forward(ids.narrow(1, 0, 32));
    return torch::nn::functional::cross_entropy(logits.reshape({-1, 512}).to(torch::kFloat),
                                                ids.narrow(1, 1, 32).reshape({-1}));
  };
  const double first = loss_of().item<double>();
  for (int i = 0; i < 40; ++i) {
    opt.zero_grad();
    loss_of().backward();
    clip_grad_norm(opt.params(), 1.0);
    opt.step(3e-3);
  }
  const double last = loss_of().item<double>();
  // Memorising 128 random tokens: the loss must fall far below its start (~ln 512 = 6.2).
  EXPECT_LT(last, first * 0.5) << first << " -> " << last;
}

TEST(Gpu, FusedAdamWEqualsPerTensorUpdate) {
  if (!have_cuda()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(1);
  auto w_cpu = torch::randn({64, 32}, torch::requires_grad());
  auto b_cpu = torch::randn({32}, torch::requires_grad());
  auto w_gpu = w_cpu.detach().to(torch::kCUDA).requires_grad_();
  auto b_gpu = b_cpu.detach().to(torch::kCUDA).requires_grad_();
  AdamW cpu({{"w", w_cpu}, {"b", b_cpu}}, AdamWOptions{});
  AdamW gpu({{"w", w_gpu}, {"b", b_gpu}}, AdamWOptions{});
  for (int step = 0; step < 4; ++step) {
    auto g_w = torch::randn({64, 32});
    auto g_b = torch::randn({32});
    w_cpu.mutable_grad() = g_w.clone();
    b_cpu.mutable_grad() = g_b.clone();
    w_gpu.mutable_grad() = g_w.to(torch::kCUDA);
    b_gpu.mutable_grad() = g_b.to(torch::kCUDA);
    cpu.step(1e-2);
    gpu.step(1e-2);
  }
  EXPECT_LE((w_gpu.cpu() - w_cpu).abs().max().item<double>(), 1e-5);  // fp32, different kernels
  EXPECT_LE((b_gpu.cpu() - b_cpu).abs().max().item<double>(), 1e-5);
}
