// labels: gpu
// One rank per GPU over NCCL: the federated recipe under `mpirun -np 2 ... --federated.backend=nccl`
// (server on GPU 0, the clients on GPU 1) computes the same round-1 client updates and moves the same
// messages as one process on one GPU. Skips without two CUDA devices or mpirun.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "tests/launch/cli_helpers.h"
#include "tests/launch/federated_helpers.h"

using namespace fedsplit::testing;

TEST(CliFederatedGpu, NcclRanksMatchOneGpu) {
  if (torch::cuda::device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  TempDir tmp("cli_federated_gpu");
  write_corpus(tmp / "speakers.jsonl");
  const std::string cuda = " --run.device=cuda --train.bf16=false";
  write_text(tmp / "one.ini", fedavg_recipe(tmp, tmp / "one", "rounds = 2\n"));
  write_text(tmp / "two.ini", fedavg_recipe(tmp, tmp / "two", "rounds = 2\nbackend = nccl\n"));
  auto r = run_fedsplit("run " + (tmp / "one.ini") + cuda);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string cmd = "timeout 300 mpirun --allow-run-as-root --oversubscribe -np 2 -x LD_LIBRARY_PATH '" +
                          std::string(FEDSPLIT_BINARY) + "' run " + (tmp / "two.ini") + cuda + " 2>&1";
  const auto run = run_command(cmd);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("world of 2 (nccl)"), std::string::npos) << run.output;
  const auto one = events(tmp / "one", "round"), two = events(tmp / "two", "round");
  ASSERT_EQ(two.size(), 2u);
  EXPECT_NEAR(one[0]["train_loss"].get<double>(), two[0]["train_loss"].get<double>(), 1e-5);
  EXPECT_NEAR(one[0]["bytes_up"].get<double>(), two[0]["bytes_up"].get<double>(), 64);
  EXPECT_GT(two[0]["wire_bytes_received"].get<int64_t>(), 0);
}
