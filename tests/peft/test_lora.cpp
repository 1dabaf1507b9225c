// labels: unit
// LoRA on Decoder and PEFT adapters, with PEFT's own logits (fixtures made by transformers + peft) as
// the oracle. Tolerances: 1e-4 absolute against PEFT's fp32 logits (as the base-model logits test),
// 1e-5 for merged vs unmerged logits, 1e-6 for base weights restored by unmerge.
#include <gtest/gtest.h>
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


TensorMap reference(const std::string& family) { return load_safetensors(model_dir(family) + "/reference.safetensors"); }

std::set<std::string> keys_of(const TensorMap& m) {
  std::set<std::string> out;
  for (const auto& [k, v] : m) out.insert(k);
  return out;
}

// A copy of the fixture adapter of `family` in `dir`, to be edited by a test.
void copy_adapter(const std::string& family, const std::string& dir) {
  std::filesystem::create_directories(dir);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    std::filesystem::copy_file(model_dir(family) + "/lora/" + f, dir + "/" + f,
                               std::filesystem::copy_options::overwrite_existing);
}

}  // namespace

class LoraFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(LoraFixture, AdapterMatchesPeftLogits) {
  const auto ref = reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  load_adapter(model, model_dir(GetParam()) + "/lora");
  const auto logits = logits_of(model, ref.at("input_ids"));
  ASSERT_EQ(logits.sizes(), ref.at("logits_lora").sizes());
  const double diff = max_diff(logits, ref.at("logits_lora"));
  EXPECT_LE(diff, 1e-4);
  std::cout << GetParam() << ": max |fedsplit - peft| = " << diff << "\n";
  // The adapter matters: without it the logits are the base ones, far from the LoRA ones.
  EXPECT_GT(max_diff(ref.at("logits"), ref.at("logits_lora")), 1e-2);
}

TEST_P(LoraFixture, MergeKeepsLogitsAndUnmergeRestoresWeights) {
  const auto ref = reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  load_adapter(model, model_dir(GetParam()) + "/lora");
  std::map<std::string, torch::Tensor> base;
  for (const auto& [path, m] : lora_modules(model)) base[path] = m->weight.detach().clone();
  ASSERT_FALSE(base.empty());
  const auto unmerged = logits_of(model, ref.at("input_ids"));
  merge_lora(model);
  for (const auto& [path, m] : lora_modules(model)) {
    EXPECT_TRUE(m->merged) << path;
    EXPECT_GT(max_diff(m->weight, base[path]), 0.0) << path;
  }
  EXPECT_LE(max_diff(logits_of(model, ref.at("input_ids")), unmerged), 1e-5);
  unmerge_lora(model);
  for (const auto& [path, m] : lora_modules(model)) EXPECT_LE(max_diff(m->weight, base[path]), 1e-6) << path;
  EXPECT_LE(max_diff(logits_of(model, ref.at("input_ids")), unmerged), 1e-5);

  // merge_and_unload leaves a plain HF model with the adapted logits.
  merge_and_unload(model);
  EXPECT_TRUE(lora_modules(model).empty());
  EXPECT_LE(max_diff(logits_of(model, ref.at("input_ids")), ref.at("logits_lora")), 1e-4);
  EXPECT_NO_THROW(to_hf_state_dict(model));
}

TEST_P(LoraFixture, SaveLoadRoundTripKeepsLogitsAndNames) {
  TempDir tmp("peft_roundtrip_" + GetParam());
  const auto ref = reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  load_adapter(model, model_dir(GetParam()) + "/lora");
  save_adapter(model, tmp / "adapter");

  const auto fixture = load_safetensors(model_dir(GetParam()) + "/lora/adapter_model.safetensors");
  const auto saved = load_safetensors(tmp / "adapter/adapter_model.safetensors");
  EXPECT_EQ(keys_of(saved), keys_of(fixture));
  for (const auto& [name, t] : fixture) EXPECT_TRUE(torch::equal(saved.at(name), t)) << name;

  Decoder again = load_hf_model(model_dir(GetParam()));
  load_adapter(again, tmp / "adapter");
  EXPECT_TRUE(torch::equal(logits_of(again, ref.at("input_ids")), logits_of(model, ref.at("input_ids"))));
}

TEST_P(LoraFixture, ApplyLoraStartsAtTheBaseAndTrainsOnlyLora) {
  const auto ref = reference(GetParam());
  Decoder model = load_hf_model(model_dir(GetParam()));
  const auto base_logits = logits_of(model, ref.at("input_ids"));
  LoraOptions o = read_adapter_config(model_dir(GetParam()) + "/lora/adapter_config.json");
  apply_lora(model, o, 7);
  // B = 0: the update is exactly zero.
  EXPECT_TRUE(torch::equal(logits_of(model, ref.at("input_ids")), base_logits));

  const auto lora = lora_parameters(model);
  EXPECT_EQ(lora.size(), keys_of(load_safetensors(model_dir(GetParam()) + "/lora/adapter_model.safetensors")).size());
  std::set<std::string> lora_names;
  for (const auto& [name, t] : lora) lora_names.insert(name);
  for (const auto& item : model->named_parameters())
    EXPECT_EQ(item.value().requires_grad(), lora_names.count(item.key()) == 1) << item.key();

  model->train();
  const auto ids = ref.at("input_ids");
  const auto logits = model->forward(ids);
  torch::nn::functional::cross_entropy(logits.flatten(0, 1), ids.flatten()).backward();
  for (const auto& item : model->named_parameters()) {
    const bool is_lora = lora_names.count(item.key()) == 1;
    EXPECT_EQ(item.value().grad().defined(), is_lora) << item.key();
    // With B = 0 only B's gradient is non-zero at the first step.
    if (is_lora && item.key().size() > 6 && item.key().substr(item.key().size() - 6) == "lora_B") {
      EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
    }
  }
  // A is kaiming-uniform like PEFT's: U(-1/sqrt(in), 1/sqrt(in)).
  for (const auto& [path, m] : lora_modules(model)) {
    EXPECT_LE(m->lora_A.abs().max().item<double>(), 1.0 / std::sqrt(double(m->in_features)) + 1e-7) << path;
    EXPECT_GT(m->lora_A.abs().max().item<double>(), 0.0) << path;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LoraFixture, ::testing::Values("llama", "qwen2", "gpt2"));

TEST(Lora, PatternsRsloraAndDropout) {
  Decoder model = load_hf_model(model_dir("llama"));
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  o.rslora = true;
  o.dropout = 0.5;
  o.target_modules = {"q_proj", "model.layers.1.mlp.down_proj"};
  o.rank_pattern = {{"layers\\.0\\.self_attn\\.q_proj", 2}};
  o.alpha_pattern = {{"down_proj", 3.0}};
  apply_lora(model, o, 1);
  const auto modules = lora_modules(model);
  ASSERT_EQ(modules.size(), 3u);  // q_proj of both layers, down_proj of layer 1 only
  EXPECT_EQ(modules.at("layers.0.self_attn.q_proj")->r, 2);
  EXPECT_EQ(modules.at("layers.1.self_attn.q_proj")->r, 4);
  EXPECT_DOUBLE_EQ(modules.at("layers.1.self_attn.q_proj")->scaling, 8.0 / 2.0);  // alpha / sqrt(4)
  EXPECT_DOUBLE_EQ(modules.at("layers.1.mlp.down_proj")->scaling, 3.0 / 2.0);

  // Dropout acts in training only: eval forwards are deterministic, training ones are not.
  auto q = modules.at("layers.1.self_attn.q_proj");
  torch::NoGradGuard no_grad;
  q->lora_B.normal_();
  const auto x = torch::randn({2, 3, q->in_features});
  q->eval();
  EXPECT_TRUE(torch::equal(q->forward(x), q->forward(x)));
  q->train();
  EXPECT_FALSE(torch::equal(q->forward(x), q->forward(x)));

  // A save of these modules reloads into the same structure (rank/alpha patterns, full-path targets).
  TempDir tmp("peft_patterns");
  save_adapter(model, tmp.path());
  Decoder again = load_hf_model(model_dir("llama"));
  load_adapter(again, tmp.path());
  const auto reloaded = lora_modules(again);
  ASSERT_EQ(reloaded.size(), 3u);
  for (const auto& [path, m] : modules) {
    EXPECT_EQ(reloaded.at(path)->r, m->r) << path;
    EXPECT_DOUBLE_EQ(reloaded.at(path)->scaling, m->scaling) << path;
    EXPECT_TRUE(torch::equal(reloaded.at(path)->lora_B, m->lora_B)) << path;
  }
}

TEST(LoraErrors, TargetMatchingNothingNamesItAndTheProjections) {
  Decoder model = load_hf_model(model_dir("gpt2"));
  LoraOptions o;
  o.target_modules = {"c_attn", "q_proj"};
  expect_one_line_error<ConfigError>([&] { apply_lora(model, o, 0); }, {"'q_proj'", "c_attn", "c_fc", "c_proj"});
  EXPECT_TRUE(lora_modules(model).empty());
}

TEST(LoraErrors, AdapterShapeMismatchNamesTheTensor) {
  TempDir tmp("peft_shape");
  copy_adapter("llama", tmp.path());
  auto tensors = load_safetensors(tmp / "adapter_model.safetensors");
  const std::string key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
  ASSERT_TRUE(tensors.count(key));
  tensors[key] = torch::zeros({4, 63});
  save_safetensors(tmp / "adapter_model.safetensors", tensors);
  Decoder model = load_hf_model(model_dir("llama"));
  expect_one_line_error<FormatError>([&] { load_adapter(model, tmp.path()); },
                                     {key, "[4, 63]", "[4, 64]", "adapter_model.safetensors"});
}

TEST(LoraErrors, MissingAndUnexpectedTensors) {
  TempDir tmp("peft_missing");
  copy_adapter("qwen2", tmp.path());
  auto tensors = load_safetensors(tmp / "adapter_model.safetensors");
  const std::string key = "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight";
  ASSERT_EQ(tensors.erase(key), 1u);
  save_safetensors(tmp / "adapter_model.safetensors", tensors);
  Decoder model = load_hf_model(model_dir("qwen2"));
  expect_one_line_error<FormatError>([&] { load_adapter(model, tmp.path()); }, {"missing tensor", key});

  tensors[key] = torch::zeros({64, 4});
  tensors["base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"] = torch::zeros({4, 64});
  save_safetensors(tmp / "adapter_model.safetensors", tensors);
  Decoder fresh = load_hf_model(model_dir("qwen2"));
  expect_one_line_error<FormatError>([&] { load_adapter(fresh, tmp.path()); }, {"unexpected tensor", "up_proj"});

  // A failed load leaves the model as it was, so that a good adapter still loads into it.
  EXPECT_TRUE(lora_modules(fresh).empty());
  for (const auto& p : fresh->parameters()) EXPECT_TRUE(p.requires_grad());
  load_adapter(fresh, model_dir("qwen2") + "/lora");
  const auto ref = reference("qwen2");
  EXPECT_LE(max_diff(logits_of(fresh, ref.at("input_ids")), ref.at("logits_lora")), 1e-4);
}

TEST(LoraErrors, UnsupportedConfigNamesTheKey) {
  TempDir tmp("peft_unsupported");
  copy_adapter("llama", tmp.path());
  const std::string config = read_text(tmp / "adapter_config.json");
  auto edited = [&](const std::string& from, const std::string& to) {
    std::string text = config;
    const auto at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    write_text(tmp / "adapter_config.json", text.replace(at, from.size(), to));
  };
  Decoder model = load_hf_model(model_dir("llama"));
  edited("\"lora_bias\": false", "\"lora_bias\": true");
  expect_one_line_error<ConfigError>([&] { load_adapter(model, tmp.path()); }, {"lora_bias", "adapter_config.json"});
  edited("\"bias\": \"none\"", "\"bias\": \"all\"");
  expect_one_line_error<ConfigError>([&] { load_adapter(model, tmp.path()); }, {"bias", "adapter_config.json"});
  edited("\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"");
  expect_one_line_error<ConfigError>([&] { load_adapter(model, tmp.path()); }, {"peft_type", "IA3"});
  EXPECT_TRUE(lora_modules(model).empty());
}

TEST(LoraCli, LogitsWithAdapterAndMerge) {
  TempDir tmp("peft_cli");
  const std::string family = "gpt2";
  const auto ref = reference(family);
  save_safetensors(tmp / "ids.safetensors", {{"input_ids", ref.at("input_ids")}});
  auto r = run_fedsplit("logits --model " + model_dir(family) + " --adapter " + model_dir(family) + "/lora --input " +
                        (tmp / "ids.safetensors") + " --out " + (tmp / "lora.safetensors") + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(max_diff(load_safetensors(tmp / "lora.safetensors").at("logits"), ref.at("logits_lora")), 1e-4);

  r = run_fedsplit("peft merge --model " + model_dir(family) + " --adapter " + model_dir(family) + "/lora --out " +
                   (tmp / "merged"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("logits --model " + (tmp / "merged") + " --input " + (tmp / "ids.safetensors") + " --out " +
                   (tmp / "merged.safetensors") + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(max_diff(load_safetensors(tmp / "merged.safetensors").at("logits"), ref.at("logits_lora")), 1e-4);

  r = run_fedsplit("peft merge --model " + model_dir(family) + " --adapter " + (tmp / "nowhere") + " --out " +
                   (tmp / "x"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("adapter_config.json"), std::string::npos) << r.output;
}
