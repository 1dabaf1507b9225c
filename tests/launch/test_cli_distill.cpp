// labels: unit
// Distillation through the executable (run.mode = distill): a tiny 4-layer teacher trained for a few
// steps, then a 2-layer student cut from it (student_init = teacher) trained on its soft targets
// with hidden-state matching. The held-out KL(teacher || student) falls; the student lands in
// <run.dir>/model and its hidden projections are checkpointed; a stopped run resumes bit for bit;
// bad keys are refused with one line naming them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "core/io/hdf5.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

std::string data_section(const TempDir& tmp) {
  return "[data]\ncorpus = " + fixtures() + "/hf-tiny/tokenizers/training-text.txt\ntokenizer = " + fixtures() +
         "/hf-tiny/tokenizers/spm-bpe.model\nseq_len = 32\nbatch_size = 4\nval_fraction = 0.1\ncache_dir = " +
         (tmp / "cache") + "\n\n";
}

std::string teacher_recipe(const TempDir& tmp) {
  return "[run]\ndir = " + (tmp / "teacher") + "\nseed = 7\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
         "[model]\nhidden_size = 32\nlayers = 4\nheads = 4\nkv_heads = 2\nmax_position = 64\n\n"
         "[train]\nsteps = 60\nlr = 1e-2\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\n";
}

std::string distill_recipe(const TempDir& tmp, const std::string& run_dir) {
  return "[run]\nmode = distill\ndir = " + run_dir + "\nseed = 3\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
         "[distill]\nteacher = " + (tmp / "teacher/model") +
         "\nstudent_init = teacher\nstudent_layers = 2\nalpha = 0.9\ntemperature = 2\nhidden_weight = 0.5\n\n"
         "[train]\nsteps = 24\nlr = 5e-3\nwarmup_steps = 2\nweight_decay = 0\neval_every = 12\neval_batches = 2\n"
         "checkpoint_every = 0\n";
}

std::vector<std::string> train_losses(const std::string& run_dir) {
  std::vector<std::string> out;
  std::istringstream in(read_text(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == "train") out.push_back(j["loss"].dump());
  }
  return out;
}

int count_lines_with(const std::string& text, const std::string& needle) {
  int n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
  return n;
}

class CliDistill : public SharedDirSuite<CliDistill> {
 public:
  static constexpr const char* kDirName = "cli_distill";
  static void prepare() {
    run_ok(*tmp_, "teacher", teacher_recipe(*tmp_));
  }
};

}  // namespace

TEST_F(CliDistill, StudentFromTeacherMovesTowardTheTeacher) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "d.ini", distill_recipe(tmp, tmp / "d"));
  const auto r = run_fedsplit("run " + (tmp / "d.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto s = nlohmann::json::parse(read_text(tmp / "d/summary.json"));
  // Measured on the same held-out batches before and after: KL(teacher || student) must fall.
  EXPECT_LT(s["teacher_student_kl"].get<double>(), s["teacher_student_kl_init"].get<double>()) << s.dump(2);
  EXPECT_LT(s["val_loss"].get<double>(), s["student_init_val_loss"].get<double>()) << s.dump(2);
  EXPECT_EQ(s["student_layers"], 2);
  EXPECT_EQ(s["teacher_layers"], 4);
  EXPECT_LT(s["parameters"].get<int64_t>(), s["teacher_parameters"].get<int64_t>());
  EXPECT_EQ(s["hidden_projection_parameters"], 2 * (32 * 32 + 32));  // pairs 0:1 and 1:3, 32 -> 32
  // The student is a 2-layer HF model with its tokenizer.
  const auto config = nlohmann::json::parse(read_text(tmp / "d/model/config.json"));
  EXPECT_EQ(config["num_hidden_layers"], 2);
  EXPECT_TRUE(std::filesystem::exists(tmp / "d/model/tokenizer.model"));
  // The hidden projections train and are checkpointed beside the student's parameters.
  const auto names = fedsplit::h5::Group::open_file(tmp / "d/checkpoint.h5").group("model").children();
  EXPECT_EQ(std::count(names.begin(), names.end(), "distill_hidden.proj.1.weight"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "layers.1.mlp.down_proj.weight"), 1);
  EXPECT_EQ(std::count(names.begin(), names.end(), "layers.2.mlp.down_proj.weight"), 0);
  // Its checkpoint loads as a model (the projections are ignored there) and evaluates.
  const auto e = run_fedsplit("eval --model " + (tmp / "d/checkpoint.h5") + " --data " + fixtures() +
                              "/hf-tiny/tokenizers/training-text.txt --tokenizer " + fixtures() +
                              "/hf-tiny/tokenizers/spm-bpe.model --seq-len 32 --batch-size 4 --val-fraction 0.1 "
                              "--seed 3 --max-batches 2 --threads 1 --cache " + (tmp / "cache"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const auto at = e.output.find("loss ");
  ASSERT_NE(at, std::string::npos) << e.output;
  EXPECT_NEAR(std::stod(e.output.substr(at + 5)), s["val_loss"].get<double>(), 1e-5);
}

TEST_F(CliDistill, StoppedRunResumesExactly) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "a.ini", distill_recipe(tmp, tmp / "a"));
  write_text(tmp / "b.ini", distill_recipe(tmp, tmp / "b"));
  auto r = run_fedsplit("run " + (tmp / "a.ini") + " --train.steps=12");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("run " + (tmp / "b.ini") + " --train.steps=12 --run.stop_after=5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "b/model"));
  r = run_fedsplit("run " + (tmp / "b.ini") + " --train.steps=12 --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(train_losses(tmp / "b"), train_losses(tmp / "a"));
  EXPECT_EQ(read_text(tmp / "a/model/model.safetensors"), read_text(tmp / "b/model/model.safetensors"));
}

TEST_F(CliDistill, BadKeysAreRefusedInOneLine) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "e.ini", distill_recipe(tmp, tmp / "e"));
  const std::string run = "run " + (tmp / "e.ini") + " ";
  struct Case {
    std::string flags, needle;
  };
  // A recipe without a teacher.
  std::string no_teacher = distill_recipe(tmp, tmp / "e");
  const std::string teacher_line = "teacher = " + (tmp / "teacher/model") + "\n";
  no_teacher.erase(no_teacher.find(teacher_line), teacher_line.size());
  write_text(tmp / "no_teacher.ini", no_teacher);
  auto r = run_fedsplit("run " + (tmp / "no_teacher.ini"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("distill.teacher is required"), std::string::npos) << r.output;
  EXPECT_EQ(count_lines_with(r.output, "fedsplit: "), 1) << r.output;

  const std::vector<Case> cases = {
      {"--distill.alpha=1.5", "distill.alpha"},
      {"--distill.student_layers=5", "distill.student_layers = 5 exceeds the teacher's 4 layers"},
      {"--distill.divergence=js", "distill.divergence"},
      {"--distill.layer_map=0:9", "distill.layer_map"},
      {"--distill.student_init=teacher --model.init=" + (tmp / "teacher/model"), "leave model.init empty"},
      {"--run.mode=train", "distill.teacher is set but run.mode = train"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.flags);
    const auto r = run_fedsplit(run + c.flags);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
    EXPECT_EQ(count_lines_with(r.output, "fedsplit: "), 1) << r.output;
    EXPECT_EQ(count_lines_with(r.output, c.needle), 1) << r.output;
  }
}

// A teacher with a LoRA adapter (distill.teacher_adapter) is the base with the adapter folded in: its
// held-out loss in the distillation run equals the LoRA run's final one on the same batches (1e-5).
TEST_F(CliDistill, TeacherAdapterIsMerged) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "lora.ini", "[run]\ndir = " + (tmp / "lora") + "\nseed = 3\nthreads = 1\ndevice = cpu\n\n" +
                                   data_section(tmp) + "[model]\ninit = " + (tmp / "teacher/model") +
                                   "\n\n[peft]\nmethod = lora\nr = 4\ntarget_modules = q_proj v_proj\n\n"
                                   "[train]\nsteps = 6\nlr = 1e-2\nwarmup_steps = 1\neval_every = 0\neval_batches = 2\n");
  auto r = run_fedsplit("run " + (tmp / "lora.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  write_text(tmp / "t.ini", distill_recipe(tmp, tmp / "t"));
  r = run_fedsplit("run " + (tmp / "t.ini") + " --train.steps=2 --distill.teacher_adapter=" + (tmp / "lora/adapter"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto lora = nlohmann::json::parse(read_text(tmp / "lora/summary.json"));
  const auto s = nlohmann::json::parse(read_text(tmp / "t/summary.json"));
  EXPECT_NEAR(s["teacher_val_loss"].get<double>(), lora["val_loss"].get<double>(), 1e-5);
  EXPECT_GT(std::abs(s["teacher_val_loss"].get<double>() - lora["base_val_loss"].get<double>()), 1e-4);
}
