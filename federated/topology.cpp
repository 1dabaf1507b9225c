#include "federated/topology.h"

#include <map>
#include <sstream>

#include "core/config/recipe.h"
#include "core/util/error.h"

namespace fedsplit {

void bind_topology_options(Recipe& r, TopologyOptions& o) {
  r.add("topology.edges", &o.edges, "edge servers between the devices and the cloud (0: flat federated learning)", 0, 1 << 20);
  r.add_choice("topology.grouping", &o.grouping, {"equal", "sizes", "key"},
               "how devices are grouped into edges: equal shares in partition order, listed sizes, or by a metadata key");
  r.add("topology.devices_per_edge", &o.devices_per_edge, "grouping = sizes: devices per edge, e.g. \"3 5 4\"");
  r.add("topology.group_key", &o.group_key, "grouping = key: metadata key whose value names each device's edge (e.g. party)");
  r.add("topology.edge_rounds", &o.edge_rounds, "k2: edge aggregations between two cloud aggregations", 1, 1 << 20);
  r.add("topology.device_link", &o.device_link, "device-edge link up/down Mbit/s / latency ms, e.g. 20/100/30");
  r.add("topology.edge_link", &o.edge_link, "edge-cloud link up/down Mbit/s / latency ms, e.g. 1000/1000/20");
  r.add_choice("topology.robust_tier", &o.robust_tier, {"edge", "cloud", "both"}, "where the [robust] rule combines updates");
  r.add_choice("topology.privacy_tier", &o.privacy_tier, {"edge", "cloud", "both"}, "where [privacy] DP applies (central, distributed, local DP-SGD's ledger)");
  r.add_choice("topology.secure_tier", &o.secure_tier, {"edge", "cloud", "both"},
               "where [secure] aggregation applies: edges see only their devices' sum, the cloud only the edges' sum");
  r.add("topology.availability", &o.availability, "chance that a device is available in an edge round (seeded)", 0.0, 1.0);
  r.add("topology.device_availability", &o.device_availability, "per-device availability: name=p items (override topology.availability)");
}

std::vector<std::string> majority_labels(const std::vector<std::vector<int64_t>>& documents,
                                         const std::vector<std::string>& labels) {
  std::vector<std::string> out;
  for (const auto& docs_of : documents) {
    std::map<std::string, int64_t> votes;
    for (const auto i : docs_of) ++votes[labels.at(static_cast<size_t>(i))];
    std::string best;
    int64_t most = 0;
    for (const auto& [value, count] : votes)
      if (count > most) best = value, most = count;
    out.push_back(best);
  }
  return out;
}

Topology build_topology(const TopologyOptions& o, const std::vector<std::string>& names,
                        const std::vector<std::string>& groups) {
  const auto n = static_cast<int64_t>(names.size());
  Topology t;
  if (o.grouping == "key") {
    if (o.group_key.empty()) throw ConfigError("topology.grouping = key needs topology.group_key (e.g. party)");
    std::map<std::string, size_t> edge_of;
    for (int64_t d = 0; d < n; ++d) {
      const std::string& g = groups.at(static_cast<size_t>(d));
      if (g.empty())
        throw ConfigError("topology.group_key = " + o.group_key + ": device " + names[static_cast<size_t>(d)] +
                          " has no value for it: choose a key every document has");
      const auto [it, added] = edge_of.emplace(g, t.edge_names.size());
      if (added) t.edge_names.push_back(g), t.devices.emplace_back();
      t.devices[it->second].push_back(d);
    }
    if (o.edges > 0 && o.edges != static_cast<int64_t>(t.edge_names.size()))
      throw ConfigError("topology.edges = " + std::to_string(o.edges) + " but topology.group_key = " + o.group_key + " gives " +
                        std::to_string(t.edge_names.size()) + " edges: set topology.edges to that or to 0");
    return t;
  }
  std::vector<int64_t> sizes;
  if (o.grouping == "sizes") {
    std::istringstream in(o.devices_per_edge);
    for (std::string item; in >> item;) {
      try {
        sizes.push_back(std::stoll(item));
      } catch (const std::exception&) {
        throw ConfigError("topology.devices_per_edge: '" + item + "' is not a number");
      }
      if (sizes.back() < 1) throw ConfigError("topology.devices_per_edge: every edge needs at least one device");
    }
    int64_t total = 0;
    for (int64_t s : sizes) total += s;
    if (total != n)
      throw ConfigError("topology.devices_per_edge sums to " + std::to_string(total) + ", but there are " + std::to_string(n) + " devices");
  } else {
    if (o.edges < 1 || o.edges > n)
      throw ConfigError("topology.edges = " + std::to_string(o.edges) + " must be between 1 and the " + std::to_string(n) + " devices");
    for (int64_t e = 0; e < o.edges; ++e) sizes.push_back(n / o.edges + (e < n % o.edges ? 1 : 0));
  }
  int64_t next = 0;
  for (size_t e = 0; e < sizes.size(); ++e) {
    t.edge_names.push_back("edge-" + std::to_string(e));
    t.devices.emplace_back();
    for (int64_t i = 0; i < sizes[e]; ++i) t.devices.back().push_back(next++);
  }
  return t;
}

std::vector<std::vector<int>> edge_ranks(int64_t edges, int world_size) {
  if (world_size <= 1) return {};
  if (world_size - 1 < edges)
    throw ConfigError("[topology] with " + std::to_string(edges) + " edges needs at least " + std::to_string(edges + 1) +
                      " ranks under mpirun (the cloud on rank 0, a rank per edge): got " + std::to_string(world_size) +
                      "; raise -np or run in one process");
  std::vector<std::vector<int>> out;
  int next = 1;
  const int64_t spare = world_size - 1;
  for (int64_t e = 0; e < edges; ++e) {
    const int64_t size = spare / edges + (e < spare % edges ? 1 : 0);
    out.emplace_back();
    for (int64_t i = 0; i < size; ++i) out.back().push_back(next++);
  }
  return out;
}

}  // namespace fedsplit
