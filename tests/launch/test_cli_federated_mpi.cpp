// labels: unit mpi
// The deployment shape and the simulation shape are one code path: the same recipe under
// `mpirun -np 3` (rank 0 serves, ranks 1 and 2 host two clients each, tensors over Gloo) computes the
// same client updates and moves the same messages as a single process.
#include <gtest/gtest.h>

#include "tests/launch/cli_helpers.h"
#include "tests/launch/federated_helpers.h"

using namespace fedsplit::testing;

TEST(CliFederatedMpi, ThreeRanksMatchOneProcess) {
  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  TempDir tmp("cli_federated_mpi");
  write_corpus(tmp / "speakers.jsonl");
  write_text(tmp / "one.ini", fedavg_recipe(tmp, tmp / "one", "rounds = 3\n"));
  write_text(tmp / "three.ini", fedavg_recipe(tmp, tmp / "three", "rounds = 3\n"));
  auto r = run_fedsplit("run " + (tmp / "one.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // run_fedsplit runs FEDSPLIT_BINARY; here mpirun starts it, three times.
  const std::string cmd = "timeout 300 mpirun --allow-run-as-root --oversubscribe -np 3 '" + std::string(FEDSPLIT_BINARY) +
                          "' run " + (tmp / "three.ini") + " 2>&1";
  const auto run = run_command(cmd);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("world of 3 (gloo)"), std::string::npos) << run.output;

  // Round 1 starts both shapes from the same global model, so every client computes the same update:
  // the round's mean training loss agrees to float precision. Later rounds may drift apart by float
  // rounding (the server sums the updates in another order), which Adam can amplify to ~lr per element,
  // so the end is compared by its held-out loss.
  const auto one = global_of(tmp / "one"), three = global_of(tmp / "three");
  ASSERT_EQ(one.size(), three.size());
  const auto evals_one = events(tmp / "one", "eval"), evals_three = events(tmp / "three", "eval");
  EXPECT_NEAR(evals_one.back()["val_loss"].get<double>(), evals_three.back()["val_loss"].get<double>(), 0.01);
  const auto rounds_one = events(tmp / "one", "round"), rounds_three = events(tmp / "three", "round");
  ASSERT_EQ(rounds_three.size(), 3u);
  EXPECT_NEAR(rounds_one[0]["train_loss"].get<double>(), rounds_three[0]["train_loss"].get<double>(), 1e-6);
  for (size_t i = 0; i < 3; ++i) {
    // The same messages in both shapes, but for the digits of each client's measured wall time.
    EXPECT_NEAR(rounds_one[i]["bytes_up"].get<double>(), rounds_three[i]["bytes_up"].get<double>(), 4 * 8);
    EXPECT_EQ(rounds_one[i]["wire_bytes_sent"], 0) << "one process moves nothing over the wire";
    EXPECT_GT(rounds_three[i]["wire_bytes_received"].get<int64_t>(), rounds_three[i]["bytes_up"].get<int64_t>() - 1)
        << "the server received every update over Gloo";
  }
}

TEST(CliFederatedMpi, SecureRoundsWithDropoutsMatchOneProcess) {
  // Secure aggregation's four exchanges across ranks: rank 0 forwards shares to the client ranks and
  // unmasks; with a quarter of the clients dropping before their masked input, the sum of the
  // survivors equals the one-process run's (the masks differ from run to run, the sums do not).
  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  TempDir tmp("cli_secure_mpi");
  write_corpus(tmp / "speakers.jsonl");
  const std::string secure = "\n[secure]\naggregation = secagg\ndropout_fraction = 0.25\n";
  write_text(tmp / "one.ini", fedavg_recipe(tmp, tmp / "one", "rounds = 1\npartition = iid\nclients = 8\n") + secure);
  write_text(tmp / "three.ini", fedavg_recipe(tmp, tmp / "three", "rounds = 1\npartition = iid\nclients = 8\n") + secure);
  auto r = run_fedsplit("run " + (tmp / "one.ini"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto run = run_command("timeout 300 mpirun --allow-run-as-root --oversubscribe -np 3 '" + std::string(FEDSPLIT_BINARY) +
                               "' run " + (tmp / "three.ini") + " 2>&1");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto one = events(tmp / "one", "round").at(0), three = events(tmp / "three", "round").at(0);
  EXPECT_EQ(three["clients_aggregated"], 6);
  EXPECT_EQ(one["excluded"], three["excluded"]);
  const auto g1 = global_of(tmp / "one"), g3 = global_of(tmp / "three");
  EXPECT_LE(max_difference(g1, g3), 1e-6);
}

TEST(CliFederatedMpi, HierarchyOnFourRanksMatchesOneProcess) {
  // Rank 0 is the cloud; edge 0 gets ranks 1 (its server) and 2 (its devices), edge 1 rank 3 (server
  // and devices): the edges aggregate in parallel over their own subgroups. The same device updates,
  // summed in the same order, give the one-process model; secure aggregation at both tiers too.
  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  TempDir tmp("cli_hierarchy_mpi");
  write_corpus(tmp / "speakers.jsonl");
  const std::string fed = "rounds = 2\npartition = iid\nclients = 6\n";
  const std::string topology = "\n[topology]\nedges = 2\nedge_rounds = 2\n";
  const std::string secure = "secure_tier = both\n\n[secure]\naggregation = secagg\n";
  for (const std::string name : {"plain", "secure"}) {
    const std::string extra = topology + (name == "secure" ? secure : "");
    write_text(tmp / (name + "_one.ini"), fedavg_recipe(tmp, tmp / (name + "_one"), fed) + extra);
    write_text(tmp / (name + "_four.ini"), fedavg_recipe(tmp, tmp / (name + "_four"), fed) + extra);
    const auto one = run_fedsplit("run " + (tmp / (name + "_one.ini")));
    ASSERT_EQ(one.exit_code, 0) << one.output;
    const auto four = run_command("timeout 300 mpirun --allow-run-as-root --oversubscribe -np 4 '" + std::string(FEDSPLIT_BINARY) +
                                  "' run " + (tmp / (name + "_four.ini")) + " 2>&1");
    ASSERT_EQ(four.exit_code, 0) << four.output;
    EXPECT_LE(max_difference(global_of(tmp / (name + "_one")), global_of(tmp / (name + "_four"))), 1e-6) << name;
    const auto r1 = events(tmp / (name + "_one"), "round"), r4 = events(tmp / (name + "_four"), "round");
    ASSERT_EQ(r4.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(r1[i]["tiers"]["device_edge"]["device_updates"], r4[i]["tiers"]["device_edge"]["device_updates"]);
      EXPECT_NEAR(r1[i]["train_loss"].get<double>(), r4[i]["train_loss"].get<double>(), 1e-6) << name;
      EXPECT_GT(r4[i]["wire_bytes_received"].get<int64_t>(), 0) << "the edge models reached the cloud over Gloo";
    }
  }
  const auto partition = nlohmann::json::parse(read_text(tmp / "plain_four/partition.json"));
  for (const auto& c : partition["client_list"]) {
    const bool in_edge_0 = partition["edges"]["edge-0"].dump().find(c["name"].dump()) != std::string::npos;
    EXPECT_EQ(c["host_rank"], in_edge_0 ? 2 : 3) << c["name"];
  }
  // Two edges need a cloud rank and a rank each.
  write_text(tmp / "few.ini", fedavg_recipe(tmp, tmp / "few", fed) + topology);
  const auto few = run_command("timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 '" + std::string(FEDSPLIT_BINARY) +
                               "' run " + (tmp / "few.ini") + " 2>&1");
  EXPECT_NE(few.exit_code, 0);
  EXPECT_NE(few.output.find("needs at least 3 ranks under mpirun"), std::string::npos) << few.output;
}
