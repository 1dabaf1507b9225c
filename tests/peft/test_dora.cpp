// labels: unit
// DoRA on Decoder, with PEFT 0.21's own logits (tests/fixtures/peft/<model>/dora, made by
// tests/fixtures/make_peft_references.py: random A and B, magnitudes moved off their initial norms)
// as the oracle, and the formula written out directly for one projection. Tolerances: 1e-4 against
// PEFT's fp32 logits, 1e-5 for merged vs unmerged logits, 1e-6 for restored weights; one fp32
// projection against the formula in float64: 1e-5 on outputs of size ~1, 1e-4 on gradients.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <set>

#include "core/io/safetensors.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "peft/lora.h"
#include "peft/peft_format.h"
#include "tests/launch/cli_helpers.h"
#include "tests/peft/peft_test_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

std::string dora_dir(const std::string& family) { return peft_reference_dir(family, "dora"); }
TensorMap dora_reference(const std::string& family) {
  return load_safetensors(dora_dir(family) + "/reference.safetensors");
}

// The DoRA output of one projection written out from the paper / PEFT, in float64. With
// `detach_norm` false the norm stays on the gradient path (what DoRA must not do).
torch::Tensor dora_direct(const torch::Tensor& x, const torch::Tensor& W, const torch::Tensor& b,
                          const torch::Tensor& A, const torch::Tensor& B, const torch::Tensor& m, double s,
                          bool detach_norm) {
  torch::Tensor norm = (W + s * torch::matmul(B, A)).pow(2).sum(1).sqrt();
  if (detach_norm) norm = norm.detach();
  const auto scale = m / norm;
  return scale * (torch::matmul(x, W.t()) + s * torch::matmul(torch::matmul(x, A.t()), B.t())) + b;
}

}  // namespace

class DoraFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(DoraFixture, AdapterMatchesPeftLogits) {
  const auto ref = dora_reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  const auto base_logits = logits_of(model, ref.at("input_ids"));
  load_adapter(model, dora_dir(GetParam()));
  const auto modules = lora_modules(model);
  ASSERT_FALSE(modules.empty());
  for (const auto& [path, m] : modules) {
    ASSERT_TRUE(m->use_dora) << path;
    // The fixture's magnitudes are off the row norms, so the magnitude path is exercised.
    const auto norms = (m->weight + m->delta_weight()).norm(2, {1});
    EXPECT_GT(max_diff(m->lora_magnitude, norms), 1e-3) << path;
  }
  const auto logits = logits_of(model, ref.at("input_ids"));
  ASSERT_EQ(logits.sizes(), ref.at("logits").sizes());
  const double diff = max_diff(logits, ref.at("logits"));
  EXPECT_LE(diff, 1e-4);
  std::cout << GetParam() << ": DoRA max |fedsplit - peft| = " << diff << "\n";
  EXPECT_GT(max_diff(base_logits, ref.at("logits")), 1e-2);
}

TEST_P(DoraFixture, SaveLoadRoundTripKeepsTensorsConfigAndLogits) {
  TempDir tmp("dora_roundtrip_" + GetParam());
  const auto ref = dora_reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  load_adapter(model, dora_dir(GetParam()));
  save_adapter(model, tmp / "adapter");

  const auto fixture = load_safetensors(dora_dir(GetParam()) + "/adapter_model.safetensors");
  const auto saved = load_safetensors(tmp / "adapter/adapter_model.safetensors");
  std::set<std::string> fixture_keys, saved_keys;
  for (const auto& [k, v] : fixture) fixture_keys.insert(k);
  for (const auto& [k, v] : saved) saved_keys.insert(k);
  EXPECT_EQ(saved_keys, fixture_keys);
  for (const auto& [name, t] : fixture) EXPECT_TRUE(torch::equal(saved.at(name), t)) << name;
  const auto config = nlohmann::json::parse(read_text(tmp / "adapter/adapter_config.json"));
  EXPECT_EQ(config.at("use_dora"), true);

  Decoder again = load_hf_model(model_dir(GetParam()));
  load_adapter(again, tmp / "adapter");
  EXPECT_TRUE(torch::equal(logits_of(again, ref.at("input_ids")), logits_of(model, ref.at("input_ids"))));
}

TEST_P(DoraFixture, MergeKeepsLogitsAndUnmergeRestoresWeights) {
  const auto ref = dora_reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  load_adapter(model, dora_dir(GetParam()));
  std::map<std::string, torch::Tensor> base, expected;
  for (const auto& [path, m] : lora_modules(model)) {
    base[path] = m->weight.detach().clone();
    expected[path] = m->merged_weight();
  }
  const auto unmerged = logits_of(model, ref.at("input_ids"));
  merge_lora(model);
  for (const auto& [path, m] : lora_modules(model)) {
    EXPECT_TRUE(m->merged) << path;
    // The merged weight is (m / ||W + sBA||) (W + sBA), row by row.
    EXPECT_LE(max_diff(m->weight, expected[path]), 1e-6) << path;
    EXPECT_GT(max_diff(m->weight, base[path]), 1e-3) << path;
  }
  const double merged_diff = max_diff(logits_of(model, ref.at("input_ids")), unmerged);
  EXPECT_LE(merged_diff, 1e-5);
  unmerge_lora(model);
  double restored = 0;
  for (const auto& [path, m] : lora_modules(model)) restored = std::max(restored, max_diff(m->weight, base[path]));
  EXPECT_LE(restored, 1e-6);
  std::cout << GetParam() << ": merged vs unmerged logits " << merged_diff << ", unmerge restores W to " << restored
            << "\n";
  EXPECT_LE(max_diff(logits_of(model, ref.at("input_ids")), unmerged), 1e-5);

  merge_and_unload(model);
  EXPECT_TRUE(lora_modules(model).empty());
  EXPECT_LE(max_diff(logits_of(model, ref.at("input_ids")), ref.at("logits")), 1e-4);
  EXPECT_NO_THROW(to_hf_state_dict(model));
}

TEST_P(DoraFixture, ApplyDoraStartsAtTheBase) {
  const auto ref = dora_reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  const auto base_logits = logits_of(model, ref.at("input_ids"));
  std::map<std::string, torch::Tensor> base_weights;
  for (const auto& item : model->named_parameters()) base_weights[item.key()] = item.value().detach().clone();
  LoraOptions o = read_adapter_config(dora_dir(GetParam()) + "/adapter_config.json");
  ASSERT_TRUE(o.use_dora);
  apply_lora(model, o, 3);
  for (const auto& [path, m] : lora_modules(model)) {
    // m starts at ||W|| row by row (B = 0), computed the same way the forward computes the norm.
    EXPECT_TRUE(torch::equal(m->lora_magnitude, m->weight.norm(2, {1}))) << path;
    EXPECT_TRUE(m->lora_magnitude.requires_grad()) << path;
    EXPECT_TRUE(torch::equal(m->weight, base_weights.at(path + ".weight"))) << path;
  }
  const double diff = max_diff(logits_of(model, ref.at("input_ids")), base_logits);
  EXPECT_LE(diff, 1e-6);
  std::cout << GetParam() << ": fresh DoRA vs base logits " << diff << "\n";
}

TEST_P(DoraFixture, GradientsReachABAndMagnitudeOnly) {
  const auto ref = dora_reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  load_adapter(model, dora_dir(GetParam()));
  const auto trainable = lora_parameters(model);
  size_t magnitudes = 0;
  for (const auto& [name, t] : trainable) magnitudes += name.find(".lora_magnitude") != std::string::npos;
  EXPECT_EQ(magnitudes, lora_modules(model).size());
  // load_adapter leaves the adapters trainable (apply_lora's flags).
  model->train();
  const auto ids = ref.at("input_ids");
  torch::nn::functional::cross_entropy(model->forward(ids).flatten(0, 1), ids.flatten()).backward();
  for (const auto& item : model->named_parameters()) {
    const bool adapter = trainable.count(item.key()) == 1;
    ASSERT_EQ(item.value().grad().defined(), adapter) << item.key();
    if (adapter) {
      EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DoraFixture, ::testing::Values("llama", "qwen2", "gpt2"));

TEST(Dora, ForwardAndGradientsMatchTheFormulaWithADetachedNorm) {
  torch::manual_seed(11);
  Projection base(24, 16, /*bias=*/true);
  {
    torch::NoGradGuard no_grad;
    base->weight.normal_(0, 0.3);
    base->bias.normal_();
  }
  LoraProjection lora(*base, /*r=*/3, /*alpha=*/5, /*dropout=*/0, /*rslora=*/false, /*use_dora=*/true);
  {
    torch::NoGradGuard no_grad;
    lora->lora_A.normal_();
    lora->lora_B.normal_(0, 0.2);
    lora->lora_magnitude.uniform_(0.5, 2.0);
  }
  for (auto* p : {&lora->lora_A, &lora->lora_B, &lora->lora_magnitude}) p->requires_grad_(true);
  const auto x = torch::randn({2, 5, 24});
  const auto g = torch::randn({2, 5, 16});
  const auto y = lora->forward(x);
  (y * g).sum().backward();

  auto f64 = [](const torch::Tensor& t) { return t.detach().to(torch::kFloat64); };
  auto A = f64(lora->lora_A).requires_grad_(true), B = f64(lora->lora_B).requires_grad_(true),
       m = f64(lora->lora_magnitude).requires_grad_(true);
  const auto y_direct = dora_direct(f64(x), f64(base->weight), f64(base->bias), A, B, m, 5.0 / 3.0, true);
  (y_direct * f64(g)).sum().backward();
  EXPECT_LE(max_diff(y, y_direct), 1e-5);
  EXPECT_LE(max_diff(lora->lora_A.grad(), A.grad()), 1e-4);
  EXPECT_LE(max_diff(lora->lora_B.grad(), B.grad()), 1e-4);
  EXPECT_LE(max_diff(lora->lora_magnitude.grad(), m.grad()), 1e-4);
  std::cout << "DoRA vs formula: output " << max_diff(y, y_direct) << ", grad A "
            << max_diff(lora->lora_A.grad(), A.grad()) << ", grad B " << max_diff(lora->lora_B.grad(), B.grad())
            << ", grad m " << max_diff(lora->lora_magnitude.grad(), m.grad()) << "\n";

  // A norm left on the gradient path changes A's gradient: the comparison above can tell.
  auto A2 = f64(lora->lora_A).requires_grad_(true);
  (dora_direct(f64(x), f64(base->weight), f64(base->bias), A2, f64(lora->lora_B), f64(lora->lora_magnitude), 5.0 / 3.0,
               false) *
   f64(g))
      .sum()
      .backward();
  EXPECT_GT(max_diff(A2.grad(), A.grad()), 1e-2);
}

TEST(Dora, DropoutScalesTheDroppedBaseOutputAsPeftDoes) {
  torch::manual_seed(5);
  Projection base(12, 8, /*bias=*/true);
  {
    torch::NoGradGuard no_grad;
    base->weight.normal_();
    base->bias.normal_();
  }
  LoraProjection lora(*base, 2, 4, /*dropout=*/0.5, false, /*use_dora=*/true);
  torch::NoGradGuard no_grad;
  lora->lora_A.normal_();
  lora->lora_B.normal_();
  lora->lora_magnitude.uniform_(0.5, 2.0);
  lora->train();
  const auto x = torch::randn({3, 12});
  torch::manual_seed(99);
  const auto y = lora->forward(x);
  torch::manual_seed(99);
  const auto xd = torch::dropout(x, 0.5, true);  // the same mask: the layer draws one dropout first
  const auto W = base->weight;
  const auto scale = lora->lora_magnitude / (W + lora->delta_weight()).norm(2, {1});
  const auto expected = torch::linear(x, W, base->bias) + (scale - 1) * torch::linear(xd, W) +
                        scale * torch::linear(torch::linear(xd, lora->lora_A), lora->lora_B) * 2.0;
  EXPECT_LE(max_diff(y, expected), 1e-5);
  // And it is not the dropout-free formula.
  lora->eval();
  EXPECT_GT(max_diff(y, lora->forward(x)), 1e-2);
}

TEST(DoraErrors, MissingMagnitudeNamesTheTensor) {
  TempDir tmp("dora_missing");
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    std::filesystem::copy_file(dora_dir("llama") + "/" + f, tmp / f);
  auto tensors = load_safetensors(tmp / "adapter_model.safetensors");
  const std::string key = "base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector";
  ASSERT_EQ(tensors.erase(key), 1u);
  save_safetensors(tmp / "adapter_model.safetensors", tensors);
  Decoder model = load_hf_model(model_dir("llama"));
  expect_one_line_error<FormatError>([&] { load_adapter(model, tmp.path()); }, {"missing tensor", key});
  EXPECT_TRUE(lora_modules(model).empty());
}

TEST(DoraCli, LogitsWithADoraAdapter) {
  TempDir tmp("dora_cli");
  const auto ref = dora_reference("gpt2");
  save_safetensors(tmp / "ids.safetensors", {{"input_ids", ref.at("input_ids")}});
  const auto r = run_fedsplit("logits --model " + model_dir("gpt2") + " --adapter " + dora_dir("gpt2") + " --input " +
                              (tmp / "ids.safetensors") + " --out " + (tmp / "dora.safetensors") + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(max_diff(load_safetensors(tmp / "dora.safetensors").at("logits"), ref.at("logits")), 1e-4);
}
