// labels: unit
// core/comm with threads as ranks (World::in_process), a world of one, and the link model's arithmetic.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "core/comm/link_model.h"
#include "core/comm/world.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using testing::expect_one_line_error;

/// Runs `body` on `size` threads, each rank `r` of the in-process world `group`, and expects none to throw.
/// Each rank ends with a barrier unless `final_barrier` is false, so no rank tears down while a peer still reads.
template <class F>
void run_ranks(const std::string& group, int size, F body, CommOptions options = {}, bool final_barrier = true) {
  std::vector<std::string> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto world = World::in_process(group, r, size, options);
        body(*world);
        if (final_barrier) world->barrier();
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < size; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

std::string pattern_bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);  // zeros included
  return s;
}

TEST(Comm, SendRecvRoundTripsFloatAndInt64Exactly) {
  const auto floats = torch::linspace(-3.7, 11.3, 24, torch::kFloat).reshape({2, 3, 4}) / 7;
  const auto ints = torch::arange(10, torch::kInt64) * (int64_t(1) << 40) - 5;
  const auto wide = torch::arange(12, torch::kFloat).reshape({3, 4});
  run_ranks("roundtrip", 2, [&](World& w) {
    EXPECT_EQ(w.backend(), "gloo");
    EXPECT_EQ(w.device(), torch::Device(torch::kCPU));
    if (w.rank() == 0) {
      w.send(floats, 1);
      w.send(ints, 1, /*tag=*/3);
      w.send(wide.t(), 1);  // not contiguous: sent as its contiguous copy
      w.send(torch::empty({0, 5}), 1);
      auto back = torch::empty({10}, torch::kInt64);
      w.recv(back, 1);
      EXPECT_TRUE(torch::equal(back, ints + 1));
    } else {
      auto f = torch::zeros({2, 3, 4});
      auto i = torch::zeros({10}, torch::kInt64);
      auto t = torch::zeros({3, 4}).t();  // received into a non-contiguous tensor in place
      w.recv(f, 0);
      w.recv(i, 0, 3);
      w.recv(t, 0);
      auto none = torch::empty({0, 5});
      w.recv(none, 0);
      EXPECT_TRUE(torch::equal(f, floats));
      EXPECT_TRUE(torch::equal(i, ints));
      EXPECT_TRUE(torch::equal(t, wide.t()));
      w.send(i + 1, 0);
    }
  });
}

// isend and irecv return at once: both ranks post their receives and sends before waiting on any,
// a pattern blocking calls would deadlock in, and the messages arrive in order per tag.
TEST(Comm, StartedSendsAndReceivesCompleteInOrder) {
  run_ranks("pending", 2, [&](World& w) {
    const int peer = 1 - w.rank();
    std::vector<torch::Tensor> got;
    std::vector<World::Pending> pending;
    for (int i = 0; i < 3; ++i) {
      got.push_back(torch::zeros({5}));
      pending.push_back(w.irecv(got.back(), peer, /*tag=*/2));
    }
    for (int i = 0; i < 3; ++i) pending.push_back(w.isend(torch::full({5}, 10.0 * w.rank() + i), peer, 2));
    for (auto& p : pending) p.wait();
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(got[i], torch::full({5}, 10.0 * peer + i))) << i;
  });
}

TEST(Comm, SendBytesRoundTripsEmptySmallAndLarge) {
  const std::string large = pattern_bytes(10 * 1000 * 1000);
  const std::string small("a\0b\xff", 4);
  run_ranks("bytes", 2, [&](World& w) {
    if (w.rank() == 0) {
      w.send_bytes("", 1);
      w.send_bytes(small, 1, 7);
      w.send_bytes(large, 1);
    } else {
      EXPECT_EQ(w.recv_bytes(0), "");
      EXPECT_EQ(w.recv_bytes(0, 7), small);
      const std::string got = w.recv_bytes(0);
      EXPECT_EQ(got.size(), large.size());
      EXPECT_TRUE(got == large);
    }
  });
}

TEST(Comm, BroadcastFromRankZeroAndRankTwo) {
  for (int root : {0, 2}) {
    const auto value = torch::arange(6, torch::kFloat).reshape({2, 3}) + 100 * root;
    std::atomic<int> ok{0};
    run_ranks("broadcast" + std::to_string(root), 3, [&](World& w) {
      auto t = w.rank() == root ? value.clone() : torch::full({2, 3}, -1.0f);
      w.broadcast(t, root);
      if (torch::equal(t, value)) ++ok;
    });
    EXPECT_EQ(ok, 3) << "root " << root;
  }
}

TEST(Comm, BroadcastBytesReplacesTheOthersStrings) {
  const std::string message("head\0tail", 9);
  std::atomic<int> ok{0};
  run_ranks("broadcast_bytes", 3, [&](World& w) {
    std::string bytes = w.rank() == 1 ? message : std::string("stale");
    w.broadcast_bytes(bytes, 1);
    std::string empty = w.rank() == 1 ? std::string() : std::string("stale");
    w.broadcast_bytes(empty, 1);
    if (bytes == message && empty.empty()) ++ok;
  });
  EXPECT_EQ(ok, 3);
}

TEST(Comm, BarrierWaitsForEveryRank) {
  std::atomic<int> arrived{0};
  std::atomic<int> saw_all{0};
  run_ranks("barrier", 3, [&](World& w) {
    if (w.rank() == 2) std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the late one
    ++arrived;
    w.barrier();
    if (arrived == 3) ++saw_all;
  });
  EXPECT_EQ(saw_all, 3);
}

TEST(Comm, TrafficCountsPayloadBytesAndMessagesOnBothSides) {
  std::vector<TrafficStats> stats(3);
  run_ranks("traffic", 3, [&](World& w) {
    if (w.rank() == 0) {
      w.send(torch::zeros({10}, torch::kFloat), 1);  // 40 bytes
      w.send_bytes("abc", 1);                        // 8 + 3 bytes, two messages
    } else if (w.rank() == 1) {
      auto t = torch::empty({10});
      w.recv(t, 0);
      EXPECT_EQ(w.recv_bytes(0), "abc");
    }
    auto b = torch::zeros({4}, torch::kFloat64);  // 32 bytes from rank 1 to the two others
    w.broadcast(b, 1);
    w.barrier();  // moves no payload
    stats[w.rank()] = w.traffic();
  });
  EXPECT_EQ(stats[0].bytes_sent, 51);
  EXPECT_EQ(stats[0].messages_sent, 3);
  EXPECT_EQ(stats[0].bytes_received, 32);
  EXPECT_EQ(stats[0].messages_received, 1);
  EXPECT_EQ(stats[1].bytes_sent, 64);
  EXPECT_EQ(stats[1].messages_sent, 2);
  EXPECT_EQ(stats[1].bytes_received, 51);
  EXPECT_EQ(stats[1].messages_received, 3);
  EXPECT_EQ(stats[2].bytes_sent, 0);
  EXPECT_EQ(stats[2].messages_sent, 0);
  EXPECT_EQ(stats[2].bytes_received, 32);
  EXPECT_EQ(stats[2].messages_received, 1);
}

TEST(Comm, RecvFromSilentPeerTimesOutNamingThePeer) {
  CommOptions options;
  options.timeout_s = 2;
  std::promise<void> done;
  auto done_future = done.get_future().share();
  std::string message;
  double waited = 0;
  run_ranks(
      "timeout", 2,
      [&](World& w) {
        if (w.rank() == 1) {  // stays alive but never sends, until rank 0 has given up
          done_future.wait();
          return;
        }
        const auto start = std::chrono::steady_clock::now();
        auto t = torch::empty({4});
        const auto what = testing::expect_error<CommError>([&] { w.recv(t, 1, 5); },
                                                           {"rank 0", "from rank 1", "tag 5", "2 s timeout"});
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        done.set_value();
      },
      options, /*final_barrier=*/false);
  EXPECT_GE(waited, 1.5);
  EXPECT_LT(waited, 15);
}

TEST(Comm, RecvBytesBeyondMaxBytesThrows) {
  const std::string payload = pattern_bytes(100);
  run_ranks("maxbytes", 2, [&](World& w) {
    if (w.rank() == 0) {
      w.send_bytes(payload, 1);
    } else {
      expect_one_line_error<CommError>([&] { w.recv_bytes(0, 0, 10); }, {"rank 1", "from rank 0", "100 bytes", "max_bytes"});
      auto rest = torch::empty({100}, torch::kUInt8);  // the sender still sends the payload: drain it
      w.recv(rest, 0);
    }
  });
}

TEST(Comm, BadPeersAndTagsThrow) {
  run_ranks("peers", 2, [&](World& w) {
    auto t = torch::zeros({1});
    expect_one_line_error<CommError>([&] { w.send(t, 5); }, {"rank 5 does not exist", "2 ranks"});
    expect_one_line_error<CommError>([&] { w.recv(t, -1); }, {"rank -1 does not exist"});
    expect_one_line_error<CommError>([&] { w.send(t, w.rank()); }, {"cannot send to itself"});
    expect_one_line_error<CommError>([&] { w.send(t, 1 - w.rank(), -2); }, {"tag -2"});
    expect_one_line_error<CommError>([&] { w.broadcast(t, 2); }, {"rank 2 does not exist"});
  });
}

TEST(Comm, SubgroupsRunCollectivesAmongTheirMembersAlone) {
  // Ranks {0, 1} and {2, 3} broadcast within their own subgroup at the same time, then the world
  // broadcasts again: the subgroups neither mix their data nor disturb the parent.
  run_ranks("subgroups", 4, [](World& world) {
    const bool first = world.rank() < 2;
    const std::vector<int> members = first ? std::vector<int>{0, 1} : std::vector<int>{2, 3};
    auto sub = world.subgroup(members, first ? "edge-a" : "edge-b");
    EXPECT_EQ(sub->size(), 2);
    EXPECT_EQ(sub->rank(), world.rank() % 2);
    auto t = torch::full({3}, sub->rank() == 0 ? 10.0f + static_cast<float>(members[0]) : -1.0f);
    sub->broadcast(t, 0);
    EXPECT_TRUE(torch::equal(t, torch::full({3}, 10.0f + static_cast<float>(members[0]))));
    EXPECT_EQ(sub->traffic().bytes_sent + sub->traffic().bytes_received, 12);
    auto all = torch::full({1}, world.rank() == 0 ? 7.0f : 0.0f);
    world.broadcast(all, 0);
    EXPECT_EQ(all.item<float>(), 7.0f);
    sub->barrier();
    auto alone = world.subgroup({world.rank()}, "alone-" + std::to_string(world.rank()));
    EXPECT_EQ(alone->size(), 1);
    expect_one_line_error<CommError>([&] { world.subgroup({(world.rank() + 1) % 4}, "not-mine"); }, {"is not a member"});
    expect_one_line_error<CommError>([&] { world.subgroup({1, 0}, "unsorted"); }, {"distinct ascending"});
  });
}

TEST(Comm, WorldOfOneWithoutMpirun) {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) ::unsetenv(name);
  auto w = World::create({});
  EXPECT_EQ(w->rank(), 0);
  EXPECT_EQ(w->size(), 1);
  EXPECT_EQ(w->backend(), "none");
  EXPECT_EQ(w->device(), torch::Device(torch::kCPU));
  auto t = torch::ones({3});
  w->broadcast(t, 0);  // no-ops
  w->barrier();
  EXPECT_TRUE(torch::equal(t, torch::ones({3})));
  expect_one_line_error<CommError>([&] { w->send(t, 1); }, {"rank 1 does not exist", "world of 1 rank"});
  expect_one_line_error<CommError>([&] { w->recv_bytes(1); }, {"rank 1 does not exist"});
  const auto stats = w->traffic();
  EXPECT_EQ(stats.bytes_sent + stats.bytes_received + stats.messages_sent + stats.messages_received, 0);

  auto alone = World::in_process("alone", 0, 1);
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->backend(), "none");
}

TEST(Comm, BadOptionsThrow) {
  CommOptions bad_backend;
  bad_backend.backend = "mpi";
  expect_one_line_error<ConfigError>([&] { World::create(bad_backend); }, {"backend 'mpi'", "auto, gloo or nccl"});
  CommOptions bad_timeout;
  bad_timeout.timeout_s = 0;
  expect_one_line_error<ConfigError>([&] { World::create(bad_timeout); }, {"timeout_s"});
  CommOptions nccl;
  nccl.backend = "nccl";
  expect_one_line_error<CommError>([&] { World::in_process("nccl", 0, 2, nccl); }, {"Gloo only"});
}

TEST(LinkModel, TransferSecondsIsBandwidthPlusLatencyPerMessage) {
  LinkClass link;
  link.up_mbps = 8;
  link.down_mbps = 16;
  link.latency_ms = 30;
  EXPECT_DOUBLE_EQ(transfer_seconds(link, 1000000, 1, true), 1.0 + 0.03);  // 8 Mbit over 8 Mbit/s
  EXPECT_DOUBLE_EQ(transfer_seconds(link, 1000000, 1, false), 0.5 + 0.03);
  EXPECT_DOUBLE_EQ(transfer_seconds(link, 3000000, 4, true), 3.0 + 0.12);
  EXPECT_DOUBLE_EQ(transfer_seconds(link, 0, 0, true), 0.0);
  link.up_mbps = 0;  // unlimited: only the latency remains
  EXPECT_DOUBLE_EQ(transfer_seconds(link, 1 << 30, 3, true), 0.09);
  EXPECT_THROW(transfer_seconds(link, -1, 0, true), Error);
  // An exchange: down at the downlink's speed, up at the uplink's, each with its messages' latency.
  EXPECT_DOUBLE_EQ(exchange_seconds(link, 1000000, 3000000, 2), transfer_seconds(link, 1000000, 2, false) +
                                                                   transfer_seconds(link, 3000000, 2, true));
  EXPECT_EQ(exchange_seconds(std::nullopt, 1000000, 3000000, 2), 0.0) << "no link model, no network time";
}

TEST(LinkModel, ParsesUpDownLatency) {
  const auto link = parse_link("edge", "20/100/30", "topology.edge.link");
  EXPECT_EQ(link.name, "edge");
  EXPECT_DOUBLE_EQ(link.up_mbps, 20);
  EXPECT_DOUBLE_EQ(link.down_mbps, 100);
  EXPECT_DOUBLE_EQ(link.latency_ms, 30);
  const auto spaced = parse_link("cloud", " 0.5 / 0 / 2.25 ", "k");
  EXPECT_DOUBLE_EQ(spaced.up_mbps, 0.5);
  EXPECT_DOUBLE_EQ(spaced.down_mbps, 0);
  EXPECT_DOUBLE_EQ(spaced.latency_ms, 2.25);
  for (const char* bad : {"", "20/100", "20/100/30/1", "a/b/c", "20/100/", "-1/2/3", "20x/1/1", "inf/1/1", "1//3"})
    expect_one_line_error<ConfigError>([&] { parse_link("edge", bad, "topology.edge.link"); },
                                       {"topology.edge.link", "up_mbps/down_mbps/latency_ms"});
}

}  // namespace
}  // namespace fedsplit
