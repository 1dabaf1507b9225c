// labels: unit
// AdamW against LibTorch's own torch::optim::AdamW, gradient clipping against its definition, and the
// warmup + cosine schedule against its formula.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "train/adamw.h"
#include "train/options.h"

using namespace fedsplit;

TEST(AdamW, MatchesLibTorchAdamWWithDecayGroups) {
  torch::manual_seed(3);
  auto w = torch::randn({4, 3}, torch::requires_grad());  // a matrix: decays
  auto b = torch::randn({3}, torch::requires_grad());     // a bias: does not
  auto w_ref = w.detach().clone().requires_grad_();
  auto b_ref = b.detach().clone().requires_grad_();
  AdamW ours({{"w", w}, {"b", b}}, AdamWOptions{0.9, 0.95, 1e-8, 0.1});
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{w_ref},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
  groups.emplace_back(std::vector<torch::Tensor>{b_ref},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW reference(groups, torch::optim::AdamWOptions(0.01));
  auto x = torch::randn({5, 4});
  for (int step = 0; step < 5; ++step) {
    ours.zero_grad();
    reference.zero_grad();
    (torch::matmul(x, w) + b).pow(2).sum().backward();
    (torch::matmul(x, w_ref) + b_ref).pow(2).sum().backward();
    ours.step(0.01);
    reference.step();
  }
  EXPECT_EQ(ours.steps_taken(), 5);
  EXPECT_LE((w - w_ref).abs().max().item<double>(), 1e-6);  // fp32 rounding of the same update
  EXPECT_LE((b - b_ref).abs().max().item<double>(), 1e-6);
}

TEST(ClipGradNorm, ScalesToMaxNormOnlyWhenAbove) {
  auto a = torch::zeros({2}, torch::requires_grad());
  auto c = torch::zeros({1}, torch::requires_grad());
  AdamW opt({{"a", a}, {"c", c}}, AdamWOptions{});
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  c.mutable_grad() = torch::tensor({4.0f});
  EXPECT_FLOAT_EQ(clip_grad_norm(opt.params(), 10.0).item<float>(), 5.0f);  // below: untouched
  EXPECT_FLOAT_EQ(a.grad()[0].item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(clip_grad_norm(opt.params(), 1.0).item<float>(), 5.0f);
  EXPECT_NEAR(a.grad()[0].item<float>(), 0.6f, 1e-6);
  EXPECT_NEAR(c.grad()[0].item<float>(), 0.8f, 1e-6);
}

TEST(Schedule, WarmupThenCosineToFloor) {
  TrainOptions o;
  o.lr = 1.0;
  o.steps = 110;
  o.warmup_steps = 10;
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(learning_rate(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10), 1.0);
  EXPECT_NEAR(learning_rate(o, 60), 0.1 + 0.9 * 0.5, 1e-12);  // halfway through the cosine
  EXPECT_NEAR(learning_rate(o, 110), 0.1, 1e-12);
  for (int64_t s = 11; s < 110; ++s) EXPECT_LE(learning_rate(o, s), learning_rate(o, s - 1));
}
