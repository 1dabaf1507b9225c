// labels: unit
// The quantized frozen base: codes and scales against the absmax rule and its error bound, the int4
// packing layout, quantized models against the same models holding the dequantized weights in
// fp32 (1e-5: the same arithmetic up to the order of the bias add), LoRA/DoRA over both, gradients,
// the byte count, dtype moves and errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <set>

#include "core/io/safetensors.h"
#include "core/model/hf.h"
#include "core/util/compat.h"
#include "core/util/error.h"
#include "peft/lora.h"
#include "peft/peft_format.h"
#include "peft/quantized.h"
#include "tests/peft/peft_test_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

std::string dora_dir(const std::string& family) { return peft_reference_dir(family, "dora"); }
torch::Tensor input_ids(const std::string& family) {
  return load_safetensors(model_dir(family) + "/reference.safetensors").at("input_ids");
}

std::map<std::string, QuantizedProjection> quantized_modules(const Decoder& model) {
  std::map<std::string, QuantizedProjection> out;
  for (const auto& item : model->named_modules("", false))
    if (auto q = std::dynamic_pointer_cast<QuantizedProjectionImpl>(item.value()))
      out.emplace(item.key(), QuantizedProjection(q));
  return out;
}

// The fixture model with every projection that `quantized` holds quantized replaced by its
// dequantized weight in fp32: the reference a quantized model must reproduce.
Decoder dequantized_copy(const std::string& family, const Decoder& quantized) {
  Decoder model = load_hf_model(model_dir(family));
  const auto params = model->named_parameters();
  torch::NoGradGuard no_grad;
  for (const auto& [path, q] : quantized_modules(quantized)) params[path + ".weight"].copy_(q->dequantized_weight());
  return model;
}

// A weight whose groups span several magnitudes, with one all-zero group.
torch::Tensor test_weight(int64_t out, int64_t in, int64_t group) {
  torch::manual_seed(3);
  auto w = torch::randn({out, in}) * torch::logspace(-3, 1, out).unsqueeze(1);
  w.narrow(0, 1, 1).narrow(1, group, group).zero_();
  return w;
}

struct Case {
  std::string family;
  int bits;
};

}  // namespace

TEST(Quantize, ErrorWithinHalfAScalePerGroup) {
  const int64_t out = 8, in = 128, group = 32;
  const auto w = test_weight(out, in, group);
  for (int bits : {8, 4}) {
    const auto q = quantize_weight(w, bits, group);
    ASSERT_EQ(q.scales.sizes(), (std::vector<int64_t>{out, in / group}));
    EXPECT_EQ(q.scales.scalar_type(), torch::kFloat32);
    const auto codes = bits == 4 ? unpack_int4(q.data) : q.data;
    const int64_t qmax = quant_max(bits);
    const auto grouped = codes.view({out, in / group, group});
    // Symmetric: codes within [-qmax, qmax], and each non-zero group reaches +-qmax at its absmax.
    EXPECT_LE(codes.abs().max().item<int64_t>(), qmax);
    const auto peak = grouped.abs().amax(-1);
    EXPECT_TRUE(torch::equal(peak, torch::where(q.scales > 0, torch::full_like(peak, qmax), torch::zeros_like(peak))));
    EXPECT_EQ(q.scales[1][1].item<float>(), 0.0f);  // the all-zero group

    // |w - code * scale| <= scale / 2 (rounding to the nearest code), up to fp32's relative
    // rounding of the product (qmax * scale * 2^-24 < 1e-5 * scale).
    const auto deq = dequantize_weight(q.data, q.scales, bits, group, torch::kFloat64);
    const auto err = (w.to(torch::kFloat64) - deq).abs().view({out, in / group, group});
    const auto bound = q.scales.to(torch::kFloat64).unsqueeze(-1) * (0.5 + 1e-5);
    EXPECT_TRUE((err <= bound).all().item<bool>()) << bits << " bits";
    // ...and the bound is nearly reached, so it is the right one.
    const double worst = (err / q.scales.to(torch::kFloat64).clamp_min(1e-30).unsqueeze(-1)).max().item<double>();
    EXPECT_GT(worst, 0.4) << bits << " bits";
    std::cout << bits << "-bit: max |w - deq(q(w))| / scale = " << worst << "\n";
  }
}

TEST(Quantize, Int4PackingIsExactAndLaidOutLowNibbleFirst) {
  torch::manual_seed(1);
  const auto codes = torch::randint(-8, 8, {5, 12}, torch::kInt8);
  const auto packed = pack_int4(codes);
  EXPECT_EQ(packed.scalar_type(), torch::kUInt8);
  EXPECT_EQ(packed.sizes(), (std::vector<int64_t>{5, 6}));
  EXPECT_TRUE(torch::equal(unpack_int4(packed), codes));
  // Element 2i in the low nibble, 2i+1 in the high one, each as code + 8.
  const auto pair = pack_int4(torch::tensor({-8, 7, 1, -1}, torch::kInt8));
  EXPECT_TRUE(torch::equal(pair, torch::tensor({0xF0, 0x79}, torch::kUInt8)));
  EXPECT_THROW(pack_int4(torch::tensor({8, 0}, torch::kInt8)), c10::Error);
}

class QuantizedModel : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizedModel, ForwardEqualsTheDequantizedFp32Model) {
  const auto [family, bits] = GetParam();
  Decoder model = load_hf_model(model_dir(family));
  const auto fp32_logits = logits_of(model, input_ids(family));
  quantize_frozen_base(model, {bits, 32});
  const auto quantized = quantized_modules(model);
  // Every attention and MLP projection, not lm_head.
  EXPECT_EQ(quantized.size(), projection_paths(model).size() - (model->options.tie_embeddings ? 0 : 1));
  EXPECT_EQ(quantized.count("lm_head"), 0u);
  for (const auto& [path, q] : quantized) {
    EXPECT_EQ(q->weight.numel(), 0) << path;
    EXPECT_EQ(q->qweight.scalar_type(), bits == 8 ? torch::kInt8 : torch::kUInt8) << path;
  }
  Decoder reference = dequantized_copy(family, model);
  const auto logits = logits_of(model, input_ids(family));
  const double diff = max_diff(logits, logits_of(reference, input_ids(family)));
  EXPECT_LE(diff, 1e-5);
  // Quantization itself moves the logits, a little.
  const double vs_fp32 = max_diff(logits, fp32_logits);
  EXPECT_GT(vs_fp32, 0.0);
  std::cout << family << " int" << bits << ": vs dequantized fp32 model " << diff << ", vs original fp32 " << vs_fp32
            << "\n";
}

TEST_P(QuantizedModel, LoraOverTheQuantizedBaseEqualsLoraOverTheDequantizedOne) {
  const auto [family, bits] = GetParam();
  Decoder model = load_hf_model(model_dir(family));
  quantize_frozen_base(model, {bits, 32});
  Decoder reference = dequantized_copy(family, model);
  load_adapter(model, model_dir(family) + "/lora");
  load_adapter(reference, model_dir(family) + "/lora");
  for (const auto& [path, m] : lora_modules(model)) EXPECT_TRUE(m->quantized_base) << path;
  const auto ids = input_ids(family);
  const double lora_diff = max_diff(logits_of(model, ids), logits_of(reference, ids));
  EXPECT_LE(lora_diff, 1e-5);

  // DoRA: the norm comes from the dequantized weight.
  Decoder dora = load_hf_model(model_dir(family));
  quantize_frozen_base(dora, {bits, 32});
  Decoder dora_reference = dequantized_copy(family, dora);
  load_adapter(dora, dora_dir(family));
  load_adapter(dora_reference, dora_dir(family));
  const double dora_diff = max_diff(logits_of(dora, ids), logits_of(dora_reference, ids));
  EXPECT_LE(dora_diff, 1e-5);
  std::cout << family << " int" << bits << ": LoRA over quantized vs dequantized " << lora_diff << ", DoRA "
            << dora_diff << "\n";

  // Parameter names are those of LoRA over a plain base; the codes are buffers.
  std::set<std::string> names, plain_names;
  for (const auto& item : model->named_parameters()) names.insert(item.key());
  for (const auto& item : reference->named_parameters()) plain_names.insert(item.key());
  EXPECT_EQ(names, plain_names);

  // merge_and_unload gives plain fp32 projections holding dequantized W + update.
  const auto unmerged = logits_of(dora, ids);
  merge_and_unload(dora);
  EXPECT_TRUE(lora_modules(dora).empty());
  for (const auto& [path, m] : lora_modules(dora_reference)) {
    const auto& plain = child_projection(*dora->named_modules("", false)[path.substr(0, path.rfind('.'))],
                                         path.substr(path.rfind('.') + 1));
    EXPECT_EQ(dynamic_cast<const QuantizedProjectionImpl*>(&plain), nullptr) << path;
    EXPECT_EQ(plain.weight.sizes(), (std::vector<int64_t>{m->out_features, m->in_features})) << path;
  }
  EXPECT_LE(max_diff(logits_of(dora, ids), unmerged), 1e-5);
}

TEST_P(QuantizedModel, GradientsReachOnlyTheAdaptersAndTheBaseStaysQuantized) {
  const auto [family, bits] = GetParam();
  Decoder model = load_hf_model(model_dir(family));
  quantize_frozen_base(model, {bits, 32});
  Decoder reference = dequantized_copy(family, model);
  for (Decoder* m : {&model, &reference}) {
    load_adapter(*m, model_dir(family) + "/lora");
    (*m)->train();
    torch::manual_seed(8);  // gpt2 has dropout: the same masks for both models
    const auto ids = input_ids(family);
    torch::nn::functional::cross_entropy((*m)->forward(ids).flatten(0, 1), ids.flatten()).backward();
  }
  const auto adapters = lora_parameters(model);
  const auto reference_params = reference->named_parameters();
  for (const auto& item : model->named_parameters()) {
    const bool adapter = adapters.count(item.key()) == 1;
    ASSERT_EQ(item.value().grad().defined(), adapter) << item.key();
    if (!adapter) continue;
    EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
    // The backward through the quantized matmul (which dequantizes again) gives fp32's gradients.
    EXPECT_LE(max_diff(item.value().grad(), reference_params[item.key()].grad()), 1e-5) << item.key();
  }
  for (const auto& [path, m] : lora_modules(model)) {
    EXPECT_EQ(m->weight.numel(), 0) << path;
    const auto buffers = m->named_buffers(false);
    ASSERT_NE(buffers.find("qweight"), nullptr) << path;
    EXPECT_EQ(buffers["qweight"].scalar_type(), bits == 8 ? torch::kInt8 : torch::kUInt8) << path;
  }
  // The codes are this module's buffers and the quantized base's very tensors: what Module::to does
  // to a buffer (set_data) reaches the base too, so to(device) moves what the forward reads.
  for (const auto& [path, m] : lora_modules(model)) {
    auto qweight = m->named_buffers(false)["qweight"];
    qweight.set_data(qweight.clone());
    EXPECT_EQ(m->quantized_base->qweight.data_ptr(), qweight.data_ptr()) << path;
  }
  // unload gives the quantized projections back.
  unload_lora(model);
  EXPECT_EQ(quantized_modules(model).size(), projection_paths(model).size() - (model->options.tie_embeddings ? 0 : 1));
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizedModel,
                         ::testing::Values(Case{"llama", 8}, Case{"llama", 4}, Case{"qwen2", 4}, Case{"gpt2", 8},
                                           Case{"gpt2", 4}),
                         [](const auto& info) { return info.param.family + "_int" + std::to_string(info.param.bits); });

TEST(QuantizedBase, FrozenWeightBytesCountCodesAndScales) {
  const int64_t group = 32;
  Decoder model = load_hf_model(model_dir("llama"));
  int64_t fp32 = 0, int8 = 0, int4 = 0;
  for (const auto& path : projection_paths(model)) {
    if (path == "lm_head") continue;
    const auto& p = child_projection(*model->named_modules("", false)[path.substr(0, path.rfind('.'))],
                                     path.substr(path.rfind('.') + 1));
    const int64_t out = p.out_features, in = p.in_features, scales = out * (in / group) * 4;
    fp32 += out * in * 4;
    int8 += out * in + scales;
    int4 += out * in / 2 + scales;
  }
  EXPECT_EQ(frozen_weight_bytes(model), fp32);
  quantize_frozen_base(model, {8, group});
  EXPECT_EQ(frozen_weight_bytes(model), int8);
  Decoder model4 = load_hf_model(model_dir("llama"));
  quantize_frozen_base(model4, {4, group});
  EXPECT_EQ(frozen_weight_bytes(model4), int4);
  // Adapters are not frozen weights.
  load_adapter(model4, model_dir("llama") + "/lora");
  EXPECT_EQ(frozen_weight_bytes(model4), int4);
  std::cout << "llama projections: fp32 " << fp32 << " B, int8 " << int8 << " B (" << double(int8) / fp32 << "), int4 "
            << int4 << " B (" << double(int4) / fp32 << ")\n";
  // Per weight: 1 or 1/2 byte of code plus 4 / group bytes of scale, against 4 bytes of fp32.
  EXPECT_DOUBLE_EQ(double(int8) / fp32, (1 + 4.0 / group) / 4);
  EXPECT_DOUBLE_EQ(double(int4) / fp32, (0.5 + 4.0 / group) / 4);
}

TEST(QuantizedBase, ToDtypeKeepsTheCodes) {
  Decoder model = load_hf_model(model_dir("gpt2"));
  quantize_frozen_base(model, {4, 32});
  const auto ids = input_ids("gpt2");
  const auto fp32 = logits_of(model, ids);
  model->to(torch::kFloat64);
  for (const auto& [path, q] : quantized_modules(model)) {
    EXPECT_EQ(q->qweight.scalar_type(), torch::kUInt8) << path;
    EXPECT_EQ(q->scales.scalar_type(), torch::kFloat32) << path;
    EXPECT_EQ(q->bias.scalar_type(), torch::kFloat64) << path;
  }
  const auto fp64 = logits_of(model, ids);
  EXPECT_EQ(fp64.scalar_type(), torch::kFloat64);
  EXPECT_LE(max_diff(fp64, fp32), 1e-4);
}

TEST(QuantizedBaseErrors, GroupSizeThatDoesNotDivideNamesTheModule) {
  Decoder model = load_hf_model(model_dir("llama"));
  const auto before = logits_of(model, input_ids("llama"));
  // down_proj has 160 inputs: 64 does not divide it.
  expect_one_line_error<ConfigError>(
      [&] {
        quantize_frozen_base(model, {4, 64});
      },
      {"model.layers.0.mlp.down_proj", "160", "64", "group"});
  // Nothing was replaced: the checks run before the first replacement.
  EXPECT_TRUE(quantized_modules(model).empty());
  EXPECT_TRUE(torch::equal(logits_of(model, input_ids("llama")), before));
  expect_one_line_error<ConfigError>([&] { quantize_frozen_base(model, {3, 32}); }, {"bits", "3"});
  expect_one_line_error<ConfigError>([&] { quantize_frozen_base(model, {8, 0}); }, {"group_size", "0"});
  quantize_frozen_base(model, {0, 64});  // off: nothing happens, whatever the group size
  EXPECT_TRUE(quantized_modules(model).empty());

  load_adapter(model, model_dir("llama") + "/lora");
  expect_one_line_error<ConfigError>(
      [&] {
        quantize_frozen_base(model, {8, 32});
      },
      {"LoRA", "quantize the base first"});
  Decoder twice = load_hf_model(model_dir("llama"));
  quantize_frozen_base(twice, {8, 32});
  expect_one_line_error<ConfigError>([&] { quantize_frozen_base(twice, {4, 32}); }, {"already quantized"});
}

TEST(QuantizedBaseGpu, LoraOverAQuantizedBaseMovesToCudaAndTrainsInBf16) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  at::globalContext().setAllowTF32CuBLAS(false);  // strict fp32 for the comparison with the CPU
  const auto ids = input_ids("llama");
  Decoder cpu = load_hf_model(model_dir("llama"));
  quantize_frozen_base(cpu, {4, 32});
  load_adapter(cpu, dora_dir("llama"));
  const auto expected = logits_of(cpu, ids);
  // Both orders: adapters applied before the move, or onto a base already on the GPU.
  Decoder before = load_hf_model(model_dir("llama"));
  quantize_frozen_base(before, {4, 32});
  load_adapter(before, dora_dir("llama"));
  before->to(torch::kCUDA);
  Decoder after = load_hf_model(model_dir("llama"));
  quantize_frozen_base(after, {4, 32});
  after->to(torch::kCUDA);
  load_adapter(after, dora_dir("llama"));
  for (Decoder* model : {&before, &after}) {
    for (const auto& [path, m] : lora_modules(*model)) {
      EXPECT_TRUE(m->quantized_base->qweight.is_cuda()) << path;
      EXPECT_EQ(m->quantized_base->qweight.scalar_type(), torch::kUInt8) << path;
      EXPECT_TRUE(m->lora_A.is_cuda() && m->lora_magnitude.is_cuda()) << path;
    }
    for (const auto& [path, q] : quantized_modules(*model)) EXPECT_TRUE(q->scales.is_cuda()) << path;
    const double diff = max_diff(logits_of(*model, ids.to(torch::kCUDA)).cpu(), expected);
    EXPECT_LE(diff, 1e-4);
    std::cout << "cuda vs cpu logits (int4 base + DoRA): " << diff << "\n";

    (*model)->train();
    torch::Tensor loss;
    {
      compat::AutocastBF16 autocast(true);
      const auto x = ids.to(torch::kCUDA);
      loss = torch::nn::functional::cross_entropy((*model)->forward(x).flatten(0, 1).to(torch::kFloat32), x.flatten());
    }
    loss.backward();
    const auto adapters = lora_parameters(*model);
    for (const auto& item : (*model)->named_parameters()) {
      const bool adapter = adapters.count(item.key()) == 1;
      ASSERT_EQ(item.value().grad().defined(), adapter) << item.key();
      if (adapter) {
        EXPECT_TRUE(torch::isfinite(item.value().grad()).all().item<bool>()) << item.key();
      }
    }
  }
  merge_and_unload(after);
  EXPECT_LE(max_diff(logits_of(after, ids.to(torch::kCUDA)).cpu(), expected), 1e-4);
}
