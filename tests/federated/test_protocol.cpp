// labels: unit
// The pieces every rank must agree on without talking: messages (encoded, checked, never read out of
// bounds), client sampling and hosting (pure functions of seed, round and attempt), and the recipe's
// per-client ranks and faults.
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "core/util/error.h"
#include "core/comm/message.h"
#include "federated/options.h"
#include "federated/sampling.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

TEST(Message, RoundTripsMetaAndTensorsExactly) {
  Message m;
  m.meta = {{"client", 3}, {"loss", 1.25}};
  m.tensors["a.lora_A"] = torch::randn({4, 7});
  m.tensors["b"] = torch::arange(5, torch::kInt64);
  m.tensors["empty"] = torch::zeros({0, 3});
  m.tensors["half"] = torch::randn({3}).to(torch::kBFloat16);
  const std::string bytes = encode_message(m);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data() + 4, 8);
  EXPECT_EQ(bytes.size(), 12 + header_len + static_cast<uint64_t>(payload_bytes(m.tensors))) << "header then payload, nothing else";
  const Message back = decode_message(bytes, "test");
  EXPECT_EQ(back.meta, m.meta);
  ASSERT_EQ(back.tensors.size(), m.tensors.size());
  for (const auto& [name, t] : m.tensors) {
    EXPECT_EQ(back.tensors.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(back.tensors.at(name), t)) << name;
  }
}

TEST(Message, RefusesDamagedBytesWithoutReadingPastThem) {
  Message m;
  m.tensors["w"] = torch::randn({16, 16});
  const std::string bytes = encode_message(m);
  expect_one_line_error<FormatError>([&] { decode_message("nope", "client 2 on rank 1"); },
                                     {"client 2 on rank 1", "not a fedsplit message"});
  // Every truncation fails cleanly (the payload no longer fits, or the header breaks).
  for (size_t cut : {size_t{13}, size_t{40}, bytes.size() / 2, bytes.size() - 1})
    expect_error<FormatError>([&] { decode_message(bytes.substr(0, cut), "peer"); }, {"peer"});
  // A header that claims a larger tensor than the payload holds.
  std::string lying = bytes;
  const auto at = lying.find("[16,16]");
  ASSERT_NE(at, std::string::npos);
  lying.replace(at, 7, "[16,17]");
  expect_error<FormatError>([&] { decode_message(lying, "peer"); }, {"w", "does not fit"});
  std::string absurd = bytes;
  absurd.replace(absurd.find("[16,16]"), 7, "[1,-16]");
  expect_error<FormatError>([&] { decode_message(absurd, "peer"); }, {"absurd shape"});
}

TEST(Sampling, IsSeededDistinctAndOfTheAskedSize) {
  EXPECT_EQ(sample_size(200, 0.1, 0), 20);
  EXPECT_EQ(sample_size(200, 0.1, 7), 7);
  EXPECT_EQ(sample_size(5, 0.01, 0), 1);
  EXPECT_EQ(sample_size(5, 1.0, 9), 5);
  const auto a = sample_clients(200, 20, 42, 3, 0);
  EXPECT_EQ(a, sample_clients(200, 20, 42, 3, 0)) << "a pure function of (seed, round, attempt)";
  EXPECT_NE(a, sample_clients(200, 20, 42, 4, 0));
  EXPECT_NE(a, sample_clients(200, 20, 42, 3, 1)) << "a retried round draws a new sample";
  EXPECT_NE(a, sample_clients(200, 20, 43, 3, 0));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 20u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(sample_clients(4, 10, 1, 0, 0), (std::vector<int64_t>{0, 1, 2, 3}));
  // Over many rounds every client is drawn about equally often (20 of 200 per round).
  std::vector<int> counts(200, 0);
  for (int64_t r = 0; r < 1000; ++r)
    for (int64_t c : sample_clients(200, 20, 9, r, 0)) ++counts[static_cast<size_t>(c)];
  for (int n : counts) EXPECT_NEAR(n, 100, 40);
}

TEST(Sampling, HostsAndStragglers) {
  EXPECT_EQ(host_rank(5, 1), 0) << "a world of one hosts everyone on rank 0";
  EXPECT_EQ(host_rank(0, 4), 1);
  EXPECT_EQ(host_rank(2, 4), 3);
  EXPECT_EQ(host_rank(3, 4), 1);
  const auto s = pick_share(50, 0.2, 7);
  EXPECT_EQ(std::count(s.begin(), s.end(), true), 10);
  EXPECT_EQ(s, pick_share(50, 0.2, 7));
  EXPECT_NE(client_seed(1, 2, 3), client_seed(1, 3, 2));
}

TEST(FederatedOptions, ClientRanksAreDealtOrNamed) {
  const std::vector<std::string> names = {"Lincoln", "Grant", "Hayes", "Arthur", "Cleveland"};
  EXPECT_EQ(client_lora_ranks("", names, 8), (std::vector<int64_t>{8, 8, 8, 8, 8}));
  EXPECT_EQ(client_lora_ranks("8 4 2", names, 8), (std::vector<int64_t>{8, 4, 2, 8, 4}));
  EXPECT_EQ(client_lora_ranks("2, Grant=8", names, 8), (std::vector<int64_t>{2, 8, 2, 2, 2}));
  EXPECT_EQ(client_lora_ranks("4=1", names, 8), (std::vector<int64_t>{8, 8, 8, 8, 1})) << "by index";
  expect_one_line_error<ConfigError>([&] { client_lora_ranks("16", names, 8); }, {"federated.client_ranks", "1..8"});
  expect_one_line_error<ConfigError>([&] { client_lora_ranks("Nixon=2", names, 8); },
                                     {"federated.client_ranks", "Nixon", "Lincoln"});
  EXPECT_EQ(parse_faults("Grant=nonfinite 3=silent", names), (std::map<int64_t, std::string>{{1, "nonfinite"}, {3, "silent"}}));
  expect_one_line_error<ConfigError>([&] { parse_faults("Grant=crash", names); }, {"federated.faults", "Grant=crash"});
}
