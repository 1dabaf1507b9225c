// labels: unit
// Federated runs through the executable, on a small labelled corpus (one client per speaker):
// full-model FedAvg learns; the partition, metrics and summary are written; a stopped FedLoRA run
// resumes to exactly the model of an uninterrupted one; faulty and late clients are left out with
// their reasons while the round completes; too few valid clients stop the job with its checkpoint
// intact; central DP and local DP-SGD account each round; and keys that do not fit together are refused
// by name.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include "core/io/hdf5.h"
#include "core/util/fs.h"
#include "federated/rdp_accountant.h"
#include "tests/launch/cli_helpers.h"
#include "tests/launch/federated_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

std::string fedlora_recipe(const TempDir& tmp, const std::string& dir, const std::string& federated_extra) {
  return "[run]\nmode = federated\ndir = " + dir + "\nseed = 5\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
         "[model]\ninit = " + (tmp / "base/model") +
         "\n\n[peft]\nmethod = lora\nr = 4\nalpha = 8\ndropout = 0.1\ntarget_modules = q_proj v_proj\n\n"
         "[train]\nlr = 1e-2\nweight_decay = 0\n\n" +
         federated_section("rounds = 4\npartition = iid\nclients = 6\nsample_count = 3\nlocal_steps = 3\neval_batches = 1",
                           federated_extra);
}

class CliFederated : public SharedDirSuite<CliFederated> {
 public:
  static constexpr const char* kDirName = "cli_federated";
  static void prepare() {
    write_corpus(*tmp_ / "speakers.jsonl");
    // A small base model for the FedLoRA runs.
    run_ok(*tmp_, "base",
           "[run]\ndir = " + (*tmp_ / "base") + "\nseed = 7\nthreads = 1\ndevice = cpu\n\n" + data_section(*tmp_) +
               model_section() + "[train]\nsteps = 30\nlr = 1e-2\nwarmup_steps = 2\neval_every = 0\neval_batches = 2\n");
  }
};

}  // namespace

TEST_F(CliFederated, FedAvgLearnsAndRecordsEveryRound) {
  const TempDir& tmp = *tmp_;
  const std::string dir = tmp / "fedavg";
  write_text(tmp / "fedavg.ini", fedavg_recipe(tmp, dir));
  const auto r = run_fedsplit("run " + (tmp / "fedavg.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const auto partition = nlohmann::json::parse(read_text(dir + "/partition.json"));
  EXPECT_EQ(partition["clients"], 4);
  EXPECT_EQ(partition["client_list"].size(), 4u);
  EXPECT_EQ(partition["client_list"][0]["name"], "ahab");
  EXPECT_NEAR(partition["label_skew_tv"].get<double>(), 0.75, 1e-9) << "one speaker per client: 1 - 1/4";

  const auto rounds = events(dir, "round");
  ASSERT_EQ(rounds.size(), 4u);
  for (const auto& round : rounds) {
    EXPECT_EQ(round["clients_aggregated"], 4);
    EXPECT_GT(round["bytes_up"].get<int64_t>(), 4 * 4 * 1000) << "four full models of 1000s of floats";
    EXPECT_NEAR(round["bytes_up"].get<double>(), round["bytes_down"].get<double>(), 2000) << "the same tensors each way";
  }
  const auto evals = events(dir, "eval");
  ASSERT_EQ(evals.size(), 5u) << "round 0 and every round";
  EXPECT_EQ(evals.front()["client_ppl"].size(), 4u);
  EXPECT_LT(evals.back()["val_loss"].get<double>(), evals.front()["val_loss"].get<double>() - 0.3);
  const auto summary = nlohmann::json::parse(read_text(dir + "/summary.json"));
  EXPECT_EQ(summary["rounds"], 4);
  EXPECT_DOUBLE_EQ(summary["val_loss"].get<double>(), evals.back()["val_loss"].get<double>());
  EXPECT_TRUE(fedsplit::path_exists(dir + "/model/config.json"));
}

TEST_F(CliFederated, ASignFlippingClientUndoesFedAvgButNotTheMedian) {
  const TempDir& tmp = *tmp_;
  const std::string attack = "\n[attack]\nclients = ahab=sign_flip\nscale = 10\n";
  write_text(tmp / "clean.ini", fedavg_recipe(tmp, tmp / "clean"));
  write_text(tmp / "attacked.ini", fedavg_recipe(tmp, tmp / "attacked") + attack);
  write_text(tmp / "median.ini", fedavg_recipe(tmp, tmp / "median") + attack + "\n[robust]\nrule = median\n");
  for (const std::string run : {"clean", "attacked", "median"}) {
    const auto r = run_fedsplit("run " + (tmp / (run + ".ini")));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const auto partition = nlohmann::json::parse(read_text(tmp / "attacked/partition.json"));
  EXPECT_EQ(partition["client_list"][0]["attack"], "sign_flip");
  const double start = events(tmp / "clean", "eval").front()["val_loss"];
  const double clean = events(tmp / "clean", "eval").back()["val_loss"];
  const double attacked = events(tmp / "attacked", "eval").back()["val_loss"];
  const double median = events(tmp / "median", "eval").back()["val_loss"];
  std::cout << "held-out loss: start " << start << ", clean " << clean << ", attacked " << attacked << ", median "
            << median << std::endl;
  EXPECT_GT(attacked - clean, 0.5 * (start - clean)) << "one of four clients sending -10x its update undoes plain FedAvg";
  EXPECT_LT(median - clean, 0.25 * (start - clean)) << "the coordinate-wise median keeps most of the clean progress";
  EXPECT_EQ(events(tmp / "median", "round").front()["robust"]["rule"], "median");
}

TEST_F(CliFederated, CentralDpClipsEveryUpdateAndAccountsEachRound) {
  const TempDir& tmp = *tmp_;
  const std::string dir = tmp / "dp";
  // Without noise the mean of clipped deltas moves the model by at most the clip.
  write_text(tmp / "dp.ini", fedavg_recipe(tmp, dir, "rounds = 2\n") +
                                 "\n[privacy]\ndp = central\nclip = 0.01\nnoise_multiplier = 0\n");
  auto r = run_fedsplit("run " + (tmp / "dp.ini") + " --run.stop_after=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto before = global_of(dir);
  r = run_fedsplit("run " + (tmp / "dp.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  double moved = 0;
  for (const auto& [name, t] : global_of(dir)) moved += (t - before.at(name)).to(torch::kFloat64).pow(2).sum().item<double>();
  EXPECT_LE(std::sqrt(moved), 0.01 * (1 + 1e-5));
  EXPECT_GT(std::sqrt(moved), 0.0);
  const auto rounds = events(dir, "round");
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_GE(rounds[1]["privacy"]["clipped"].get<int>(), 1) << "updates larger than 0.01 are clipped";
  EXPECT_EQ(rounds[1]["privacy"]["clip"], 0.01);
  EXPECT_EQ(rounds[1]["privacy"]["sampling_rate"], 1.0);

  // With noise, epsilon after each round is the accountant's for q = 1, sigma = 2 (resumed or not).
  write_text(tmp / "dpn.ini", fedavg_recipe(tmp, tmp / "dpn", "rounds = 3\n") +
                                  "\n[privacy]\ndp = central\nclip = 0.5\nnoise_multiplier = 2\ndelta = 1e-5\n");
  r = run_fedsplit("run " + (tmp / "dpn.ini") + " --run.stop_after=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("run " + (tmp / "dpn.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto noisy = events(tmp / "dpn", "round");
  ASSERT_EQ(noisy.size(), 3u);
  fedsplit::RdpAccountant accountant;
  for (size_t i = 0; i < noisy.size(); ++i) {
    accountant.step(1.0, 2.0);
    EXPECT_NEAR(noisy[i]["privacy"]["epsilon"].get<double>(), accountant.epsilon(1e-5), 1e-9) << "round " << i + 1;
  }
  EXPECT_NEAR(nlohmann::json::parse(read_text(tmp / "dpn/summary.json"))["epsilon"].get<double>(), accountant.epsilon(1e-5), 1e-9);
}

TEST_F(CliFederated, LocalDpSgdChargesEveryClientAndReportsTheLargestEpsilon) {
  const TempDir& tmp = *tmp_;
  const std::string dir = tmp / "localdp";
  // Every client trains every round (one per speaker): after round r client i has taken r·local_steps DP-SGD
  // steps at q_i = batch_size / its training windows. Stopped and resumed: the ledger travels in the checkpoint.
  write_text(tmp / "localdp.ini", fedavg_recipe(tmp, dir, "rounds = 2\nlocal_steps = 2\n") +
                                      "\n[privacy]\nlocal_dp_sgd = true\nexample_clip = 0.5\n"
                                      "example_noise_multiplier = 1.2\ndelta = 1e-5\n");
  auto r = run_fedsplit("run " + (tmp / "localdp.ini") + " --run.stop_after=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("run " + (tmp / "localdp.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto partition = nlohmann::json::parse(read_text(dir + "/partition.json"));
  const auto rounds = events(dir, "round");
  ASSERT_EQ(rounds.size(), 2u);
  double previous = 0;
  for (size_t i = 0; i < rounds.size(); ++i) {
    double want = 0;
    std::string busiest;
    for (const auto& c : partition["client_list"]) {
      fedsplit::RdpAccountant accountant;
      const double q = std::min(1.0, 2.0 / c["train_windows"].get<double>());  // data.batch_size = 2
      accountant.step(q, 1.2, static_cast<int64_t>(i + 1) * c["local_steps"].get<int64_t>());
      if (accountant.epsilon(1e-5) > want) want = accountant.epsilon(1e-5), busiest = c["name"].get<std::string>();
    }
    const auto& local = rounds[i]["privacy"]["local"];
    EXPECT_NEAR(local["epsilon_max"].get<double>(), want, 1e-9 * want) << "round " << i + 1;
    EXPECT_EQ(local["client"], busiest);
    EXPECT_EQ(local["example_clip"], 0.5);
    EXPECT_EQ(local["example_noise_multiplier"], 1.2);
    EXPECT_FALSE(rounds[i]["privacy"].contains("epsilon")) << "privacy.dp = none: no central epsilon";
    EXPECT_GT(local["epsilon_max"].get<double>(), previous);
    previous = local["epsilon_max"].get<double>();
  }
  const auto summary = nlohmann::json::parse(read_text(dir + "/summary.json"));
  EXPECT_DOUBLE_EQ(summary["local_epsilon_max"].get<double>(), previous);
  EXPECT_FALSE(summary.contains("epsilon"));

  // Out-of-range values stop the run before any work, naming the key.
  for (const std::string bad : {"--privacy.example_clip=0", "--privacy.example_noise_multiplier=-1"}) {
    r = run_fedsplit("run " + (tmp / "localdp.ini") + " --run.overwrite=true " + bad);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(bad.substr(2, bad.find('=') - 2)), std::string::npos) << r.output;
  }
}

TEST_F(CliFederated, FedLoraTrainsAndSendsOnlyTheAdapters) {
  const TempDir& tmp = *tmp_;
  const std::string dir = tmp / "fedlora";
  write_text(tmp / "fedlora.ini", fedlora_recipe(tmp, dir, "rounds = 3\n"));
  const auto r = run_fedsplit("run " + (tmp / "fedlora.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto summary = nlohmann::json::parse(read_text(dir + "/summary.json"));
  // The base and the clients share one distribution, so the adapters cannot gain much; they must not
  // hurt either (the held-out gain on real data is in the README's results).
  EXPECT_NEAR(summary["val_loss"].get<double>(), summary["base_val_loss"].get<double>(), 0.05);
  // Only the adapters travel: per layer q_proj A [4, 32], B [32, 4] and v_proj A [4, 32], B [16, 4].
  const int64_t adapter_bytes = 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4) * 4;
  EXPECT_EQ(summary["update_bytes_per_client"], adapter_bytes);
  EXPECT_EQ(summary["trainable_parameters"], adapter_bytes / 4);
  EXPECT_TRUE(fedsplit::path_exists(dir + "/adapter/adapter_model.safetensors"));
  for (const auto& round : events(dir, "round")) {
    EXPECT_GT(round["bytes_up"].get<int64_t>(), 3 * adapter_bytes);
    EXPECT_LT(round["bytes_up"].get<int64_t>(), 3 * (adapter_bytes + 1500)) << "3 clients: adapters and a header each";
  }
}

TEST_F(CliFederated, StoppedFedLoraRunResumesToTheSameModel) {
  const TempDir& tmp = *tmp_;
  const std::string extra = "lora_aggregation = hetlora\nclient_ranks = 2 1\nserver_optimizer = fedadam\nserver_lr = 0.01\n";
  write_text(tmp / "whole.ini", fedlora_recipe(tmp, tmp / "whole", extra));
  write_text(tmp / "parts.ini", fedlora_recipe(tmp, tmp / "parts", extra));
  auto r = run_fedsplit("run " + (tmp / "whole.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("run " + (tmp / "parts.ini") + " --run.stop_after=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(events(tmp / "parts", "round").size(), 2u);
  r = run_fedsplit("run " + (tmp / "parts.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto whole = global_of(tmp / "whole"), parts = global_of(tmp / "parts");
  ASSERT_EQ(whole.size(), parts.size());
  for (const auto& [name, t] : whole) EXPECT_TRUE(torch::equal(t, parts.at(name))) << name << " differs after resuming";
  const auto summary_whole = nlohmann::json::parse(read_text(tmp / "whole/summary.json"));
  const auto summary_parts = nlohmann::json::parse(read_text(tmp / "parts/summary.json"));
  EXPECT_EQ(summary_parts["val_loss"], summary_whole["val_loss"]);
  EXPECT_EQ(summary_parts["base_val_loss"], summary_whole["base_val_loss"]) << "the base's loss survives the resume";
  // The same messages, but for the digits of each client's measured wall time.
  EXPECT_NEAR(summary_parts["bytes_up"].get<double>(), summary_whole["bytes_up"].get<double>(), 64);
  EXPECT_TRUE(fedsplit::path_exists(tmp / "whole/adapter/adapter_config.json"));
}

TEST_F(CliFederated, FaultyAndLateClientsAreLeftOutWithTheirReasons) {
  const TempDir& tmp = *tmp_;
  const std::string dir = tmp / "faults";
  // Clients 0-3 misbehave; half the clients are stragglers 1000x slower, which the deadline cuts off.
  write_text(tmp / "faults.ini",
             fedlora_recipe(tmp, dir,
                            "sample_count = 6\nfaults = 0=nonfinite 1=shape 2=dtype 3=silent\nrounds = 2\n"
                            "straggler_fraction = 0.5\nstraggler_slowdown = 1000\ndeadline_s = 10\nclient_tokens_per_s = 1000\n"));
  const auto r = run_fedsplit("run " + (tmp / "faults.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto partition = nlohmann::json::parse(read_text(dir + "/partition.json"));
  std::set<std::string> late_expected;
  for (const auto& c : partition["client_list"])
    if (c["straggler"].get<bool>() && c["name"] >= "client-4") late_expected.insert(c["name"]);
  ASSERT_FALSE(late_expected.empty()) << "the seed should make client 4 or 5 a straggler";
  for (const auto& round : events(dir, "round")) {
    std::map<std::string, std::string> reasons;
    for (const auto& e : round["excluded"]) reasons[e["client"]] = e["reason"];
    EXPECT_NE(reasons["client-0"].find("non-finite"), std::string::npos) << reasons["client-0"];
    EXPECT_NE(reasons["client-1"].find("has shape"), std::string::npos) << reasons["client-1"];
    EXPECT_NE(reasons["client-2"].find("has dtype"), std::string::npos) << reasons["client-2"];
    EXPECT_NE(reasons["client-3"].find("sent no update"), std::string::npos) << reasons["client-3"];
    for (const auto& name : late_expected) EXPECT_EQ(reasons[name].rfind("late", 0), 0u) << name << ": " << reasons[name];
    EXPECT_EQ(round["excluded"].size(), 4 + late_expected.size());
    EXPECT_EQ(round["clients_aggregated"].get<size_t>() + late_expected.size(), 2u);
    EXPECT_DOUBLE_EQ(round["sim_round_s"].get<double>(), 10.0) << "the round waits until the deadline";
  }
}

TEST_F(CliFederated, TooFewValidClientsStopWithTheCheckpointIntact) {
  const TempDir& tmp = *tmp_;
  const std::string dir = tmp / "short";
  write_text(tmp / "short.ini", fedlora_recipe(tmp, dir, "rounds = 3\nsample_count = 6\nmin_clients = 4\nround_retries = 1\n"));
  auto r = run_fedsplit("run " + (tmp / "short.ini") + " --run.stop_after=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto before = global_of(dir);
  r = run_fedsplit("run " + (tmp / "short.ini") + " --resume --federated.faults='0=silent 1=silent 2=nonfinite'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("fewer than federated.min_clients = 4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("checkpoint.h5 holds the last good round"), std::string::npos) << r.output;
  for (const auto& [name, t] : global_of(dir)) EXPECT_TRUE(torch::equal(t, before.at(name))) << name;
}

TEST_F(CliFederated, KeysThatDoNotFitTogetherAreRefusedByName) {
  const TempDir& tmp = *tmp_;
  struct Case {
    std::string extra, needle;
  };
  const std::vector<Case> cases = {
      {"client_ranks = 4 2\n", "federated.client_ranks needs federated.lora_aggregation"},
      {"lora_aggregation = flora\nserver_optimizer = fedadam\n", "federated.server_optimizer = fedavg"},
      {"partition = natural\nclients = 1\n", "federated.partition_key"},
      {"lora_aggregation = hetlora\nclient_ranks = 9\n", "federated.client_ranks: '9'"},
      {"network.link = fast\n", "network.link"},
      {"backend = nccl\n", "federated.backend = nccl moves CUDA tensors"},
  };
  for (const auto& c : cases) {
    std::string recipe = fedlora_recipe(tmp, tmp / "bad", c.extra);
    if (c.extra.rfind("network.", 0) == 0) recipe = fedlora_recipe(tmp, tmp / "bad", "") + "[network]\nlink = fast\n";
    write_text(tmp / "bad.ini", recipe);
    const auto r = run_fedsplit("run " + (tmp / "bad.ini") + " --run.overwrite=true");
    EXPECT_EQ(r.exit_code, 1) << c.extra << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.extra << r.output;
  }
}
