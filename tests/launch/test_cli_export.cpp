// labels: unit
// `fedsplit export gguf|hf` end to end on a tiny llama with a SentencePiece tokenizer: eval of the f32
// GGUF (one file, or stage shards through their manifest) equals eval of the HF directory; an
// adapter is merged as `peft merge` merges it; a GGUF goes back to a HF directory; bad flags and
// files give one-line errors naming the flag or file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "compress/gguf_import.h"
#include "compress/gguf_manifest.h"
#include "compress/quant_record.h"
#include "core/model/hf.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

// A 2-layer llama whose vocabulary is the fixture SentencePiece model's (1000 ids), with the
// tokenizer beside it, and a token shard of the fixture text.
void make_model_and_data(const TempDir& tmp) {
  Decoder model(family_config(ModelFamily::llama, /*vocab_size=*/1000, /*hidden_size=*/64, /*num_layers=*/2,
                              /*num_heads=*/4, /*num_kv_heads=*/2, /*intermediate_size=*/0, /*max_position=*/64));
  model->init_weights(7);
  save_hf_model(model, tmp / "model");
  std::filesystem::copy_file(fixtures() + "/hf-tiny/tokenizers/spm-bpe.model", tmp / "model/tokenizer.model");
  const auto r = run_fedsplit("data prepare --corpus " + fixtures() + "/hf-tiny/tokenizers/training-text.txt --tokenizer " +
                              (tmp / "model/tokenizer.model") + " --out " + (tmp / "shard.h5") + " --cache " + (tmp / "cache"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
}

std::string eval_line(const std::string& model, const TempDir& tmp) {
  const auto r = run_fedsplit("eval --model " + model + " --data " + (tmp / "shard.h5") +
                              " --seq-len 32 --batch-size 2 --val-fraction 0 --max-batches 3 --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST(CliExport, GgufEvalMatchesHfEval) {
  TempDir tmp("cli_export_eval");
  make_model_and_data(tmp);
  const std::string reference = eval_line(tmp / "model", tmp);
  ASSERT_NE(reference.find("loss "), std::string::npos) << reference;

  auto r = run_fedsplit("export gguf --model " + (tmp / "model") + " --quant f32 --out " + (tmp / "f32"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model.gguf"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;  // the tokenizer was found
  EXPECT_EQ(eval_line(tmp / "f32/model.gguf", tmp), reference);
  EXPECT_EQ(eval_line(tmp / "f32", tmp), reference);

  r = run_fedsplit("export gguf --model " + (tmp / "model") + " --quant f32 --stages 2 --out " + (tmp / "staged"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(tmp / "staged/stage-0.gguf"));
  EXPECT_TRUE(std::filesystem::exists(tmp / "staged/stage-1.gguf"));
  EXPECT_EQ(eval_line(tmp / "staged/manifest.json", tmp), reference);

  write_text(tmp / "plan.json", R"({"stages":[{"layers":[0,1],"device":"cpu"},{"layers":[1,2],"device":"cpu"}]})");
  r = run_fedsplit("export gguf --model " + (tmp / "model") + " --quant q8_0 --plan " + (tmp / "plan.json") + " --out " +
                   (tmp / "planned"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto manifest = load_manifest(tmp / "planned/manifest.json");
  ASSERT_EQ(manifest.stages.size(), 2u);
  EXPECT_EQ(manifest.stages[1].device, "cpu");
  EXPECT_EQ(manifest.quant, "q8_0");
  EXPECT_TRUE(manifest.tokenizer);

  // Back to HF: the same weights as the source (f32 is exact).
  r = run_fedsplit("export hf --model " + (tmp / "f32/model.gguf") + " --out " + (tmp / "hf"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Decoder a = load_hf_model(tmp / "model"), b = load_hf_model(tmp / "hf");
  auto pa = a->named_parameters();
  for (const auto& item : b->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), pa[item.key()])) << item.key();
}

TEST(CliExport, AdapterIsMergedAsPeftMergeDoes) {
  TempDir tmp("cli_export_adapter");
  const std::string llama = fixtures() + "/hf-tiny/llama";
  auto r = run_fedsplit("peft merge --model " + llama + " --adapter " + llama + "/lora --out " + (tmp / "merged"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("export gguf --model " + llama + " --adapter " + llama + "/lora --quant f32 --out " + (tmp / "g"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no tokenizer"), std::string::npos) << r.output;  // the fixture has none: warned
  Decoder merged = load_hf_model(tmp / "merged"), exported = import_gguf(tmp / "g/model.gguf");
  auto pm = merged->named_parameters();
  for (const auto& item : exported->named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), pm[item.key()])) << item.key();
}

TEST(CliExport, BadInputsGiveOneLineErrors) {
  TempDir tmp("cli_export_errors");
  make_model_and_data(tmp);
  const std::string model = tmp / "model";
  struct Case {
    std::string args, expect;
  };
  write_text(tmp / "gap.json", R"({"stages":[{"layers":[0,1]}]})");
  const std::vector<Case> cases = {
      {"export gguf --model " + model + " --quant q5_k --out " + (tmp / "o"), "--quant"},
      {"export gguf --model " + model + " --stages 3 --out " + (tmp / "o"), "--stages 3"},
      {"export gguf --model " + model + " --stages 2 --plan " + (tmp / "gap.json") + " --out " + (tmp / "o"), "not both"},
      {"export gguf --model " + model + " --plan " + (tmp / "gap.json") + " --out " + (tmp / "o"), "gap.json"},
      {"export gguf --model " + model + " --plan " + (tmp / "none.json") + " --out " + (tmp / "o"), "none.json"},
      {"export gguf --model " + (tmp / "missing") + " --out " + (tmp / "o"), "missing"},
      {"export gguf --model " + model, "--out"},
      {"export gguf --model " + fixtures() + "/hf-tiny/gpt2 --out " + (tmp / "o"), "gpt2"},
      {"export gguf --model " + model + " --tokenizer " + (tmp / "nope.model") + " --out " + (tmp / "o"), "--tokenizer"},
      {"export zip --model " + model, "export gguf"},
      {"eval --model " + (tmp / "absent.gguf") + " --data " + (tmp / "shard.h5"), "absent.gguf"},
  };
  for (const auto& c : cases) {
    const auto r = run_fedsplit(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_EQ(lines(r.output), 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "o/manifest.json"));

  // A 4-bit quantization record asks for q4_0.
  Decoder m = load_hf_model(model);
  QuantRecord record;
  record.bits = 4;
  record.group_size = 32;
  record.method = "rtn";
  record.scales["layers.0.mlp.up_proj.weight"] = torch::ones({m->options.intermediate_size, 2});
  save_quant_record(model, record);
  const auto r = run_fedsplit("export gguf --model " + model + " --quant q8_0 --out " + (tmp / "o"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("--quant q4_0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("quantization.safetensors"), std::string::npos) << r.output;
}
