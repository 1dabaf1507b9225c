// labels: unit
// `fedsplit logits` against the HF reference logits, and the model-file errors a user can hit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/io/safetensors.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

class LogitsCommand : public ::testing::TestWithParam<std::string> {};

// transformers' fp32 logits are the oracle; 1e-4 absolute is the stated tolerance.
TEST_P(LogitsCommand, MatchesTransformersLogits) {
  TempDir tmp("cli_logits");
  const std::string model = fixtures() + "/hf-tiny/" + GetParam();
  const auto ref = load_safetensors(model + "/reference.safetensors");
  save_safetensors(tmp / "ids.safetensors", {{"input_ids", ref.at("input_ids")}});
  const auto r = run_fedsplit("logits --model " + model + " --input " + (tmp / "ids.safetensors") + " --out " +
                              (tmp / "out.safetensors") + " --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto out = load_safetensors(tmp / "out.safetensors");
  const auto& logits = out.at("logits");
  ASSERT_EQ(logits.sizes(), ref.at("logits").sizes());
  EXPECT_EQ(logits.scalar_type(), torch::kFloat);
  EXPECT_LE((logits - ref.at("logits")).abs().max().item<double>(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LogitsCommand, ::testing::Values("llama", "qwen2", "gpt2"));

TEST(CliModelErrors, OneLineNamingTheFile) {
  TempDir tmp("cli_model_errors");
  const std::string ids = tmp / "ids.safetensors";
  save_safetensors(ids, {{"input_ids", torch::zeros({1, 4}, torch::kLong)}});

  // A model directory whose config names an architecture fedsplit does not know.
  std::filesystem::create_directories(tmp / "bert");
  write_text(tmp / "bert/config.json", R"({"model_type": "bert", "architectures": ["BertModel"]})");
  auto r = run_fedsplit("logits --model " + (tmp / "bert") + " --input " + ids + " --out " + (tmp / "o.safetensors"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("config.json"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bert"), std::string::npos) << r.output;

  // Weights with a header that claims more bytes than the file has.
  std::filesystem::create_directories(tmp / "broken");
  std::filesystem::copy_file(fixtures() + "/hf-tiny/llama/config.json", tmp / "broken/config.json");
  write_text(tmp / "broken/model.safetensors", std::string("\xff\xff\x00\x00\x00\x00\x00\x00{}", 10));
  r = run_fedsplit("logits --model " + (tmp / "broken") + " --input " + ids + " --out " + (tmp / "o.safetensors"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("model.safetensors"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;

  // Ids outside the model's vocabulary.
  save_safetensors(tmp / "big.safetensors", {{"input_ids", torch::full({1, 2}, 100000, torch::kLong)}});
  r = run_fedsplit("logits --model " + fixtures() + "/hf-tiny/llama --input " + (tmp / "big.safetensors") + " --out " +
                   (tmp / "o.safetensors"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("vocabulary"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "o.safetensors"));

  // A missing flag.
  r = run_fedsplit("logits --model " + fixtures() + "/hf-tiny/llama");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--input"), std::string::npos) << r.output;
}
