// labels: unit
// Grouping devices into edges: equal shares in partition order (the first edges take the remainder),
// listed sizes, or by the majority label of each device's documents; and the one-line errors.
#include <gtest/gtest.h>

#include "core/util/error.h"
#include "federated/topology.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

const std::vector<std::string> kDevices{"a", "b", "c", "d", "e"};

TopologyOptions with(const std::string& grouping, int64_t edges, const std::string& sizes = "", const std::string& key = "") {
  TopologyOptions o;
  o.grouping = grouping;
  o.edges = edges;
  o.devices_per_edge = sizes;
  o.group_key = key;
  return o;
}

}  // namespace

TEST(Topology, EqualSharesInPartitionOrder) {
  const Topology t = build_topology(with("equal", 2), kDevices, {});
  EXPECT_EQ(t.edge_names, (std::vector<std::string>{"edge-0", "edge-1"}));
  EXPECT_EQ(t.devices, (std::vector<std::vector<int64_t>>{{0, 1, 2}, {3, 4}}));
}

TEST(Topology, ListedSizes) {
  const Topology t = build_topology(with("sizes", 0, "1 4"), kDevices, {});
  EXPECT_EQ(t.devices, (std::vector<std::vector<int64_t>>{{0}, {1, 2, 3, 4}}));
}

TEST(Topology, ByMajorityLabelInOrderOfFirstAppearance) {
  // Device documents: 0 {0, 1}, 1 {2}, 2 {3, 4, 5}, 3 {6}, 4 {7}; document labels below.
  const std::vector<std::string> labels{"north", "north", "south", "south", "north", "south", "north", "south"};
  const auto groups = majority_labels({{0, 1}, {2}, {3, 4, 5}, {6}, {7}}, labels);
  EXPECT_EQ(groups, (std::vector<std::string>{"north", "south", "south", "north", "south"}));
  EXPECT_EQ(majority_labels({{0, 2}}, labels), (std::vector<std::string>{"north"})) << "a tie goes to the smallest";
  const Topology t = build_topology(with("key", 0, "", "region"), kDevices, groups);
  EXPECT_EQ(t.edge_names, (std::vector<std::string>{"north", "south"}));
  EXPECT_EQ(t.devices, (std::vector<std::vector<int64_t>>{{0, 3}, {1, 2, 4}}));
}

TEST(Topology, GroupingsThatDoNotFitAreRefused) {
  expect_one_line_error<ConfigError>([] { build_topology(with("equal", 6), kDevices, {}); }, {"topology.edges = 6"});
  expect_one_line_error<ConfigError>([] { build_topology(with("sizes", 0, "2 2"), kDevices, {}); }, {"sums to 4"});
  expect_one_line_error<ConfigError>([] { build_topology(with("sizes", 0, "2 x"), kDevices, {}); }, {"'x' is not a number"});
  expect_one_line_error<ConfigError>([] { build_topology(with("key", 0), kDevices, {}); }, {"needs topology.group_key"});
  expect_one_line_error<ConfigError>([] { build_topology(with("key", 0, "", "region"), kDevices, {"n", "", "n", "n", "n"}); },
                                     {"device b has no value"});
  expect_one_line_error<ConfigError>([] { build_topology(with("key", 3, "", "region"), kDevices, {"n", "s", "n", "n", "n"}); },
                                     {"gives 2 edges"});
}
