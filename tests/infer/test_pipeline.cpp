// labels: unit
// The engine's pipeline (infer/pipeline*.h, infer/batch_generate.h) on a tiny llama model exported
// in three stages, against the one-stage file of the same model run by GgufRunner:
//   - every stage in one process: logits within 1e-5 (the same computation, cut in three);
//   - three ranks as threads (World::in_process, Gloo): greedy tokens equal, for one sequence
//     (PipelineLm) and for five sequences with two in flight (BatchGenerator), sampled ones too;
//   - bad shard sets end every rank with one line and no hang: a missing, truncated or altered
//     stage file, a stage from another export, a rank count that does not fit, a silent peer
//     (the timeout), a prompt longer than the context.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <chrono>
#include <thread>

#include "compress/gguf_export.h"
#include "compress/gguf_manifest.h"
#include "compress/stage_plan.h"
#include "core/comm/world.h"
#include "core/model/decoder.h"
#include "core/util/error.h"
#include "infer/batch_generate.h"
#include "infer/generate.h"
#include "infer/gguf_runner.h"
#include "infer/pipeline_session.h"
#include "infer/pipeline_shards.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_error;
using fedsplit::testing::read_text;
using fedsplit::testing::TempDir;
using fedsplit::testing::write_text;

Decoder tiny_model() {
  DecoderConfig c = family_config(ModelFamily::llama, 96, 64, 3, 4, 2, 0, 64);
  c.eos_token_ids = {};  // generate the full length, so that every comparison covers every step
  Decoder model(c, /*init=*/false);
  model->init_weights(11);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters())
    if (p.dim() == 2) p.mul_(4);  // logits far from uniform: clear greedy choices
  model->eval();
  return model;
}

// One-stage and three-stage exports of the same model; returns the export directories.
struct Exports {
  std::string whole, staged;
};
Exports export_both(const std::string& dir, GgufQuant quant = GgufQuant::f32) {
  const Decoder model = tiny_model();
  GgufExportOptions options;
  options.quant = quant;
  export_gguf(model, options, dir + "/whole");
  options.stages = balanced_stages(3, 3);
  export_gguf(model, options, dir + "/staged");
  return {dir + "/whole", dir + "/staged"};
}

const std::vector<int64_t> kPrompt{3, 17, 42, 8, 91, 5};

std::vector<int64_t> runner_tokens(const std::string& whole, const std::vector<int64_t>& prompt, GenerateOptions o) {
  GgufRunner runner(whole + "/model.gguf", 1);
  return generate(runner, prompt, o).tokens;
}

PipelineOptions pipeline_options(int64_t slots) {
  PipelineOptions o;
  o.stage.slots = slots;
  return o;
}

// Runs `body(world)` on `ranks` threads of one in-process world; returns each rank's error ("" = none).
template <class F>
std::vector<std::string> on_ranks(const std::string& group, int ranks, F body, double timeout_s = 30) {
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        CommOptions comm;
        comm.timeout_s = timeout_s;
        body(World::in_process(group, r, ranks, comm));
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

TEST(Pipeline, StagesInOneProcessGiveTheWholeModelsLogits) {
  TempDir dir("pipeline_local");
  const Exports e = export_both(dir.path());
  auto world = World::in_process("pipeline-local", 0, 1);
  auto pipeline = open_pipeline(e.staged + "/manifest.json", pipeline_options(1), world);
  PipelineLm staged(*pipeline);
  GgufRunner whole(e.whole + "/model.gguf", 1);
  const auto want = whole.forward(kPrompt), got = staged.forward(kPrompt);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-5);
  staged.reset();
  const auto last = staged.forward_last(kPrompt);  // the last stage sends back one row
  ASSERT_EQ(last.size(0), 1);
  EXPECT_LT((last[0] - want[-1]).abs().max().item<double>(), 1e-5);
  // Then one token from the cache, and again after rolling the last one back.
  EXPECT_LT((staged.forward({7}) - whole.forward({7})).abs().max().item<double>(), 1e-5);
  staged.truncate(kPrompt.size());
  whole.truncate(kPrompt.size());
  EXPECT_LT((staged.forward({9}) - whole.forward({9})).abs().max().item<double>(), 1e-5);
}

TEST(Pipeline, ThreeRanksGenerateTheWholeModelsTokens) {
  TempDir dir("pipeline_ranks");
  const Exports e = export_both(dir.path(), GgufQuant::q8_0);
  GenerateOptions greedy;
  greedy.max_tokens = 12;
  GenerateOptions sampled = greedy;
  sampled.sampling.temperature = 0.9;
  sampled.sampling.top_k = 20;
  const std::vector<std::vector<int64_t>> prompts{kPrompt, {5, 6}, {40, 41, 42, 43}, {1}, {90, 2, 33}};
  std::vector<std::vector<int64_t>> single, batch, batch_sampled;
  const auto errors = on_ranks("pipeline-3", 3, [&](std::shared_ptr<World> world) {
    auto pipeline = open_pipeline(e.staged + "/manifest.json", pipeline_options(2), world);
    if (!pipeline) return;  // ranks 1 and 2 served until rank 0 stopped
    PipelineLm lm(*pipeline);
    single.push_back(generate(lm, kPrompt, greedy).tokens);
    BatchGenerator generator(*pipeline);
    for (size_t i = 0; i < prompts.size(); ++i) generator.add({static_cast<int64_t>(i), prompts[i], greedy});
    for (size_t i = 0; i < prompts.size(); ++i)
      generator.add({static_cast<int64_t>(prompts.size() + i), prompts[i], sampled});
    batch.assign(prompts.size(), {});
    batch_sampled.assign(prompts.size(), {});
    for (auto& r : generator.run_all()) {
      ASSERT_EQ(r.error, "");
      auto& into = r.id < static_cast<int64_t>(prompts.size()) ? batch : batch_sampled;
      into[static_cast<size_t>(r.id) % prompts.size()] = r.generation.tokens;
    }
    pipeline->stop();
  });
  for (const auto& error : errors) EXPECT_EQ(error, "");
  ASSERT_EQ(single.size(), 1u);
  EXPECT_EQ(single[0], runner_tokens(e.whole, kPrompt, greedy));
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(batch[i], runner_tokens(e.whole, prompts[i], greedy)) << "prompt " << i;
    // Sampling: each sequence has its own sampler, so interleaving does not change its draws.
    EXPECT_EQ(batch_sampled[i], runner_tokens(e.whole, prompts[i], sampled)) << "prompt " << i;
  }
}

TEST(Pipeline, BadShardSetsAreRefusedOnEveryRank) {
  TempDir dir("pipeline_bad");
  const Exports e = export_both(dir.path());
  const std::string manifest = e.staged + "/manifest.json";
  const GgufManifest m = load_manifest(manifest);
  expect_error<ConfigError>([&] { check_rank_count(m, manifest, 2); }, {"3 stages", "2 ranks", "mpirun -np 3"});
  check_rank_count(m, manifest, 1);
  check_rank_count(m, manifest, 3);

  namespace sfs = std::filesystem;
  const std::string stage1 = e.staged + "/stage-1.gguf";
  sfs::rename(stage1, stage1 + ".away");
  expect_error<IoError>([&] { open_manifest_stage(m, manifest, 1, {}); }, {"stage-1.gguf", "missing", "copy every stage"});
  // On three ranks, the missing shard of rank 1 ends all three with the same line.
  const auto errors = on_ranks("pipeline-missing", 3, [&](std::shared_ptr<World> world) {
    open_pipeline(manifest, pipeline_options(1), world);
  });
  for (const auto& error : errors) {
    EXPECT_NE(error.find("rank 1: "), std::string::npos) << error;
    EXPECT_NE(error.find("missing"), std::string::npos) << error;
  }
  sfs::rename(stage1 + ".away", stage1);

  // One byte altered: the size holds, the hash does not.
  const std::string bytes = read_text(stage1);
  std::string altered = bytes;
  altered[altered.size() - 3] ^= 1;
  write_text(stage1, altered);
  expect_error<DataError>([&] { open_manifest_stage(m, manifest, 1, {}); }, {"stage-1.gguf", "BLAKE2b"});
  write_text(stage1, bytes.substr(0, bytes.size() - 32));
  expect_error<DataError>([&] { open_manifest_stage(m, manifest, 1, {}); }, {"stage-1.gguf", "bytes", "truncated"});

  // A stage of another export of the same shapes (its hash is recorded in neither manifest's favour,
  // so the hash check is skipped to reach the export check).
  const Exports other = export_both(dir / "other");
  sfs::copy_file(other.staged + "/stage-1.gguf", stage1, sfs::copy_options::overwrite_existing);
  expect_error<DataError>([&] { open_manifest_stage(m, manifest, 1, {}, /*verify_hash=*/false); },
                          {"stage-1.gguf", "belongs to export", "different exports"});
}

TEST(Pipeline, ASilentPeerAndAnOverlongPromptEndWithAnError) {
  TempDir dir("pipeline_silent");
  const Exports e = export_both(dir.path());
  // Rank 1 opens nothing: rank 0 waits for its status no longer than the timeout.
  const auto errors = on_ranks(
      "pipeline-silent", 2,
      [&](std::shared_ptr<World> world) {
        if (world->rank() == 0) open_pipeline(e.whole + "/manifest.json", pipeline_options(1), world);
      },
      /*timeout_s=*/1);
  EXPECT_NE(errors[0].find("ranks were started"), std::string::npos) << errors[0];  // 1 stage, 2 ranks
  // Rank 2 joins but never answers: ranks 0 and 1 give up after the 1 s timeout.
  const auto started = std::chrono::steady_clock::now();
  const auto silent = on_ranks(
      "pipeline-silent-3", 3,
      [&](std::shared_ptr<World> world) {
        if (world->rank() == 2) std::this_thread::sleep_for(std::chrono::milliseconds(3500));
        else open_pipeline(e.staged + "/manifest.json", pipeline_options(1), world);
      },
      /*timeout_s=*/1);
  EXPECT_NE(silent[0].find("rank 0: recv"), std::string::npos) << silent[0];
  EXPECT_NE(silent[0].find("from rank 2"), std::string::npos) << silent[0];
  EXPECT_NE(silent[1].find("timeout"), std::string::npos) << silent[1];
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), 10.0);

  auto world = World::in_process("pipeline-long", 0, 1);
  PipelineOptions options = pipeline_options(1);
  options.stage.context = 8;
  auto pipeline = open_pipeline(e.staged + "/manifest.json", options, world);
  PipelineLm lm(*pipeline);
  GenerateOptions o;
  o.max_tokens = 4;
  expect_error<DataError>([&] { generate(lm, kPrompt, o); }, {"exceed the context of 8"});
  BatchGenerator generator(*pipeline);
  generator.add({0, kPrompt, o});
  const auto results = generator.run_all();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_NE(results[0].error.find("context of 8"), std::string::npos);
}

}  // namespace
}  // namespace fedsplit
