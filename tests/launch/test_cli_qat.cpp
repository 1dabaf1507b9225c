// labels: unit
// Quantization-aware training through the executable (run.mode = qat): a tiny trained llama
// fine-tuned with int4 (group 32) fake-quantized projections. The saved model sits on its recorded
// grid (method qat, 4 bits, group 32); its held-out loss is no worse than RTN of the initial model
// plus a small slack; activation quantization runs too; bad keys are refused naming the key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "compress/quant_record.h"
#include "core/model/hf.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

std::string data_section(const TempDir& tmp) {
  return "[data]\ncorpus = " + fixtures() + "/hf-tiny/tokenizers/training-text.txt\ntokenizer = " + fixtures() +
         "/hf-tiny/tokenizers/spm-bpe.model\nseq_len = 32\nbatch_size = 4\nval_fraction = 0.1\ncache_dir = " +
         (tmp / "cache") + "\n\n";
}

std::string base_recipe(const TempDir& tmp) {
  return "[run]\ndir = " + (tmp / "base") + "\nseed = 7\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
         "[model]\nhidden_size = 32\nlayers = 2\nheads = 4\nkv_heads = 2\nmax_position = 64\n\n"
         "[train]\nsteps = 60\nlr = 1e-2\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\n";
}

std::string qat_recipe(const TempDir& tmp, const std::string& run_dir) {
  return "[run]\nmode = qat\ndir = " + run_dir + "\nseed = 3\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
         "[model]\ninit = " + (tmp / "base/model") + "\n\n[qat]\nbits = 4\ngroup_size = 32\n\n"
         "[train]\nsteps = 30\nlr = 2e-3\nwarmup_steps = 2\nweight_decay = 0\neval_every = 0\neval_batches = 2\n"
         "checkpoint_every = 0\n";
}

class CliQat : public SharedDirSuite<CliQat> {
 public:
  static constexpr const char* kDirName = "cli_qat";
  static void prepare() {
    run_ok(*tmp_, "base", base_recipe(*tmp_));
  }
};

}  // namespace

TEST_F(CliQat, Int4QatBeatsRtnAndSavesItsGrid) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "q.ini", qat_recipe(tmp, tmp / "q"));
  const auto r = run_fedsplit("run " + (tmp / "q.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto s = nlohmann::json::parse(read_text(tmp / "q/summary.json"));
  // RTN int4 costs the initial model some held-out loss; QAT fine-tunes toward the grid. The slack
  // (0.01 nats) only covers a run where RTN happens to cost nothing.
  EXPECT_LE(s["val_loss"].get<double>(), s["rtn_val_loss"].get<double>() + 0.01) << s.dump(2);
  // Weights only: the saved model computes what training evaluated (fake quantization = RTN grid).
  EXPECT_NEAR(s["val_loss"].get<double>(), s["qat_val_loss"].get<double>(), 1e-4) << s.dump(2);
  EXPECT_EQ(s["bits"], 4);
  EXPECT_EQ(s["group_size"], 32);

  const auto record = fedsplit::load_quant_record(tmp / "q/model");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->bits, 4);
  EXPECT_EQ(record->group_size, 32);
  EXPECT_EQ(record->method, "qat");
  EXPECT_EQ(record->scales.size(), 14u);  // 2 layers x 7 projections
  const auto model = fedsplit::load_hf_model(tmp / "q/model");
  const auto params = model->named_parameters();
  for (const auto& [name, scales] : record->scales) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(params.contains(name));
    EXPECT_NO_THROW(fedsplit::codes_on_grid(name, params[name], scales, 4));
  }
  EXPECT_TRUE(std::filesystem::exists(tmp / "q/model/tokenizer.model"));
}

TEST_F(CliQat, ActivationQuantizationAndATeacherRun) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "a.ini", qat_recipe(tmp, tmp / "a"));
  const auto r = run_fedsplit("run " + (tmp / "a.ini") + " --train.steps=10 --qat.bits=8 --qat.activation_bits=8 "
                              "--distill.teacher=" + (tmp / "base/model") + " --distill.alpha=0.5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto s = nlohmann::json::parse(read_text(tmp / "a/summary.json"));
  EXPECT_EQ(s["activation_bits"], 8);
  EXPECT_EQ(s["teacher"], tmp / "base/model");
  // int8 weights cost next to nothing: no worse than the initial fp32 model plus 0.05 nats (the
  // model trained with int8 activations and is evaluated without them).
  EXPECT_LE(s["val_loss"].get<double>(), s["init_val_loss"].get<double>() + 0.05) << s.dump(2);
  const auto record = fedsplit::load_quant_record(tmp / "a/model");
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->bits, 8);
}

TEST_F(CliQat, BadKeysAreRefused) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "e.ini", qat_recipe(tmp, tmp / "e"));
  const std::string run = "run " + (tmp / "e.ini") + " ";
  struct Case {
    std::string flags, needle;
  };
  // A recipe without model.init.
  std::string no_init = qat_recipe(tmp, tmp / "e");
  const std::string init_line = "init = " + (tmp / "base/model") + "\n";
  no_init.erase(no_init.find(init_line), init_line.size());
  write_text(tmp / "no_init.ini", no_init);
  auto r = run_fedsplit("run " + (tmp / "no_init.ini"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("set model.init"), std::string::npos) << r.output;

  const std::vector<Case> cases = {
      {"--qat.group_size=48", "qat.group_size = 48"},
      {"--qat.bits=6", "qat.bits = 6"},
      {"--qat.bits=16", "qat.bits"},
      {"--qat.activation_bits=4", "qat.activation_bits"},
      {"--peft.method=lora", "peft.method = none"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.flags);
    const auto r = run_fedsplit(run + c.flags);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
  }
}
