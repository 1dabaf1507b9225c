// labels: unit
// Federated distillation through the executable: clients of run.mode = federated train on the
// distillation loss against a [distill] teacher. With alpha = 0 the run is the plain federated run
// bit for bit; with alpha = 1 the federated model ends closer to the teacher (held-out KL) than
// plain federated training on the labels does; keys that cannot apply are refused by name.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/tokenizer/tokenizer.h"
#include "tests/launch/federated_helpers.h"
#include "train/model_io.h"

using namespace fedsplit::testing;

namespace {

std::string train_recipe(const TempDir& tmp, const std::string& dir, int steps) {
  return "[run]\ndir = " + dir + "\nseed = 5\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) + model_section() +
         "[train]\nsteps = " + std::to_string(steps) + "\nlr = 5e-3\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\n";
}

// Full FedAvg from the weak base, optionally distilling from the strong one.
std::string federated_recipe(const TempDir& tmp, const std::string& dir, const std::string& distill) {
  return "[run]\nmode = federated\ndir = " + dir + "\nseed = 5\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
         "[model]\ninit = " + (tmp / "weak/model") + "\n\n[train]\nlr = 3e-3\nweight_decay = 0\n\n" +
         federated_section("rounds = 3\npartition = natural\npartition_key = speaker\nlocal_steps = 4\neval_batches = 2", "") +
         (distill.empty() ? "" : "\n[distill]\nteacher = " + (tmp / "strong/model") + "\n" + distill);
}

// Mean KL(teacher || student) per token over the fixture text's first 4 x 32 tokens.
double teacher_kl(const std::string& teacher_dir, const std::string& student_dir) {
  auto tokenizer = fedsplit::load_tokenizer(fixtures() + "/hf-tiny/tokenizers/spm-bpe.model");
  const auto ids32 = tokenizer->encode(read_text(fixtures() + "/hf-tiny/tokenizers/training-text.txt").substr(0, 4000));
  const auto ids = torch::tensor(std::vector<int64_t>(ids32.begin(), ids32.begin() + 128)).view({4, 32});
  fedsplit::Decoder teacher = fedsplit::load_any_model(teacher_dir), student = fedsplit::load_any_model(student_dir);
  teacher->eval();
  student->eval();
  torch::NoGradGuard no_grad;
  const auto log_t = torch::log_softmax(teacher->forward(ids), -1), log_s = torch::log_softmax(student->forward(ids), -1);
  return (log_t.exp() * (log_t - log_s)).sum(-1).mean().item<double>();
}

class CliFederatedDistill : public SharedDirSuite<CliFederatedDistill> {
 public:
  static constexpr const char* kDirName = "cli_federated_distill";
  static void prepare() {
    write_corpus(*tmp_ / "speakers.jsonl");
    run_ok(*tmp_, "weak", train_recipe(*tmp_, *tmp_ / "weak", 5));
    run_ok(*tmp_, "strong", train_recipe(*tmp_, *tmp_ / "strong", 80));
    run_ok(*tmp_, "plain", federated_recipe(*tmp_, *tmp_ / "plain", ""));
  }
};

}  // namespace

TEST_F(CliFederatedDistill, AlphaZeroIsThePlainRunBitForBit) {
  const auto dir = run_ok(*tmp_, "alpha0", federated_recipe(*tmp_, *tmp_ / "alpha0", "alpha = 0\n"));
  EXPECT_EQ(max_difference(global_of(dir), global_of(*tmp_ / "plain")), 0.0);
}

TEST_F(CliFederatedDistill, ClientsDistilTowardTheTeacher) {
  const auto dir = run_ok(*tmp_, "alpha1", federated_recipe(*tmp_, *tmp_ / "alpha1", "alpha = 1\ntemperature = 1\n"));
  const double weak = teacher_kl(*tmp_ / "strong/model", *tmp_ / "weak/model");
  const double plain = teacher_kl(*tmp_ / "strong/model", *tmp_ / "plain/model");
  const double distilled = teacher_kl(*tmp_ / "strong/model", dir + "/model");
  std::cout << "KL to the teacher: weak " << weak << ", plain " << plain << ", distilled " << distilled << "\n";
  EXPECT_LT(distilled, plain);
  EXPECT_LT(distilled, weak);
}

TEST_F(CliFederatedDistill, KeysThatCannotApplyAreRefused) {
  write_text(*tmp_ / "bad.ini", federated_recipe(*tmp_, *tmp_ / "bad", "hidden_weight = 0.1\n"));
  auto r = run_fedsplit("run " + (*tmp_ / "bad.ini"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("distill.hidden_weight"), std::string::npos) << r.output;
  write_text(*tmp_ / "bad2.ini", federated_recipe(*tmp_, *tmp_ / "bad2", "student_init = teacher\n"));
  r = run_fedsplit("run " + (*tmp_ / "bad2.ini"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("distill.student_init"), std::string::npos) << r.output;
}
