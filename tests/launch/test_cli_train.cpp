// labels: unit
// End to end through the executable: train a tiny model, stop, resume, and compare with an
// uninterrupted run (bitwise on CPU); evaluate it; and the recipe/run-directory errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/launch/cli_helpers.h"
#include "train/checkpoint.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

// A tiny llama on the fixture's Moby-Dick text with the fixture SentencePiece tokenizer; dropout
// is on so that resuming must restore the RNG too.
std::string tiny_recipe(const TempDir& tmp, const std::string& run_dir) {
  return "[run]\ndir = " + run_dir + "\nseed = 7\nthreads = 1\n\n[data]\ncorpus = " + fixtures() +
         "/hf-tiny/tokenizers/training-text.txt\ntokenizer = " + fixtures() +
         "/hf-tiny/tokenizers/spm-bpe.model\nseq_len = 32\nbatch_size = 4\nval_fraction = 0.1\ncache_dir = " +
         (tmp / "cache") +
         "\n\n[model]\nhidden_size = 32\nlayers = 2\nheads = 4\nkv_heads = 2\nmax_position = 64\ndropout = 0.1\n\n"
         "[train]\nsteps = 12\nlr = 1e-2\nwarmup_steps = 2\neval_every = 4\neval_batches = 2\ncheckpoint_every = 0\n";
}

// The train-step records of a run's metrics.jsonl, as text (exact comparison of every digit).
std::vector<std::string> train_losses(const std::string& run_dir) {
  std::vector<std::string> out;
  std::istringstream in(read_text(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "train") out.push_back(std::to_string(j["step"].get<int>()) + ":" + j["loss"].dump());
  }
  return out;
}

}  // namespace

TEST(CliTrain, ResumedRunEqualsUninterruptedRun) {
  TempDir tmp("cli_train");
  write_text(tmp / "a.ini", tiny_recipe(tmp, tmp / "a"));
  write_text(tmp / "b.ini", tiny_recipe(tmp, tmp / "b"));

  auto r = run_fedsplit("run " + (tmp / "a.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto full = train_losses(tmp / "a");
  ASSERT_EQ(full.size(), 12u);

  r = run_fedsplit("run " + (tmp / "b.ini") + " --run.stop_after=5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(train_losses(tmp / "b").size(), 5u);
  EXPECT_FALSE(std::filesystem::exists(tmp / "b/model")) << "a stopped run must not export a final model";
  r = run_fedsplit("run " + (tmp / "b.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(train_losses(tmp / "b"), full);
  // The loss must fall on this text, or the test would pass for a model that learns nothing.
  const double first = std::stod(full.front().substr(full.front().find(':') + 1));
  const double last = std::stod(full.back().substr(full.back().find(':') + 1));
  EXPECT_LT(last, first - 0.5);
  EXPECT_EQ(read_text(tmp / "a/model/model.safetensors"), read_text(tmp / "b/model/model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(tmp / "b/model/tokenizer.model"));
  EXPECT_TRUE(std::filesystem::exists(tmp / "b/model/config.json"));

  // The exported model and the checkpoint both evaluate, to the same held-out loss.
  const std::string eval_args = " --data " + fixtures() + "/hf-tiny/tokenizers/training-text.txt --seq-len 32 "
                                "--batch-size 4 --val-fraction 0.1 --seed 7 --threads 1 --cache " + (tmp / "cache");
  auto e1 = run_fedsplit("eval --model " + (tmp / "b/model") + eval_args);
  auto e2 = run_fedsplit("eval --model " + (tmp / "b/checkpoint.h5") + eval_args);
  ASSERT_EQ(e1.exit_code, 0) << e1.output;
  ASSERT_EQ(e2.exit_code, 0) << e2.output;
  EXPECT_NE(e1.output.find("perplexity"), std::string::npos);
  EXPECT_EQ(e1.output, e2.output);

  // The same run again without --resume, or a different recipe in its directory, is refused.
  r = run_fedsplit("run " + (tmp / "b.ini"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--resume"), std::string::npos) << r.output;
  r = run_fedsplit("run " + (tmp / "b.ini") + " --train.lr=5e-3");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("holds a different run"), std::string::npos) << r.output;
  EXPECT_EQ(train_losses(tmp / "b"), full) << "a refused run must leave the directory as it was";

  // A truncated checkpoint stops a resume with the file named.
  std::filesystem::resize_file(tmp / "b/checkpoint.h5", 4096);
  r = run_fedsplit("run " + (tmp / "b.ini") + " --resume");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("checkpoint.h5"), std::string::npos) << r.output;
}

TEST(CliTrain, GradientAccumulationRunsEveryMicroBatch) {
  TempDir tmp("cli_accum");
  write_text(tmp / "r.ini", tiny_recipe(tmp, tmp / "run"));
  auto r = run_fedsplit("run " + (tmp / "r.ini") + " --train.grad_accum=3 --train.steps=4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(train_losses(tmp / "run").size(), 4u);
  // 4 steps of 3 micro-batches each: the checkpoint's data position is at batch 12 of epoch 0.
  const auto meta = fedsplit::read_checkpoint_meta(tmp / "run/checkpoint.h5");
  EXPECT_EQ(meta.step, 4);
  EXPECT_EQ(meta.data_epoch, 0);
  EXPECT_EQ(meta.data_index, 12);
}

TEST(CliTrain, RecipeErrorsStopBeforeAnyWork) {
  TempDir tmp("cli_recipe_errors");
  write_text(tmp / "bad.ini", "[train]\nsteps = 5\nlearning_rate = 1e-3\n");
  auto r = run_fedsplit("run " + (tmp / "bad.ini") + " --run.dir=" + (tmp / "run"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("bad.ini:3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train.learning_rate"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "run"));

  r = run_fedsplit("run " + (tmp / "missing.ini"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("missing.ini"), std::string::npos) << r.output;

  r = run_fedsplit("run --model.family=bert");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("llama|qwen2|gpt2"), std::string::npos) << r.output;

  r = run_fedsplit("run --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* key : {"[train]", "warmup_steps", "[data]", "seq_len", "[model]", "kv_heads", "[run]", "seed"})
    EXPECT_NE(r.output.find(key), std::string::npos) << key;
}

TEST(CliTrain, TokenizerThatDoesNotFitTheModel) {
  TempDir tmp("cli_vocab");
  // The fixture llama has 512 ids; the SentencePiece fixture produces up to 1000.
  auto r = run_fedsplit("eval --model " + fixtures() + "/hf-tiny/llama --data " + fixtures() +
                        "/hf-tiny/tokenizers/training-text.txt --tokenizer " + fixtures() +
                        "/hf-tiny/tokenizers/spm-bpe.model --cache " + (tmp / "cache"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("vocab"), std::string::npos) << r.output;
}
