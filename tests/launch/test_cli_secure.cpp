// labels: unit
// Secure aggregation through the executable: a secagg round gives plain FedAvg's model to within the
// fixed-point step (full model and FedLoRA); with 30% of the clients dropping mid-round the model is
// plain FedAvg over the survivors; with too many dropping the round aborts and the job stops without a
// model; distributed DP without noise equals central DP, and its epsilon is the accountant's; keys that
// do not combine are refused by name.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "federated/rdp_accountant.h"
#include "tests/launch/cli_helpers.h"
#include "tests/launch/federated_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

// Ten iid clients, all sampled, one round, unless `extra` ([federated] lines) says otherwise.
std::string ten_clients(const TempDir& tmp, const std::string& dir, const std::string& extra, const std::string& sections = "") {
  const std::string federated = federated_section("rounds = 1\npartition = iid\nclients = 10\nlocal_steps = 2", extra);
  return fedavg_recipe(tmp, dir, federated.substr(federated.find('\n') + 1)) + "\n" + sections;
}

class CliSecure : public SharedDirSuite<CliSecure> {
 public:
  static constexpr const char* kDirName = "cli_secure";
  static void prepare() {
    write_corpus(*tmp_ / "speakers.jsonl");
    // A small base model for the FedLoRA case.
    run_ok(*tmp_, "base",
           "[run]\ndir = " + (*tmp_ / "base") + "\nseed = 7\nthreads = 1\ndevice = cpu\n\n" + data_section(*tmp_) +
               model_section() + "[train]\nsteps = 20\nlr = 1e-2\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\n");
  }
};

}  // namespace

TEST_F(CliSecure, SecAggGivesPlainFedAvgToTheFixedPointStep) {
  const TempDir& tmp = *tmp_;
  const std::string plain = run_ok(tmp, "plain", ten_clients(tmp, tmp / "plain", ""));
  const std::string secure = run_ok(tmp, "secure", ten_clients(tmp, tmp / "secure", "", "[secure]\naggregation = secagg\n"));
  // The fixed-point step is range / 2^30 (1e-9 for range 1): with fp32 rounding of the sum the
  // models agree to 1e-6, while one client's unremoved mask would be off by ~2^31 steps.
  const auto plain_global = global_of(plain), secure_global = global_of(secure);
  EXPECT_LE(max_difference(plain_global, secure_global), 1e-6);
  const auto p = events(plain, "round").at(0), s = events(secure, "round").at(0);
  EXPECT_EQ(s["clients_aggregated"], 10);
  EXPECT_EQ(s["secure"]["stages"]["masked"], 10);
  EXPECT_EQ(s["secure"]["clamped"], 0);
  EXPECT_NEAR(s["train_loss"].get<double>(), p["train_loss"].get<double>(), 1e-4) << "the weighted loss travels masked too";
  EXPECT_GT(s["bytes_up"].get<double>(), p["bytes_up"].get<double>()) << "keys, shares and masked inputs cost more than plain updates";
}

TEST_F(CliSecure, ThirtyPercentDropoutsMidRoundGiveTheSurvivorsSum) {
  const TempDir& tmp = *tmp_;
  const std::string secure = run_ok(tmp, "drop", ten_clients(tmp, tmp / "drop", "",
                                                           "[secure]\naggregation = secagg\ndropout_fraction = 0.3\ndropout_stage = masked\n"));
  const auto round = events(secure, "round").at(0);
  EXPECT_EQ(round["clients_aggregated"], 7);
  EXPECT_EQ(round["secure"]["stages"]["shared"], 10) << "the dropouts shared their keys, then vanished";
  ASSERT_EQ(round["excluded"].size(), 3u);
  std::string silent;
  for (const auto& e : round["excluded"]) {
    EXPECT_NE(e["reason"].get<std::string>().find("before its masked input"), std::string::npos) << e.dump();
    silent += (silent.empty() ? "" : " ") + e["client"].get<std::string>() + "=silent";
  }
  // Plain FedAvg over the same seven survivors: the three others go silent.
  const std::string plain = run_ok(tmp, "drop_plain", ten_clients(tmp, tmp / "drop_plain", "faults = " + silent + "\n"));
  EXPECT_EQ(events(plain, "round").at(0)["clients_aggregated"], 7);
  EXPECT_LE(max_difference(global_of(plain), global_of(secure)), 1e-6);
}

TEST_F(CliSecure, FedLoraAdaptersAreSummedSecurely) {
  const TempDir& tmp = *tmp_;
  for (const std::string aggregation : {"fedavg", "ffa"}) {
    auto recipe = [&](const std::string& name, const std::string& sections) {
      std::string r = ten_clients(tmp, tmp / name, "lora_aggregation = " + aggregation + "\n", sections);
      const std::string model = model_section();
      r.replace(r.find(model), model.size(), "[model]\ninit = " + (tmp / "base/model") +
                "\n\n[peft]\nmethod = lora\nr = 4\nalpha = 8\ntarget_modules = q_proj v_proj\n\n");
      return run_ok(tmp, name, r);
    };
    const std::string plain = recipe("lora_plain_" + aggregation, "");
    const std::string secure = recipe("lora_secure_" + aggregation, "[secure]\naggregation = secagg\nneighbours = 4\n");
    const auto adapters = global_of(secure);
    EXPECT_LE(max_difference(global_of(plain), adapters), 1e-6) << aggregation;
    for (const auto& [name, t] : adapters) EXPECT_NE(name.find("lora_"), std::string::npos) << "only adapters travel: " << name;
  }
}

TEST_F(CliSecure, TooManyDropoutsAbortTheRoundWithoutRevealing) {
  const TempDir& tmp = *tmp_;
  // 7 of 10 drop: each survivor sees 2 of its 9 neighbours survive, below the threshold 5.
  write_text(tmp / "abort.ini", ten_clients(tmp, tmp / "abort", "round_retries = 0\n",
                                            "[secure]\naggregation = secagg\ndropout_fraction = 0.7\n"));
  const auto r = run_fedsplit("run " + (tmp / "abort.ini"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("secure aggregation aborted"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("0 valid updates"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "abort/model")) << "no model from an aborted round";
}

TEST_F(CliSecure, DistributedDpWithoutNoiseIsCentralDpAndAccountsEachRound) {
  const TempDir& tmp = *tmp_;
  const std::string central = run_ok(tmp, "central", ten_clients(tmp, tmp / "central", "",
                                                               "[privacy]\ndp = central\nclip = 0.01\nnoise_multiplier = 0\n"));
  const std::string distributed = run_ok(tmp, "distributed", ten_clients(tmp, tmp / "distributed", "",
      "[privacy]\ndp = distributed\nclip = 0.01\nnoise_multiplier = 0\n\n[secure]\naggregation = secagg\n"));
  EXPECT_LE(max_difference(global_of(central), global_of(distributed)), 1e-6);

  // With noise: half the clients per round, epsilon is the accountant's for q = 0.5, sigma = 1.5.
  const std::string noisy = run_ok(tmp, "noisy", ten_clients(tmp, tmp / "noisy", "rounds = 2\nsample_count = 5\nmin_clients = 4\n",
      "[privacy]\ndp = distributed\nclip = 0.1\nnoise_multiplier = 1.5\n\n[secure]\naggregation = secagg\nrange = 2\n"));
  fedsplit::RdpAccountant accountant;
  const auto rounds = events(noisy, "round");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) {
    accountant.step(0.5, 1.5);
    EXPECT_NEAR(r["privacy"]["epsilon"].get<double>(), accountant.epsilon(1e-5), 1e-9);
    EXPECT_EQ(r["privacy"]["noise"], "distributed");
  }
}

TEST_F(CliSecure, KeysThatDoNotCombineAreRefused) {
  const TempDir& tmp = *tmp_;
  const std::vector<std::pair<std::string, std::string>> cases{
      {"[secure]\naggregation = secagg\n\n[robust]\nrule = median\n", "robust.rule = median needs every client's update"},
      {"[secure]\naggregation = secagg\n\n[privacy]\ndp = central\n", "use privacy.dp = distributed"},
      {"[privacy]\ndp = distributed\n", "needs secure.aggregation = secagg"},
      {"[secure]\naggregation = secagg\nthreshold = 1.5\n", "secure.threshold"}};
  for (const auto& [sections, needle] : cases) {
    write_text(tmp / "bad.ini", ten_clients(tmp, tmp / "bad", "", sections));
    const auto r = run_fedsplit("run " + (tmp / "bad.ini"));
    EXPECT_NE(r.exit_code, 0) << sections;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  }
}

TEST_F(CliSecure, LocalDpSgdIsChargedInSecureRoundsAsInPlainOnes) {
  const TempDir& tmp = *tmp_;
  const std::string local = "[privacy]\nlocal_dp_sgd = true\nexample_clip = 1\nexample_noise_multiplier = 1.2\n";
  const std::string plain = run_ok(tmp, "ldp_plain", ten_clients(tmp, tmp / "ldp_plain", "", local));
  const std::string secure = run_ok(tmp, "ldp_secure", ten_clients(tmp, tmp / "ldp_secure", "", local + "\n[secure]\naggregation = secagg\n"));
  const auto p = events(plain, "round").at(0)["privacy"]["local"], s = events(secure, "round").at(0)["privacy"]["local"];
  EXPECT_GT(s["epsilon_max"].get<double>(), 0);
  EXPECT_EQ(s["epsilon_max"], p["epsilon_max"]);
  EXPECT_EQ(s["steps"], p["steps"]);
}
