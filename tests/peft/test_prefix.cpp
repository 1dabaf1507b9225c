// labels: unit
// Prefix tuning against PEFT's own logits (tests/fixtures/peft/<model>/prefix, made by PEFT 0.21 and
// transformers 5 with tests/fixtures/make_peft_references.py). Tolerance: 1e-4 absolute against
// PEFT's fp32 logits, as for the base models and LoRA.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "peft/prefix.h"
#include "tests/peft/peft_test_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

std::string adapter_dir(const std::string& family) { return peft_reference_dir(family, "prefix"); }

// A copy of the fixture adapter of `family` in `dir`, to be edited by a test.
void copy_adapter(const std::string& family, const std::string& dir) {
  std::filesystem::create_directories(dir);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    std::filesystem::copy_file(adapter_dir(family) + "/" + f, dir + "/" + f, std::filesystem::copy_options::overwrite_existing);
}

// Replaces the first occurrence of `from` in the adapter config of `dir` by `to`.
void edit_config(const std::string& dir, const std::string& from, const std::string& to) {
  std::string text = read_text(dir + "/adapter_config.json");
  const auto at = text.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  write_text(dir + "/adapter_config.json", text.replace(at, from.size(), to));
}

}  // namespace

class PrefixFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(PrefixFixture, AdapterMatchesPeftLogits) {
  const auto ref = load_safetensors(adapter_dir(GetParam()) + "/reference.safetensors");
  ASSERT_TRUE(torch::equal(ref.at("attention_mask"), torch::ones_like(ref.at("attention_mask"))));
  Decoder model = load_hf_model(model_dir(GetParam()));
  const auto base = logits_of(model, ref.at("input_ids"));
  load_prefix_adapter(model, adapter_dir(GetParam()));
  EXPECT_EQ(model->prefix_length(), 5);
  const auto logits = logits_of(model, ref.at("input_ids"));
  ASSERT_EQ(logits.sizes(), ref.at("logits").sizes());
  const double diff = max_diff(logits, ref.at("logits"));
  EXPECT_LE(diff, 1e-4);
  std::cout << GetParam() << ": max |fedsplit - peft| = " << diff << "\n";
  // The prefix matters: without it the logits are far from PEFT's; and so do the positions P..P+T-1
  // (the prefix keys carry no rotation, the queries do; gpt2's learned positions shift).
  EXPECT_GT(max_diff(base, ref.at("logits")), 1e-2);
  torch::NoGradGuard no_grad;
  EXPECT_GT(max_diff(model->forward(ref.at("input_ids"), 0), ref.at("logits")), 1e-3);
}

TEST_P(PrefixFixture, SaveLoadRoundTrip) {
  TempDir tmp("prefix_roundtrip_" + GetParam());
  const auto ids = load_safetensors(adapter_dir(GetParam()) + "/reference.safetensors").at("input_ids");
  Decoder model = load_hf_model(model_dir(GetParam()));
  load_prefix_adapter(model, adapter_dir(GetParam()));
  save_prefix_adapter(model, tmp / "adapter");

  const auto fixture = load_safetensors(adapter_dir(GetParam()) + "/adapter_model.safetensors");
  const auto saved = load_safetensors(tmp / "adapter/adapter_model.safetensors");
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_TRUE(torch::equal(saved.at("prompt_embeddings"), fixture.at("prompt_embeddings")));
  // The keys a PEFT loader reads carry the fixture's values.
  const auto written = nlohmann::json::parse(read_text(tmp / "adapter/adapter_config.json"));
  const auto original = nlohmann::json::parse(read_text(adapter_dir(GetParam()) + "/adapter_config.json"));
  for (const char* key : {"peft_type", "task_type", "num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads",
                          "encoder_hidden_size", "prefix_projection", "num_transformer_submodules"})
    EXPECT_EQ(written.at(key), original.at(key)) << key;

  Decoder again = load_hf_model(model_dir(GetParam()));
  load_prefix_adapter(again, tmp / "adapter");
  EXPECT_TRUE(torch::equal(logits_of(again, ids), logits_of(model, ids)));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PrefixFixture, ::testing::Values("llama", "qwen2", "gpt2"));

TEST(Prefix, ApplyFreezesTheBaseAndTrainsOnlyThePrefix) {
  for (const std::string family : {"llama", "gpt2"}) {
    Decoder model = load_hf_model(model_dir(family));
    apply_prefix_tuning(model, PrefixOptions{3}, 11);
    const auto prefix = prefix_embeddings(model);
    ASSERT_TRUE(prefix.defined());
    const int64_t token_dim = model->options.num_kv_heads * model->options.head_dim;
    EXPECT_EQ(prefix.sizes(), (std::vector<int64_t>{3, model->num_layers() * 2 * token_dim}));
    // PEFT's nn.Embedding init, N(0, 1), drawn from the seed: the same seed gives the same prefix.
    EXPECT_NEAR(prefix.std().item<double>(), 1.0, 0.15);
    Decoder other = load_hf_model(model_dir(family));
    apply_prefix_tuning(other, PrefixOptions{3}, 11);
    EXPECT_TRUE(torch::equal(prefix_embeddings(other), prefix));

    // named_parameters lists the prefix, the only trainable parameter.
    const auto params = model->named_parameters();
    ASSERT_NE(params.find("prefix_embeddings"), nullptr);
    for (const auto& item : params) EXPECT_EQ(item.value().requires_grad(), item.key() == "prefix_embeddings") << item.key();

    model->train();
    const auto ids = torch::randint(512, {2, 7}, torch::kInt64);
    const auto logits = model->forward(ids);
    torch::nn::functional::cross_entropy(logits.flatten(0, 1), ids.flatten()).backward();
    for (const auto& item : model->named_parameters()) {
      const bool is_prefix = item.key() == "prefix_embeddings";
      ASSERT_EQ(item.value().grad().defined(), is_prefix) << family << " " << item.key();
      // Every layer's keys and values receive gradient (each is a slice of the one tensor).
      if (is_prefix) {
        const auto per_slice = item.value().grad().view({3, model->num_layers() * 2, token_dim}).abs().sum(at::IntArrayRef{0, 2});
        EXPECT_GT(per_slice.min().item<double>(), 0.0) << family;
      }
    }
  }
}

// The real tokens follow the prefix: positions P .. P+T-1 (learned positions show it directly).
TEST(Prefix, RealTokensStartAtPositionP) {
  Decoder model = load_hf_model(model_dir("gpt2"));
  apply_prefix_tuning(model, PrefixOptions{4}, 2);
  const auto ids = torch::randint(512, {1, 6}, torch::kInt64);
  torch::NoGradGuard no_grad;
  model->eval();
  EXPECT_TRUE(torch::equal(model->forward(ids), model->forward(ids, 4)));
  EXPECT_GT(max_diff(model->forward(ids), model->forward(ids, 0)), 1e-3);
}

TEST(Prefix, ModelWithoutPrefixIsUnchanged) {
  const auto ref = load_safetensors(model_dir("qwen2") + "/reference.safetensors");
  Decoder model = load_hf_model(model_dir("qwen2"));
  EXPECT_FALSE(prefix_embeddings(model).defined());
  EXPECT_EQ(model->prefix_length(), 0);
  EXPECT_LE(max_diff(logits_of(model, ref.at("input_ids")), ref.at("logits")), 1e-4);
  TempDir tmp("prefix_none");
  expect_one_line_error<DataError>([&] { save_prefix_adapter(model, tmp / "a"); }, {"no prefix"});
}

TEST(PrefixErrors, BadOptions) {
  Decoder model = load_hf_model(model_dir("llama"));
  expect_one_line_error<ConfigError>([&] { apply_prefix_tuning(model, PrefixOptions{0}, 0); }, {"num_virtual_tokens", "0"});
  expect_one_line_error<ConfigError>([&] { apply_prefix_tuning(model, PrefixOptions{model->options.max_position}, 0); },
                                     {"num_virtual_tokens", "max_position"});
  EXPECT_FALSE(prefix_embeddings(model).defined());
  apply_prefix_tuning(model, PrefixOptions{2}, 0);
  expect_one_line_error<ConfigError>([&] { apply_prefix_tuning(model, PrefixOptions{2}, 0); }, {"already"});
}

TEST(PrefixErrors, ConfigKeysThatDoNotFitNameTheKey) {
  TempDir tmp("prefix_config");
  struct Case {
    std::string from, to;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"\"prefix_projection\": false", "\"prefix_projection\": true", {"prefix_projection", "adapter_config.json"}},
      {"\"num_layers\": 2", "\"num_layers\": 3", {"num_layers", "3", "expected 2"}},
      {"\"token_dim\": 32", "\"token_dim\": 64", {"token_dim", "64", "expected 32"}},
      {"\"num_attention_heads\": 2", "\"num_attention_heads\": 4", {"num_attention_heads", "4", "expected 2"}},
      {"\"peft_type\": \"PREFIX_TUNING\"", "\"peft_type\": \"LORA\"", {"peft_type", "LORA"}},
      {"\"num_transformer_submodules\": 1", "\"num_transformer_submodules\": 2", {"num_transformer_submodules"}},
  };
  for (const auto& c : cases) {
    copy_adapter("llama", tmp.path());
    edit_config(tmp.path(), c.from, c.to);
    Decoder model = load_hf_model(model_dir("llama"));
    expect_one_line_error<ConfigError>([&] { load_prefix_adapter(model, tmp.path()); }, c.needles);
    EXPECT_FALSE(prefix_embeddings(model).defined()) << c.to;  // a failed load changes nothing
    for (const auto& p : model->parameters()) EXPECT_TRUE(p.requires_grad()) << c.to;
  }
}

TEST(PrefixErrors, TensorShapeAndNames) {
  TempDir tmp("prefix_tensor");
  copy_adapter("qwen2", tmp.path());
  const std::string weights = tmp / "adapter_model.safetensors";
  save_safetensors(weights, {{"prompt_embeddings", torch::zeros({5, 100})}});
  Decoder model = load_hf_model(model_dir("qwen2"));
  expect_one_line_error<FormatError>([&] { load_prefix_adapter(model, tmp.path()); },
                                     {"prompt_embeddings", "[5, 100]", "[5, 128]", "adapter_model.safetensors"});
  save_safetensors(weights, {{"prompt_embeddings", torch::zeros({5, 128})}, {"extra", torch::zeros({1})}});
  expect_one_line_error<FormatError>([&] { load_prefix_adapter(model, tmp.path()); }, {"unexpected tensor", "extra"});
  save_safetensors(weights, {{"other", torch::zeros({5, 128})}});
  expect_one_line_error<FormatError>([&] { load_prefix_adapter(model, tmp.path()); }, {"unexpected tensor", "other"});
  std::filesystem::remove(weights);
  expect_one_line_error<IoError>([&] { load_prefix_adapter(model, tmp.path()); }, {"adapter_model.safetensors"});
  EXPECT_FALSE(prefix_embeddings(model).defined());

  // A prefix of another length does not load over an existing one.
  apply_prefix_tuning(model, PrefixOptions{3}, 0);
  expect_one_line_error<ConfigError>([&] { load_prefix_adapter(model, adapter_dir("qwen2")); },
                                     {"num_virtual_tokens", "5", "3"});
}
