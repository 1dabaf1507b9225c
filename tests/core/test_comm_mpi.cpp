// labels: unit mpi
// core/comm under a real `mpirun -np 2`: this program starts itself under mpirun, and the two child
// processes (told apart by FEDSPLIT_COMM_MPI_CHILD) build a Gloo World through MPI and exchange data.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

#include "core/comm/world.h"

namespace fedsplit {
namespace {

constexpr const char* kChildVariable = "FEDSPLIT_COMM_MPI_CHILD";

bool is_child() { return std::getenv(kChildVariable) != nullptr; }

/// The full path of `program` on PATH, or "".
std::string on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const auto candidate = std::filesystem::path(dir.empty() ? "." : dir) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return "";
}

TEST(CommMpi, Child) {
  if (!is_child()) GTEST_SKIP() << "runs only as a child of CommMpi.TwoRanks";
  CommOptions options;
  options.backend = "gloo";
  options.timeout_s = 30;
  auto world = World::create(options);
  ASSERT_EQ(world->size(), 2);
  EXPECT_EQ(world->backend(), "gloo");
  const int peer = 1 - world->rank();
  const auto values = torch::arange(1000, torch::kFloat) * 0.25;

  // Ping-pong: rank 0 sends, rank 1 answers with the values plus one and a byte string.
  if (world->rank() == 0) {
    world->send(values, peer);
    auto back = torch::empty({1000});
    world->recv(back, peer, 2);
    EXPECT_TRUE(torch::equal(back, values + 1));
    EXPECT_EQ(world->recv_bytes(peer), "from rank 1");
  } else {
    auto got = torch::empty({1000});
    world->recv(got, peer);
    EXPECT_TRUE(torch::equal(got, values));
    world->send(got + 1, peer, 2);
    world->send_bytes("from rank 1", peer);
  }
  auto shared = world->rank() == 1 ? torch::full({3}, 7, torch::kInt64) : torch::zeros({3}, torch::kInt64);
  world->broadcast(shared, 1);
  EXPECT_TRUE(torch::equal(shared, torch::full({3}, 7, torch::kInt64)));
  world->barrier();

  const auto stats = world->traffic();
  const int64_t sent = world->rank() == 0 ? 4000 : 4000 + 8 + 11 + 24;
  const int64_t received = world->rank() == 0 ? 4000 + 8 + 11 + 24 : 4000;
  EXPECT_EQ(stats.bytes_sent, sent);
  EXPECT_EQ(stats.bytes_received, received);

  // A subgroup of both ranks rendezvouses through the TCPStore under its own prefix and broadcasts;
  // a singleton subgroup needs no peer.
  auto pair = world->subgroup({0, 1}, "pair");
  auto flag = torch::full({2}, world->rank() == 0 ? 5.0f : 0.0f);
  pair->broadcast(flag, 0);
  EXPECT_TRUE(torch::equal(flag, torch::full({2}, 5.0f)));
  EXPECT_EQ(world->subgroup({world->rank()}, "self-" + std::to_string(world->rank()))->size(), 1);
  pair->barrier();
  if (!::testing::Test::HasFailure()) std::cout << "comm child rank " << world->rank() << " ok" << std::endl;
}

TEST(CommMpi, TwoRanks) {
  if (is_child()) GTEST_SKIP() << "the child runs CommMpi.Child only";
  const std::string mpirun = on_path("mpirun");
  if (mpirun.empty()) GTEST_SKIP() << "mpirun is not on PATH";
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string limit = on_path("timeout").empty() ? "" : "timeout 120 ";  // a hung child must not hang ctest
  const std::string command = std::string(kChildVariable) + "=1 " + limit + mpirun +
                              " --allow-run-as-root --oversubscribe -np 2 -x " + kChildVariable + " '" + self +
                              "' --gtest_filter=CommMpi.Child 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << "popen failed for: " << command;
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  const int status = ::pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status)) << command << "\n" << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << command << "\n" << output;
  EXPECT_NE(output.find("comm child rank 0 ok"), std::string::npos) << output;
  EXPECT_NE(output.find("comm child rank 1 ok"), std::string::npos) << output;
}

}  // namespace
}  // namespace fedsplit
