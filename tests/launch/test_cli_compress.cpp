// labels: unit
// Post-training compression through the executable, on a tiny trained llama: run.mode = quantize
// (GPTQ and RTN) writes a model on its recorded grid whose held-out loss is the one reported;
// run.mode = prune holds pruned weights at zero through recovery fine-tuning, which lowers the
// loss; structured pruning shrinks the saved model and LoRA recovery merges into it; bad keys are refused with their name.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "compress/calibration.h"
#include "compress/quant_record.h"
#include "compress/sparsify.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"
#include "train/model_io.h"

using namespace fedsplit::testing;

namespace {

std::string data_section(const TempDir& tmp) {
  return "[data]\ncorpus = " + fixtures() + "/hf-tiny/tokenizers/training-text.txt\ntokenizer = " + fixtures() +
         "/hf-tiny/tokenizers/spm-bpe.model\nseq_len = 32\nbatch_size = 4\nval_fraction = 0.1\ncache_dir = " +
         (tmp / "cache") + "\n\n";
}

std::string run_section(const std::string& mode, const std::string& dir) {
  return "[run]\nmode = " + mode + "\ndir = " + dir + "\nseed = 7\nthreads = 1\ndevice = cpu\n\n";
}

// The job's recipe: compress the tiny base with `section` (e.g. "[quantize]\nmethod = gptq\n").
std::string compress_recipe(const TempDir& tmp, const std::string& mode, const std::string& dir,
                            const std::string& section, const std::string& lr) {
  return run_section(mode, dir) + data_section(tmp) + "[model]\ninit = " + (tmp / "base/model") + "\n\n" + section +
         "\n[train]\nlr = " + lr + "\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\ncheckpoint_every = 0\n";
}

nlohmann::json summary(const std::string& dir) { return nlohmann::json::parse(read_text(dir + "/summary.json")); }

class CliCompress : public SharedDirSuite<CliCompress> {
 public:
  static constexpr const char* kDirName = "cli_compress";
  static void prepare() {
    run_ok(*tmp_, "base",
           run_section("train", *tmp_ / "base") + data_section(*tmp_) +
               "[model]\nhidden_size = 64\nlayers = 2\nheads = 4\nkv_heads = 2\nintermediate_size = 128\n"
               "max_position = 64\n\n[train]\nsteps = 150\nlr = 3e-3\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\n");
  }
  // Runs the compression recipe; its output on failure.
  static fedsplit::testing::CommandResult run_job(const std::string& name, const std::string& mode,
                                                 const std::string& section, const std::string& lr = "1e-4") {
    write_text(*tmp_ / (name + ".ini"), compress_recipe(*tmp_, mode, *tmp_ / name, section, lr));
    return run_fedsplit("run " + (*tmp_ / (name + ".ini")));
  }
};

}  // namespace

TEST_F(CliCompress, GptqAndRtnWriteModelsOnTheirRecordedGrid) {
  for (const std::string method : {"gptq", "rtn"}) {
    const auto r = run_job(method, "quantize", "[quantize]\nmethod = " + method +
                                                   "\nbits = 4\ngroup_size = 32\ncalibration_batches = 4\n\n[export]\ngguf = q4_0\n");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string model_dir = *tmp_ / (method + "/model");
    const auto record = fedsplit::load_quant_record(model_dir);
    ASSERT_TRUE(record.has_value()) << method;
    EXPECT_EQ(record->method, method);
    EXPECT_EQ(record->bits, 4);
    fedsplit::Decoder model = fedsplit::load_any_model(model_dir);
    for (const auto& path : fedsplit::all_block_projection_paths(model))
      EXPECT_NO_THROW(fedsplit::codes_on_grid(path, fedsplit::projection_at(model, path).weight,
                                              record->scales.at(path + ".weight"), 4));
    // The run ended in a GGUF export of exactly the job's codes.
    const auto manifest = nlohmann::json::parse(read_text(*tmp_ / (method + "/gguf/manifest.json")));
    EXPECT_EQ(manifest["quant"], "q4_0");
    EXPECT_EQ(manifest["quant_record"]["method"], method);
    EXPECT_TRUE(fedsplit::path_exists(*tmp_ / (method + "/gguf/model.gguf")));
    const auto s = summary(*tmp_ / method);
    EXPECT_GT(s["val_loss"].get<double>(), 0);
    EXPECT_NE(s["val_loss"].get<double>(), s["base_val_loss"].get<double>());
  }
}

TEST_F(CliCompress, WandaWithRecoveryKeepsTheSparsityAndRecovers) {
  // A fresh AdamW at a small learning rate: 30 steps improve the 80%-pruned model.
  const auto r = run_job("wanda", "prune", "[prune]\nmethod = wanda\nsparsity = 0.8\ncalibration_batches = 4\nrecovery_steps = 30\n");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto s = summary(*tmp_ / "wanda");
  EXPECT_NEAR(s["projection_sparsity"].get<double>(), 0.8, 0.01);  // floor(0.8 * row) per row
  EXPECT_LT(s["pruned_val_loss"].get<double>() - s["base_val_loss"].get<double>(), 2.0);
  EXPECT_LT(s["val_loss"].get<double>(), s["pruned_val_loss"].get<double>());
  fedsplit::Decoder model = fedsplit::load_any_model(*tmp_ / "wanda/model");
  EXPECT_DOUBLE_EQ(fedsplit::projection_sparsity(model), s["projection_sparsity"].get<double>());  // none revived
}

TEST_F(CliCompress, TwoOfFourAndStructuredPruning) {
  auto r = run_job("two-four", "prune", "[prune]\nmethod = magnitude\npattern = 2:4\n");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_DOUBLE_EQ(summary(*tmp_ / "two-four")["projection_sparsity"].get<double>(), 0.5);
  // Structured, then LoRA recovery merged into the smaller model: against the same pruning without
  // recovery, exactly the adapted projections changed.
  const std::string structured = "[prune]\nmethod = wanda\nsparsity = 0\nhead_fraction = 0.5\nchannel_fraction = 0.25\n"
                                 "calibration_batches = 2\n";
  r = run_job("heads", "prune", structured);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_job("heads-lora", "prune",
              structured + "recovery = lora\nrecovery_steps = 10\n\n[peft]\nr = 4\nalpha = 8\ntarget_modules = q_proj down_proj\n",
              "3e-3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  fedsplit::Decoder pruned = fedsplit::load_any_model(*tmp_ / "heads/model");
  fedsplit::Decoder recovered = fedsplit::load_any_model(*tmp_ / "heads-lora/model");
  EXPECT_EQ(pruned->options.num_heads, 2);
  EXPECT_EQ(pruned->options.intermediate_size, 96);
  EXPECT_EQ(summary(*tmp_ / "heads")["parameters"].get<int64_t>(), fedsplit::count_parameters(pruned));
  EXPECT_EQ(summary(*tmp_ / "heads-lora")["recovery"], "lora");
  auto after = recovered->named_parameters();
  ASSERT_EQ(after.size(), pruned->named_parameters().size());  // plain HF parameters, no adapters left
  for (const auto& p : pruned->named_parameters()) {
    const bool adapted = p.key().find("q_proj") != std::string::npos || p.key().find("down_proj") != std::string::npos;
    EXPECT_EQ(torch::equal(p.value(), after[p.key()]), !adapted) << p.key();
  }
}

TEST_F(CliCompress, BadKeysAreNamed) {
  auto r = run_job("bad1", "prune", "[prune]\npattern = 4:2\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("prune.pattern"), std::string::npos) << r.output;
  r = run_job("bad2", "prune", "[prune]\nsparsity = 0\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("nothing to do"), std::string::npos) << r.output;
  r = run_job("bad5", "prune", "[prune]\nrecovery = lora\nrecovery_steps = 5\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("prune.recovery = lora"), std::string::npos) << r.output;
  r = run_job("bad6", "quantize", "[quantize]\nbits = 4\n\n[export]\ngguf = q8_0\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("export.gguf = q8_0"), std::string::npos) << r.output;
  r = run_job("bad7", "quantize", "[quantize]\nbits = 4\ngroup_size = 64\n\n[export]\ngguf = q4_0\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("quantize.group_size = 64"), std::string::npos) << r.output;
  r = run_job("bad3", "quantize", "[quantize]\nbits = 5\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("quantize.bits"), std::string::npos) << r.output;
  write_text(*tmp_ / "bad4.ini", run_section("quantize", *tmp_ / "bad4") + data_section(*tmp_));
  r = run_fedsplit("run " + (*tmp_ / "bad4.ini"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("model.init"), std::string::npos) << r.output;
}
