// labels: unit
// Quantization-aware training's pieces (compress/qat.h): a QAT projection computes x W_q^T + b with
// W_q = rtn_quantize(W) (1e-6); its weight gradient is the straight-through one (that of the plain
// linear at W_q, 1e-6); per-token activation quantization stays within half a step and keeps each
// token's absmax; a finalized model saved with its record is on the recorded grid (codes_on_grid)
// with the record's bits, group size and method.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/calibration.h"
#include "compress/qat.h"
#include "compress/quant_record.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_error;
using fedsplit::testing::TempDir;

Projection random_projection(int64_t in, int64_t out, bool bias, uint64_t seed) {
  torch::manual_seed(seed);
  Projection p(in, out, bias);
  torch::NoGradGuard no_grad;
  p->weight.copy_(torch::randn({out, in}) * 0.1);
  if (bias) p->bias.copy_(torch::randn({out}) * 0.1);
  return p;
}

Decoder tiny_model() {
  DecoderConfig c = family_config(ModelFamily::llama, 50, 64, 2, 4, 2, 0, 32);
  Decoder model(c, /*init=*/false);
  model->init_weights(3);
  return model;
}

TEST(Qat, ForwardIsTheInputTimesTheRtnWeight) {
  for (int bits : {4, 8}) {
    for (int64_t group : {0, 32}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group));
      const auto plain = random_projection(64, 24, true, 1);
      QatProjection qat(*plain, WeightQuantOptions{bits, group}, 0);
      const auto x = torch::randn({3, 5, 64});
      const auto wq = rtn_quantize(plain->weight.detach(), {bits, group}).weight;
      const auto want = torch::matmul(x, wq.t()) + plain->bias.detach();
      EXPECT_TRUE(torch::allclose(qat->forward(x), want, 0, 1e-6));
      // Its own copy of the weight, which trains.
      EXPECT_TRUE(qat->weight.requires_grad());
      EXPECT_NE(qat->weight.data_ptr(), plain->weight.data_ptr());
    }
  }
}

TEST(Qat, WeightGradientIsStraightThrough) {
  const auto plain = random_projection(32, 16, false, 2);
  QatProjection qat(*plain, WeightQuantOptions{4, 32}, 0);
  const auto x = torch::randn({4, 32});
  const auto upstream = torch::randn({4, 16});
  (qat->forward(x) * upstream).sum().backward();
  // The gradient the plain linear would give at the quantized weight: upstream^T x.
  auto wq = rtn_quantize(plain->weight.detach(), {4, 32}).weight.requires_grad_(true);
  (torch::linear(x, wq) * upstream).sum().backward();
  EXPECT_TRUE(torch::allclose(qat->weight.grad(), wq.grad(), 0, 1e-6));
  EXPECT_TRUE(torch::allclose(qat->weight.grad(), torch::matmul(upstream.t(), x), 0, 1e-5));
}

TEST(Qat, ActivationQuantizationBoundsAndGradient) {
  torch::manual_seed(4);
  auto x = (torch::randn({6, 40}) * torch::linspace(0.01, 10, 6).unsqueeze(1)).requires_grad_(true);
  const auto q = fake_quantize_activation(x, 8);
  const auto scale = x.detach().abs().amax(-1, true) / 127.0;
  // Within half a step of each token's own scale; each token's largest magnitude is exact; at most
  // 255 levels per token.
  EXPECT_TRUE(((q.detach() - x.detach()).abs() <= scale * (0.5 + 1e-5)).all().item<bool>());
  EXPECT_TRUE(torch::allclose(q.detach().abs().amax(-1), x.detach().abs().amax(-1), 1e-6, 0));
  for (int64_t r = 0; r < 6; ++r) EXPECT_LE(std::get<0>(torch::_unique(q.detach()[r])).numel(), 255);
  // Straight through.
  const auto upstream = torch::randn({6, 40});
  (q * upstream).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), upstream));
  // An all-zero token stays zero.
  EXPECT_TRUE(torch::equal(fake_quantize_activation(torch::zeros({2, 8}), 8), torch::zeros({2, 8})));
  // A projection with activation_bits = 8 multiplies the quantized input.
  const auto plain = random_projection(40, 8, true, 5);
  QatProjection qat(*plain, WeightQuantOptions{8, 0}, 8);
  const auto want = torch::linear(q.detach(), rtn_quantize(plain->weight.detach(), {8, 0}).weight, plain->bias.detach());
  EXPECT_TRUE(torch::allclose(qat->forward(x.detach()), want, 0, 1e-5));
}

// Per output channel: the record says group_size 0 with one scale per row, and the saved weights
// are on that grid.
TEST(Qat, PerChannelRecordHasOneScalePerRow) {
  TempDir tmp("qat_channel");
  Decoder model = tiny_model();
  QatOptions o;
  o.bits = 8;
  o.group_size = 0;
  apply_qat(model, o);
  const QuantRecord record = finalize_quantized(model, o, "qat");
  EXPECT_EQ(record.group_size, 0);
  save_hf_model(model, tmp.path());
  save_quant_record(tmp.path(), record);
  const auto back = load_quant_record(tmp.path());
  ASSERT_TRUE(back.has_value());
  const auto params = load_hf_model(tmp.path())->named_parameters();
  for (const auto& [name, scales] : back->scales) {
    EXPECT_EQ(scales.size(1), 1) << name;
    EXPECT_NO_THROW(codes_on_grid(name, params[name], scales, 8)) << name;
  }
}

TEST(Qat, FinalizedModelIsOnItsRecordedGrid) {
  TempDir tmp("qat_unit");
  Decoder model = tiny_model();
  QatOptions o;
  o.bits = 4;
  o.group_size = 32;
  apply_qat(model, o);
  // 2 layers x (q, k, v, o, gate, up, down); lm_head stays a plain projection.
  const auto paths = all_block_projection_paths(model);
  ASSERT_EQ(paths.size(), 14u);
  int64_t qat_modules = 0;
  for (const auto& item : model->named_modules("", false))
    if (dynamic_cast<QatProjectionImpl*>(item.value().get())) ++qat_modules;
  EXPECT_EQ(qat_modules, 14);
  // Train a step's worth of change, then finalize.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.01);
  }
  const QuantRecord record = finalize_quantized(model, o, "qat");
  EXPECT_EQ(record.bits, 4);
  EXPECT_EQ(record.group_size, 32);
  EXPECT_EQ(record.method, "qat");
  ASSERT_EQ(record.scales.size(), 14u);
  EXPECT_EQ(record.scales.count("layers.0.self_attn.q_proj.weight"), 1u);
  EXPECT_EQ(record.scales.count("lm_head.weight"), 0u);
  save_hf_model(model, tmp.path());
  save_quant_record(tmp.path(), record);

  const Decoder loaded = load_hf_model(tmp.path());
  const auto back = load_quant_record(tmp.path());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->bits, 4);
  EXPECT_EQ(back->group_size, 32);
  EXPECT_EQ(back->method, "qat");
  const auto params = loaded->named_parameters();
  for (const auto& [name, scales] : back->scales) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(params.contains(name));
    EXPECT_EQ(scales.size(1), params[name].size(1) / 32);
    const auto codes = codes_on_grid(name, params[name], scales, 4);
    EXPECT_LE(codes.abs().max().item<int>(), 7);
  }
}

TEST(Qat, OptionErrorsNameTheKey) {
  Decoder model = tiny_model();
  QatOptions o;
  o.group_size = 48;  // does not divide 64
  expect_error<ConfigError>([&] { apply_qat(model, o); }, {"qat.group_size = 48", "layers.0"});
  o.group_size = 32;
  o.bits = 6;
  expect_error<ConfigError>([&] { check_qat_options(model, o); }, {"qat.bits"});
  o.bits = 8;
  o.activation_bits = 4;
  expect_error<ConfigError>([&] { check_qat_options(model, o); }, {"qat.activation_bits"});
}

}  // namespace
}  // namespace fedsplit
