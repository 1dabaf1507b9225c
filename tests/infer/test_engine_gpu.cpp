// labels: gpu
// The engine on CUDA (weights dequantized to fp32 on the device, LibTorch ops) against the CPU
// engine on tiny llama files: the one-stage runner's logits within 1e-4 and its greedy tokens
// equal; the pipeline of a 3-stage export in one process the same; captured CUDA graphs of the
// decode step equal the op-by-op steps; with two or three GPUs, `mpirun -np 2|3 fedsplit serve
// --device cuda` over NCCL answers as the CPU does. Skips without CUDA.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "compress/gguf_export.h"
#include "compress/stage_plan.h"
#include "core/comm/world.h"
#include "core/model/decoder.h"
#include "infer/cuda_graph.h"
#include "infer/generate.h"
#include "infer/gguf_runner.h"
#include "infer/pipeline_session.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::TempDir;

std::string export_model(const std::string& dir, int64_t stages, GgufQuant quant, int64_t vocab = 96,
                         ModelFamily family = ModelFamily::llama) {
  DecoderConfig c = family_config(family, vocab, 64, 3, 4, 2, 0, 64);
  c.eos_token_ids = {};
  Decoder model(c, /*init=*/false);
  model->init_weights(11);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters())
    if (p.dim() == 2) p.mul_(4);
  GgufExportOptions options;
  options.quant = quant;
  if (stages > 1) options.stages = balanced_stages(3, stages);
  export_gguf(model, options, dir);
  return dir;
}

const std::vector<int64_t> kPrompt{3, 17, 42, 8, 91, 5};

TEST(EngineGpu, CudaMatchesTheCpuEngine) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs CUDA";
  TempDir dir("engine_gpu");
  GenerateOptions greedy;
  greedy.max_tokens = 16;
  const std::string f32 = export_model(dir / "f32", 1, GgufQuant::f32) + "/model.gguf";
  GgufRunner cpu(f32, 1), cuda(f32, 1, 0, torch::kCUDA);
  EXPECT_LT((cpu.forward(kPrompt) - cuda.forward(kPrompt)).abs().max().item<double>(), 1e-4);
  EXPECT_EQ(generate(cuda, kPrompt, greedy).tokens, generate(cpu, kPrompt, greedy).tokens);

  // Q8_0 on the CPU rounds the activations to 8 bits as llama.cpp does; CUDA multiplies the
  // dequantized weights in fp32, so the two differ by that rounding (2% relative L2).
  const std::string q8 = export_model(dir / "q8", 1, GgufQuant::q8_0) + "/model.gguf";
  GgufRunner cpu8(q8, 1), cuda8(q8, 1, 0, torch::kCUDA);
  const auto a = cpu8.forward(kPrompt), b = cuda8.forward(kPrompt);
  EXPECT_LT(((a - b).norm() / a.norm()).item<double>(), 0.02);

  const std::string staged = export_model(dir / "staged", 3, GgufQuant::f32) + "/manifest.json";
  PipelineOptions options;
  options.device = "cuda";
  auto pipeline = open_pipeline(staged, options, World::in_process("engine-gpu", 0, 1));
  PipelineLm lm(*pipeline);
  cpu.reset();
  EXPECT_LT((lm.forward(kPrompt) - cpu.forward(kPrompt)).abs().max().item<double>(), 1e-4);
  EXPECT_LT((lm.forward({7}) - cpu.forward({7})).abs().max().item<double>(), 1e-4);  // a graph's step
}

// One-token steps replayed from captured graphs (attention over the whole cache, later positions
// masked) against the same steps launched op by op: the same logits up to the softmax's summation
// order (1e-4), the same greedy tokens, and again after a rollback leaves stale cache entries; for
// llama and qwen2 (whose op-by-op prompt also equals the CPU engine's).
TEST(EngineGpu, CapturedDecodeStepsEqualEagerOnes) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs CUDA";
  if (!CapturedGraph::available()) GTEST_SKIP() << "this build's LibTorch has no CUDA graphs";
  TempDir dir("engine_gpu_graphs");
  for (const auto family : {ModelFamily::llama, ModelFamily::qwen2}) {  // both RoPE layouts
    SCOPED_TRACE(to_string(family));
    const std::string file = export_model(dir / to_string(family), 1, GgufQuant::f32, 96, family) + "/model.gguf";
    StageOptions options;
    options.device = torch::kCUDA;
    options.context = 40;
    GgufRunner graphs(file, options);
    options.cuda_graphs = false;
    GgufRunner eager(file, options);
    GgufRunner cpu(file, 1, 40);
    EXPECT_LT((eager.forward(kPrompt) - cpu.forward(kPrompt)).abs().max().item<double>(), 1e-4);
    eager.reset();
    auto a = graphs.forward_last(kPrompt)[0], b = eager.forward_last(kPrompt)[0];
    for (int step = 0; step < 12; ++step) {
      ASSERT_LT((a - b).abs().max().item<double>(), 1e-4) << "step " << step;
      const int64_t next = b.argmax().item<int64_t>();
      ASSERT_EQ(a.argmax().item<int64_t>(), next) << "step " << step;
      a = graphs.forward({next})[0], b = eager.forward({next})[0];
    }
    graphs.truncate(8);
    eager.truncate(8);
    EXPECT_LT((graphs.forward({5}) - eager.forward({5})).abs().max().item<double>(), 1e-4);
  }
}

// Several sequences in flight (the host queues each stage's steps ahead of its GPU, and the last
// stage answers over a world of its own): every answer equals the CPU's, in order, for 2 stages and,
// where there are GPUs enough, 3.
TEST(EngineGpu, NcclRanksServeAsTheCpu) {
  if (torch::cuda::device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  if (!fedsplit::testing::have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  TempDir dir("engine_gpu_nccl");
  std::string prompts;
  for (const char* p : {"a", "the people", "of the union", "b c", "justice", "we the people of"})
    prompts += std::string("{\"prompt\": \"") + p + "\"}\n";
  fedsplit::testing::write_text(dir / "prompts.txt", prompts);
  // The fixture tokenizer has 1000 pieces, as many as the model's vocabulary.
  const std::string tokenizer = fedsplit::testing::fixtures() + "/hf-tiny/tokenizers/spm-bpe.model";
  // The answers' ids and completions (mpirun's ranks also print a "comm:" line first).
  auto completions = [](const std::string& out) {
    std::vector<std::string> answers;
    for (const auto& answer : fedsplit::testing::json_lines(out))
      answers.push_back(answer.at("id").dump() + " " + answer.at("completion").get<std::string>());
    return answers;
  };
  for (int64_t stages = 2; stages <= std::min<int64_t>(3, torch::cuda::device_count()); ++stages) {
    SCOPED_TRACE(std::to_string(stages) + " stages");
    const std::string manifest =
        export_model(dir / ("staged" + std::to_string(stages)), stages, GgufQuant::f32, 1000) + "/manifest.json";
    const std::string serve = std::string("'") + FEDSPLIT_BINARY + "' serve --manifest " + manifest +
                              " --tokenizer " + tokenizer + " --max-tokens 8 --micro-batches 3 < " +
                              (dir / "prompts.txt");
    const auto cpu = fedsplit::testing::run_command(serve + " 2>&1");
    const auto nccl = fedsplit::testing::run_command("timeout 300 mpirun --allow-run-as-root --oversubscribe -np " +
                                                     std::to_string(stages) + " -x LD_LIBRARY_PATH " + serve +
                                                     " --device cuda 2>/dev/null");
    ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
    ASSERT_EQ(nccl.exit_code, 0) << nccl.output;
    ASSERT_NE(cpu.output.find("\"new_tokens\":8"), std::string::npos) << cpu.output;
    ASSERT_EQ(completions(cpu.output).size(), 6u) << cpu.output;
    EXPECT_EQ(completions(nccl.output), completions(cpu.output));
  }
}

}  // namespace
}  // namespace fedsplit
