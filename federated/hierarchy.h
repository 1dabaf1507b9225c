// Hierarchical federated averaging (HierFAVG, Liu et al. 2020, "Client-Edge-Cloud Hierarchical
// Federated Learning"): each cloud round, every edge starts from the cloud's global model and runs
// topology.edge_rounds (k2) rounds over its own devices (sampled among those available, each training
// federated.local_steps = k1 steps); its model becomes the weighted mean of its devices' models. The
// cloud then aggregates the edge models, weighted by each edge's training samples, and applies the
// server optimizer. With one edge and k2 = 1 this is flat FedAvg, bit for bit; when every device
// reports, the cloud's weighted mean of edge means is the flat weighted mean.
// Each edge is a Server over the device roster (its aggregation, robust rule and DP as the recipe's
// topology.*_tier keys say); the cloud is a Server whose clients are the edges.
#pragma once
#include <memory>
#include <optional>
#include <vector>

#include "core/comm/link_model.h"
#include "federated/server.h"
#include "federated/topology.h"

namespace fedsplit {

class Hierarchy {
 public:
  /// `devices`: the device roster; `fed`: the [federated] options (sampling applies per edge).
  Hierarchy(Topology topology, const TopologyOptions& options, Participant& participant, const ClientRoster& devices,
            const FederatedOptions& fed, int64_t global_rank, const RobustOptions* robust, const PrivacyOptions* privacy,
            uint64_t seed);

  /// The edges as the cloud's clients: their names, training samples (the sum of their devices') and
  /// the global LoRA rank.
  const ClientRoster& edge_roster() const { return edge_roster_; }
  /// The cloud's [federated] options: the edge-cloud link, every edge every round, no deadline.
  const FederatedOptions& cloud_options() const { return cloud_options_; }
  const Topology& topology() const { return topology_; }

  /// One cloud round on `cloud` (a Server built with edge_roster() and cloud_options()). Its report
  /// counts the edge-cloud traffic in bytes_up/down and adds "tiers": per tier bytes, rounds and
  /// simulated time.
  RoundReport serve_round(Server& cloud, ClientHost& host, int64_t round);

 private:
  Topology topology_;
  TopologyOptions options_;
  Participant& participant_;
  const ClientRoster& devices_;
  FederatedOptions edge_options_, cloud_options_;
  ClientRoster edge_roster_;
  std::vector<std::unique_ptr<Server>> edges_;
  std::optional<LinkClass> edge_link_;
  std::vector<double> availability_;  // per device
  uint64_t seed_;
};

}  // namespace fedsplit
