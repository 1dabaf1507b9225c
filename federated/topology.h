// The [topology] recipe section: a cloud, edge servers and the devices (clients) under each edge, for
// hierarchical federated averaging (HierFAVG, Liu et al. 2020). Devices run federated.local_steps (k1)
// between edge aggregations; each edge runs edge_rounds (k2) aggregations of its devices between two
// cloud aggregations; federated.rounds counts cloud rounds.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fedsplit {

class Recipe;

struct TopologyOptions {
  int64_t edges = 0;                 ///< edge servers; 0 = flat federated learning (no [topology])
  std::string grouping = "equal";    ///< equal | sizes | key: how devices are grouped into edges
  std::string devices_per_edge;      ///< grouping = sizes: "3 5 4" devices per edge, in partition order
  std::string group_key;             ///< grouping = key: metadata key whose value (per device, by majority) names its edge
  int64_t edge_rounds = 1;           ///< k2: edge aggregations per cloud round
  std::string device_link;           ///< device–edge link "up/down/latency" (Mbit/s, ms); empty = none
  std::string edge_link;             ///< edge–cloud link; empty = none
  std::string robust_tier = "cloud"; ///< where [robust] applies: edge | cloud | both
  std::string privacy_tier = "cloud";///< where [privacy] DP applies: edge | cloud | both
  std::string secure_tier = "edge";  ///< where [secure] aggregation applies: edge | cloud | both
  double availability = 1.0;         ///< chance that a device is available in an edge round (seeded)
  std::string device_availability;   ///< "name=p" items: a device's own availability (overrides the above)

  /// Whether the recipe asks for a hierarchy at all.
  bool enabled() const { return edges > 0 || grouping != "equal"; }
};

/// Registers the [topology] keys.
void bind_topology_options(Recipe& recipe, TopologyOptions& options);

struct Topology {
  std::vector<std::string> edge_names;
  std::vector<std::vector<int64_t>> devices;  ///< per edge, the device (client) indices, ascending
};

/// For each device (its document indices), the label most of its documents have (ties: the smallest):
/// the edge a device joins under grouping = key.
std::vector<std::string> majority_labels(const std::vector<std::vector<int64_t>>& documents,
                                         const std::vector<std::string>& labels);

/// Groups `device_names` (partition order) into edges. `device_groups[i]` is device i's value of
/// group_key (grouping = key; edges are named by the values, in order of first appearance).
/// ConfigError (naming the topology key) for an edge count that does not fit, sizes that do not sum
/// to the devices, or a device without a group.
Topology build_topology(const TopologyOptions& options, const std::vector<std::string>& device_names,
                        const std::vector<std::string>& device_groups);

/// The world ranks of each edge under mpirun: rank 0 is the cloud and ranks 1.. are split among the
/// edges in contiguous groups, as equal as can be; a group's first rank serves the edge, the others
/// host its devices (device c on group rank host_rank(c, group size); the edge server itself when
/// the group is one rank). Empty in a world of one, where every tier runs on rank 0. ConfigError when
/// there are fewer ranks than one per edge plus the cloud.
std::vector<std::vector<int>> edge_ranks(int64_t edges, int world_size);

}  // namespace fedsplit
