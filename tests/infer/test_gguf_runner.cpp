// labels: unit
// The engine's GGUF runner (infer/gguf_runner.h) against the fp32 PyTorch path (Decoder) on tiny
// llama and qwen2 models exported by compress/:
//   - f32 files: logits within 1e-4 of the Decoder's, and greedy generation token for token;
//   - q8_0 / q4_0 files: logits within a relative L2 of 2% / 5% of the dequantized model's (the
//     activation is rounded to 8 bits per block of 32, as llama.cpp does);
//   - the KV cache: a prompt followed by one token at a time gives the logits of one whole pass
//     (1e-5); reset starts over; overflowing the context is refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/gguf_export.h"
#include "compress/gguf_import.h"
#include "core/model/decoder.h"
#include "core/util/error.h"
#include "infer/gguf_runner.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_error;
using fedsplit::testing::TempDir;

Decoder tiny(ModelFamily family) {
  DecoderConfig c = family_config(family, 96, 64, 2, 4, 2, 0, 64);
  Decoder model(c, /*init=*/false);
  model->init_weights(5);
  // Larger weights than init's, so that the logits are far from uniform and greedy choices clear.
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters())
    if (p.dim() == 2) p.mul_(4);
  model->eval();
  return model;
}

std::string exported(const Decoder& model, GgufQuant quant, const TempDir& dir, const std::string& name) {
  GgufExportOptions options;
  options.quant = quant;
  export_gguf(model, options, dir / name);
  return dir / (name + "/model.gguf");
}

const std::vector<int64_t> kPrompt{3, 17, 42, 8, 91, 5, 60, 23};

torch::Tensor decoder_logits(Decoder& model, const std::vector<int64_t>& ids) {
  torch::NoGradGuard no_grad;
  return model->forward(torch::tensor(ids).unsqueeze(0))[0];
}

double relative_l2(const torch::Tensor& got, const torch::Tensor& want) {
  return ((got - want).norm() / want.norm()).item<double>();
}

TEST(GgufRunner, F32FileMatchesTheDecoderAndItsGreedyTokens) {
  TempDir dir("gguf_runner_f32");
  for (const auto family : {ModelFamily::llama, ModelFamily::qwen2}) {
    SCOPED_TRACE(to_string(family));
    Decoder model = tiny(family);
    GgufRunner runner(exported(model, GgufQuant::f32, dir, to_string(family)), 1);
    EXPECT_EQ(runner.architecture(), to_string(family));
    const auto logits = runner.forward(kPrompt);
    EXPECT_LE((logits - decoder_logits(model, kPrompt)).abs().max().item<double>(), 1e-4);
    // Greedy: the runner with its cache against the Decoder re-reading the whole sequence.
    std::vector<int64_t> ours = kPrompt, reference = kPrompt;
    int64_t next = logits[-1].argmax().item<int64_t>();
    for (int step = 0; step < 16; ++step) {
      ours.push_back(next);
      next = runner.forward({next})[0].argmax().item<int64_t>();
      reference.push_back(decoder_logits(model, reference)[-1].argmax().item<int64_t>());
    }
    EXPECT_EQ(ours, reference);
  }
}

TEST(GgufRunner, QuantizedFilesStayNearTheDequantizedModel) {
  TempDir dir("gguf_runner_quant");
  for (const auto& [quant, tolerance] : {std::pair{GgufQuant::q8_0, 0.02}, std::pair{GgufQuant::q4_0, 0.05}}) {
    SCOPED_TRACE(to_string(quant));
    const std::string path = exported(tiny(ModelFamily::llama), quant, dir, to_string(quant));
    Decoder dequantized = import_gguf(path);
    dequantized->eval();
    GgufRunner runner(path, 2);
    const double error = relative_l2(runner.forward(kPrompt), decoder_logits(dequantized, kPrompt));
    EXPECT_LT(error, tolerance);
    EXPECT_GT(error, 0.0) << "the activation rounding shows";
  }
}

TEST(GgufRunner, CachedStepsEqualOnePassAndTheContextIsEnforced) {
  TempDir dir("gguf_runner_cache");
  for (const auto family : {ModelFamily::llama, ModelFamily::qwen2}) {
    SCOPED_TRACE(to_string(family));
    const std::string path = exported(tiny(family), GgufQuant::q8_0, dir, to_string(family));
    GgufRunner runner(path, 1, /*context=*/12);
    const auto whole = runner.forward(kPrompt);
    runner.reset();
    std::vector<torch::Tensor> parts{runner.forward({kPrompt.begin(), kPrompt.begin() + 5})};
    for (size_t i = 5; i < kPrompt.size(); ++i) parts.push_back(runner.forward({kPrompt[i]}));
    EXPECT_LE((torch::cat(parts) - whole).abs().max().item<double>(), 1e-5);
    EXPECT_EQ(runner.position(), 8);
    // A prompt's pass with only the last row's logits: that row, and the same cache after it.
    runner.reset();
    const auto last = runner.forward_last(kPrompt);
    ASSERT_EQ(last.size(0), 1);
    EXPECT_LE((last[0] - whole[-1]).abs().max().item<double>(), 1e-5);
    EXPECT_EQ(runner.position(), 8);
    expect_error<DataError>([&] { runner.forward({1, 2, 3, 4, 5}); }, {"13 tokens", "context of 12"});
    expect_error<DataError>([&] { runner.forward({500}); }, {"500", "vocabulary"});
  }
}

}  // namespace
}  // namespace fedsplit
