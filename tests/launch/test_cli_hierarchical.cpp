// labels: unit
// Hierarchical FedAvg through the executable: one edge with one edge round is flat FedAvg bit for bit
// (FedAdam at the cloud included); two edges whose devices all report give the flat weighted mean;
// k2 edge rounds per cloud round are counted per tier, and the cloud link carries less than flat FL
// for the same local work; devices grouped by a metadata key; keys that do not fit are refused.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "tests/launch/cli_helpers.h"
#include "tests/launch/federated_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

class CliHierarchical : public SharedDirSuite<CliHierarchical> {
 public:
  static constexpr const char* kDirName = "cli_hierarchical";
  static void prepare() {
    write_corpus(*tmp_ / "speakers.jsonl");
  }
};

}  // namespace

TEST_F(CliHierarchical, OneEdgeWithOneEdgeRoundIsFlatFedAvgBitForBit) {
  const TempDir& tmp = *tmp_;
  const std::string fed = "rounds = 3\nserver_optimizer = fedadam\nserver_lr = 0.01\n";
  const std::string flat = run_ok(tmp, "flat", fedavg_recipe(tmp, tmp / "flat", fed));
  const std::string hier = run_ok(tmp, "one_edge", fedavg_recipe(tmp, tmp / "one_edge", fed) + "\n[topology]\nedges = 1\n");
  EXPECT_EQ(max_difference(global_of(flat), global_of(hier)), 0.0);
  const auto f = events(flat, "round"), h = events(hier, "round");
  ASSERT_EQ(h.size(), 3u);
  for (size_t i = 0; i < h.size(); ++i) {
    EXPECT_NEAR(f[i]["train_loss"].get<double>(), h[i]["train_loss"].get<double>(), 1e-12) << "round " << i + 1;
    EXPECT_EQ(h[i]["tiers"]["device_edge"]["device_updates"], f[i]["clients_aggregated"]);
  }
}

TEST_F(CliHierarchical, EdgeMeansOfAllDevicesGiveTheFlatWeightedMean) {
  const TempDir& tmp = *tmp_;
  const std::string fed = "rounds = 1\npartition = iid\nclients = 6\nlocal_steps = 2\n";
  const std::string flat = run_ok(tmp, "flat6", fedavg_recipe(tmp, tmp / "flat6", fed));
  const std::string hier = run_ok(tmp, "two_edges", fedavg_recipe(tmp, tmp / "two_edges", fed) +
                                                        "\n[topology]\nedges = 2\ngrouping = sizes\ndevices_per_edge = 2 4\n");
  // The same device updates, summed in another order and grouping: fp32 rounding apart.
  EXPECT_LE(max_difference(global_of(flat), global_of(hier)), 1e-6);
  const auto partition = nlohmann::json::parse(read_text(hier + "/partition.json"));
  EXPECT_EQ(partition["edges"]["edge-0"].size(), 2u);
  EXPECT_EQ(partition["edges"]["edge-1"].size(), 4u);
}

TEST_F(CliHierarchical, EdgeRoundsSaveCloudTrafficForTheSameLocalWork) {
  const TempDir& tmp = *tmp_;
  // 6 device rounds of local work each: flat = 6 cloud rounds; hierarchical = 2 cloud rounds of 3 edge rounds.
  const std::string base = "partition = iid\nclients = 6\nlocal_steps = 2\neval_every = 100\n";
  const std::string flat = run_ok(tmp, "flat_work", fedavg_recipe(tmp, tmp / "flat_work", base + "rounds = 6\n") +
                                                        "\n[network]\nlink = 20/100/30\n");
  const std::string hier = run_ok(tmp, "hier_work", fedavg_recipe(tmp, tmp / "hier_work", base + "rounds = 2\n") +
      "\n[topology]\nedges = 2\nedge_rounds = 3\ndevice_link = 20/100/30\nedge_link = 1000/1000/20\n");
  const auto rounds = events(hier, "round");
  ASSERT_EQ(rounds.size(), 2u);
  for (const auto& r : rounds) {
    EXPECT_EQ(r["tiers"]["device_edge"]["edge_rounds"], 6) << "2 edges x 3 edge rounds";
    EXPECT_EQ(r["tiers"]["device_edge"]["device_updates"], 18) << "6 devices in each of 3 edge rounds";
    EXPECT_EQ(r["clients_aggregated"], 2) << "the cloud aggregates the 2 edges";
    EXPECT_GT(r["tiers"]["device_edge"]["sim_s"].get<double>(), 0);
  }
  const auto f = nlohmann::json::parse(read_text(flat + "/summary.json")), h = nlohmann::json::parse(read_text(hier + "/summary.json"));
  // Cloud link: flat moves 6 rounds x 6 device updates, hierarchical 2 rounds x 2 edge models.
  EXPECT_LT(h["bytes_up"].get<double>() * 8, f["bytes_up"].get<double>());
  EXPECT_EQ(h["edges"], 2);
  EXPECT_EQ(h["edge_rounds"], 3);
}

TEST_F(CliHierarchical, DevicesGroupedByAMetadataKey) {
  const TempDir& tmp = *tmp_;
  // The fixture corpus again, each document also labelled with its speaker's side.
  std::ifstream in(tmp / "speakers.jsonl");
  std::ofstream out(tmp / "sides.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    const std::string s = j["speaker"];
    j["side"] = (s == "ahab" || s == "starbuck") ? "crew" : "sailors";
    out << j.dump() << "\n";
  }
  out.close();
  std::string recipe = fedavg_recipe(tmp, tmp / "sides", "rounds = 1\n") + "\n[topology]\ngrouping = key\ngroup_key = side\n";
  const std::string corpus = tmp / "speakers.jsonl";
  recipe.replace(recipe.find(corpus), corpus.size(), tmp / "sides.jsonl");
  const std::string dir = run_ok(tmp, "sides", recipe);
  const auto edges = nlohmann::json::parse(read_text(dir + "/partition.json"))["edges"];
  EXPECT_EQ(edges["crew"], nlohmann::json({"ahab", "starbuck"}));
  EXPECT_EQ(edges["sailors"], nlohmann::json({"ishmael", "queequeg"}));
}

TEST_F(CliHierarchical, KeysThatDoNotFitAreRefused) {
  const TempDir& tmp = *tmp_;
  const std::vector<std::pair<std::string, std::string>> cases{
      {"[topology]\nedges = 9\n", "topology.edges = 9 must be between 1 and the 4 devices"},
      {"[topology]\ngrouping = sizes\ndevices_per_edge = 1 2\n", "topology.devices_per_edge sums to 3"},
      {"[topology]\ngrouping = key\n", "needs topology.group_key"},
      {"[topology]\nedges = 2\nrobust_tier = both\n\n[robust]\nrule = median\n\n[secure]\naggregation = secagg\n",
       "at the edge tier (topology.secure_tier = edge, privacy_tier = cloud, robust_tier = both): robust.rule = median needs"},
      {"[topology]\nedges = 2\nsecure_tier = cloud\nprivacy_tier = edge\n\n[privacy]\ndp = distributed\n\n[secure]\naggregation = secagg\n",
       "at the edge tier"},
      {"[topology]\nedges = 2\n\n[privacy]\nlocal_dp_sgd = true\n", "set topology.privacy_tier = edge or both"}};
  for (const auto& [sections, needle] : cases) {
    write_text(tmp / "bad.ini", fedavg_recipe(tmp, tmp / "bad", "rounds = 1\n") + "\n" + sections);
    const auto r = run_fedsplit("run " + (tmp / "bad.ini"));
    EXPECT_NE(r.exit_code, 0) << sections;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
  }
}

TEST_F(CliHierarchical, SecureAggregationAtEitherTierGivesThePlainModel) {
  // Edges learn only their devices' sum, the cloud only the edges' sum, or both. After one cloud round
  // the model is the plain hierarchy's up to the ring's fixed-point step (range / 2^30 per value); over
  // more rounds local training amplifies those steps (~1e-4 here), so the longer run compares held-out loss.
  const TempDir& tmp = *tmp_;
  const std::string fed = "partition = iid\nclients = 6\n";
  for (const std::string length : {"rounds = 1\n", "rounds = 2\n"}) {
    const bool short_run = length == "rounds = 1\n";
    const std::string topology = std::string("\n[topology]\nedges = 2\nedge_rounds = ") + (short_run ? "1" : "2") + "\n";
    const std::string suffix = short_run ? "_1" : "_2";
    const std::string plain = run_ok(tmp, "plain" + suffix, fedavg_recipe(tmp, tmp / ("plain" + suffix), fed + length) + topology);
    for (const std::string tier : {"edge", "cloud", "both"}) {
      const std::string name = "secure_" + tier + suffix;
      const std::string dir = run_ok(tmp, name, fedavg_recipe(tmp, tmp / name, fed + length) + topology +
                                                                "secure_tier = " + tier + "\n\n[secure]\naggregation = secagg\n");
      const auto rounds = events(dir, "round");
      ASSERT_EQ(rounds.size(), short_run ? 1u : 2u);
      EXPECT_EQ(rounds.back()["secure"].is_null(), tier == "edge") << "the cloud's round line shows its own protocol: " << tier;
      if (short_run) {
        EXPECT_LE(max_difference(global_of(plain), global_of(dir)), 1e-6) << tier;
        continue;
      }
      EXPECT_EQ(rounds[1]["tiers"]["device_edge"]["device_updates"], 12) << tier;
      EXPECT_NEAR(events(plain, "eval").back()["val_loss"].get<double>(), events(dir, "eval").back()["val_loss"].get<double>(), 1e-3) << tier;
    }
  }
}

TEST_F(CliHierarchical, DeviceSpeedsAndAvailabilityShapeTheEdgeTier) {
  const TempDir& tmp = *tmp_;
  // ahab never shows up; starbuck computes so slowly that the edge deadline leaves it out.
  const std::string dir = run_ok(tmp, "profiles", fedavg_recipe(tmp, tmp / "profiles",
      "rounds = 1\nclient_speeds = starbuck=1\ndeadline_s = 100\nlocal_steps = 2\n") +
      "\n[topology]\nedges = 2\nedge_rounds = 2\ndevice_availability = ahab=0\n");
  const auto round = events(dir, "round").at(0);
  EXPECT_EQ(round["tiers"]["device_edge"]["device_updates"], 4) << "2 edge rounds x (4 devices - ahab - starbuck)";
  int late = 0;
  for (const auto& e : round["excluded"]) late += e["client"] == "starbuck" && e["reason"].get<std::string>().rfind("late:", 0) == 0;
  EXPECT_EQ(late, 2);
  // An edge none of whose devices is ever available sends nothing; the cloud averages the other.
  const std::string empty_edge = run_ok(tmp, "empty_edge", fedavg_recipe(tmp, tmp / "empty_edge", "rounds = 1\n") +
      "\n[topology]\nedges = 2\ndevice_availability = ahab=0 ishmael=0\n");
  const auto r = events(empty_edge, "round").at(0);
  EXPECT_EQ(r["clients_aggregated"], 1);
  EXPECT_NE(r["excluded"].dump().find("none of its edge rounds aggregated"), std::string::npos) << r["excluded"].dump();
  const auto partition = nlohmann::json::parse(read_text(dir + "/partition.json"));
  for (const auto& c : partition["client_list"]) {
    if (c["name"] == "starbuck") {
      EXPECT_EQ(c["tokens_per_s"], 1.0);
    }
  }
}

TEST_F(CliHierarchical, AStoppedRunResumesToTheSameModel) {
  const TempDir& tmp = *tmp_;
  const std::string topology = "\n[topology]\nedges = 2\nedge_rounds = 2\n";
  const std::string whole = run_ok(tmp, "whole", fedavg_recipe(tmp, tmp / "whole", "rounds = 2\nsample_count = 1\n") + topology);
  write_text(tmp / "parts.ini", fedavg_recipe(tmp, tmp / "parts", "rounds = 2\nsample_count = 1\n") + topology);
  auto r = run_fedsplit("run " + (tmp / "parts.ini") + " --run.stop_after=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("run " + (tmp / "parts.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(max_difference(global_of(whole), global_of(tmp / "parts")), 0.0);

  // Central DP at the edges: each edge's accountant is in the checkpoint, so the resumed run spends
  // from where it stopped and ends at the whole run's epsilon (a fresh accountant would report less).
  const std::string dp = topology + "privacy_tier = edge\n\n[privacy]\ndp = central\nclip = 1\nnoise_multiplier = 0.5\n";
  const std::string dp_whole = run_ok(tmp, "dp_whole", fedavg_recipe(tmp, tmp / "dp_whole", "rounds = 2\nsample_count = 1\n") + dp);
  write_text(tmp / "dp_parts.ini", fedavg_recipe(tmp, tmp / "dp_parts", "rounds = 2\nsample_count = 1\n") + dp);
  r = run_fedsplit("run " + (tmp / "dp_parts.ini") + " --run.stop_after=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("run " + (tmp / "dp_parts.ini") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(max_difference(global_of(dp_whole), global_of(tmp / "dp_parts")), 0.0);
  const auto whole_summary = nlohmann::json::parse(read_text(dp_whole + "/summary.json"));
  const auto parts_summary = nlohmann::json::parse(read_text(tmp / "dp_parts/summary.json"));
  ASSERT_TRUE(whole_summary.contains("edge_epsilon_max")) << whole_summary.dump();
  EXPECT_GT(whole_summary["edge_epsilon_max"].get<double>(), events(dp_whole, "round").at(0)["tiers"]["device_edge"]["epsilon_max"].get<double>());
  EXPECT_DOUBLE_EQ(whole_summary["edge_epsilon_max"].get<double>(), parts_summary["edge_epsilon_max"].get<double>());
}
