// labels: slow
// llama.cpp reads our GGUF files: a tiny llama with a SentencePiece vocabulary is exported as f32,
// q8_0 and q4_0 and loaded by llama.cpp's prebuilt CPU library (node-llama-cpp, fetched by
// scripts/fetch-llama-cpp; needs Node.js and, the first time, the npm registry). For each file
// llama.cpp's raw logits at every prompt position are compared with those of our dequantized import
// of the same file, its greedy continuation with ours, and its tokenization of a text (from our
// tokenizer.ggml.* metadata) with our SentencePiece tokenizer's:
//   f32:  logits within 5e-3 relative L2 (llama.cpp keeps its KV cache in f16 by default, which
//         alone gives ~1e-3), greedy tokens equal up to a near-tie (where llama.cpp's choice is
//         within 0.05 of our best logit; from there the continuations may differ);
//   q8_0, q4_0: llama.cpp quantizes activations to 8 bits for these matmuls, so logits agree
//         only to 5e-2 (q8_0) / 1e-1 (q4_0) relative L2; greedy tokens are printed, not required equal.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "compress/gguf_export.h"
#include "compress/gguf_import.h"
#include "core/model/hf.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using testing::fixtures;

const std::string kSource = FEDSPLIT_SOURCE_DIR;

std::vector<int64_t> greedy(Decoder& model, std::vector<int64_t> ids, int steps) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> out;
  for (int i = 0; i < steps; ++i) {
    const auto logits = model->forward(torch::tensor(ids, torch::kLong).view({1, -1}));
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    ids.push_back(next);
  }
  return out;
}

// The first step where `theirs` leaves `mine`, or -1; fails unless our logits there make it a near-tie
// (their token within `margin` of our best), after which the two continuations may differ legitimately.
int64_t check_greedy(Decoder& model, std::vector<int64_t> ids, const std::vector<int64_t>& mine,
                     const std::vector<int64_t>& theirs, double margin) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < mine.size() && i < theirs.size(); ++i) {
    if (mine[i] != theirs[i]) {
      const auto logits = model->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0][-1];
      const double gap = (logits[mine[i]] - logits[theirs[i]]).item<double>();
      EXPECT_LE(gap, margin) << "step " << i << ": llama.cpp chose " << theirs[i] << ", we chose " << mine[i];
      std::cout << "  greedy paths part at step " << i << " on a near-tie (logit gap " << gap << ")\n";
      return static_cast<int64_t>(i);
    }
    ids.push_back(mine[i]);
  }
  EXPECT_EQ(mine.size(), theirs.size());
  return -1;
}

// llama with the SentencePiece fixture (tokenizer.ggml.model "llama"), qwen2 (q/k/v biases, tied
// head, NeoX RoPE) with the byte-level BPE fixture ("gpt2").
class LlamaCpp : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaCpp, LoadsOurGgufAndAgreesWithOurImport) {
  if (!testing::have_command("node")) GTEST_SKIP() << "node (Node.js >= 18) is not installed";
  const auto fetch = testing::run_command("'" + kSource + "/scripts/fetch-llama-cpp' 2>&1");
  ASSERT_EQ(fetch.exit_code, 0) << "scripts/fetch-llama-cpp failed (offline?):\n" << fetch.output;

  const bool qwen2 = GetParam() == "qwen2";
  testing::TempDir tmp("llama_cpp_load_" + GetParam());
  DecoderConfig config = family_config(qwen2 ? ModelFamily::qwen2 : ModelFamily::llama, /*vocab_size=*/1000,
                                       /*hidden_size=*/64, /*num_layers=*/2, /*num_heads=*/4, /*num_kv_heads=*/2,
                                       /*intermediate_size=*/0, /*max_position=*/64);
  config.initializer_range = 0.25;  // peaked logits, so that greedy choices are not near-ties
  if (!qwen2) {
    config.bos_token_id = 1;
    config.eos_token_ids = {2};
  }
  Decoder model(config);
  model->init_weights(5);
  if (qwen2) {  // non-zero biases, so that their layout is checked too
    torch::NoGradGuard no_grad;
    torch::manual_seed(5);
    for (auto& item : model->named_parameters())
      if (item.key().find("_proj.bias") != std::string::npos) item.value().normal_(0, 0.5);
  }
  const std::string tokenizer =
      fixtures() + (qwen2 ? "/hf-tiny/tokenizers/bpe-bytelevel.json" : "/hf-tiny/tokenizers/spm-bpe.model");
  std::vector<int64_t> prompt = {qwen2 ? 0 : 1};
  for (int32_t id : load_tokenizer(tokenizer)->encode("Call me Ishmael. Some years ago")) prompt.push_back(id);
  std::string ids_arg;
  for (auto id : prompt) ids_arg += (ids_arg.empty() ? "" : ",") + std::to_string(id);

  for (GgufQuant quant : {GgufQuant::f32, GgufQuant::q8_0, GgufQuant::q4_0}) {
    const std::string out = tmp / to_string(quant);
    GgufExportOptions o;
    o.quant = quant;
    o.tokenizer = tokenizer;
    o.name = "fedsplit-tiny";
    export_gguf(model, o, out);
    const auto r = testing::run_command("node '" + kSource + "/bench/compress/llama_cpp_load.mjs' --model '" + out +
                                        "/model.gguf' --ids " + ids_arg + " --n 8 --logits --text 'Call me Ishmael.' " +
                                        "--llama-cpp '" + kSource + "/.cache/llama-cpp' 2>" + out + "/stderr.txt");
    ASSERT_EQ(r.exit_code, 0) << to_string(quant) << ": " << r.output << testing::read_text(out + "/stderr.txt");
    const auto j = nlohmann::json::parse(r.output.substr(r.output.rfind("{\"model\"")));
    Decoder ours = import_gguf(out + "/model.gguf");
    torch::NoGradGuard no_grad;
    const auto ref = ours->forward(torch::tensor(prompt, torch::kLong).view({1, -1}))[0];
    std::vector<float> flat;
    for (const auto& row : j.at("logits"))
      for (const auto& v : row) flat.push_back(v.get<float>());
    const auto theirs = torch::tensor(flat).view({-1, ref.size(1)});
    ASSERT_EQ(theirs.sizes(), ref.sizes());
    const double abs_err = (theirs - ref).abs().max().item<double>();
    const double rel_err = ((theirs - ref).norm() / ref.norm()).item<double>();
    const auto mine = greedy(ours, prompt, 8);
    const auto llama = j.at("greedy").get<std::vector<int64_t>>();
    std::cout << "[ llama.cpp " << GetParam() << " " << to_string(quant) << " ] logits max abs diff " << abs_err << ", relative L2 " << rel_err
              << "; greedy llama.cpp " << nlohmann::json(llama).dump() << " ours " << nlohmann::json(mine).dump()
              << "; prompt perplexity " << j.at("perplexity") << "; text " << j.at("text").dump() << "\n";
    // llama.cpp's tokenizer, built from our tokenizer.ggml.* metadata, splits text as ours does.
    std::vector<int64_t> encoded;
    for (int32_t id : load_tokenizer(tokenizer)->encode("Call me Ishmael.")) encoded.push_back(id);
    // (qwen2: llama.cpp's default pre-tokenizer, as tokenizer.ggml.pre is not written, may split otherwise.)
    if (!qwen2) EXPECT_EQ(j.at("text").at("ids").get<std::vector<int64_t>>(), encoded);
    if (quant == GgufQuant::f32) {
      EXPECT_LE(rel_err, 5e-3);
      check_greedy(ours, prompt, mine, llama, 0.05);
    } else {
      EXPECT_LE(rel_err, quant == GgufQuant::q8_0 ? 5e-2 : 1e-1);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, LlamaCpp, ::testing::Values("llama", "qwen2"));

}  // namespace
}  // namespace fedsplit
