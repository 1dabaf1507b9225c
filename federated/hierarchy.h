// Hierarchical federated averaging (HierFAVG, Liu et al. 2020, "Client-Edge-Cloud Hierarchical
// Federated Learning"): each cloud round, every edge starts from the cloud's global model and runs
// topology.edge_rounds (k2) rounds over its own devices (sampled among those available, each training
// federated.local_steps = k1 steps); its model becomes the weighted mean of its devices' models. The
// cloud then aggregates the edge models, weighted by each edge's training samples, and applies the
// server optimizer. With one edge and k2 = 1 this is flat FedAvg, bit for bit; when every device
// reports, the cloud's weighted mean of edge means is the flat weighted mean.
//
// Each edge is a Server over the device roster (its robust rule, DP and secure aggregation as the
// recipe's topology.*_tier keys say); the cloud is a Server whose clients are the edges. In one
// process every tier runs on rank 0. Under mpirun rank 0 is the cloud and each edge has its own ranks
// (edge_ranks): the edge's subgroup carries its device traffic, so edges aggregate in parallel, and a
// cloud subgroup (rank 0 and the edge servers) carries the edge models.
//
// Per cloud round an edge sends two messages up: a report (its tier's bytes, rounds, simulated time,
// exclusions, loss and robust/DP state, which the cloud keeps for checkpoints) and its model, which
// the cloud receives in the clear or, under secure aggregation at the cloud tier, only as a sum.
#pragma once
#include <memory>
#include <optional>
#include <vector>

#include "core/comm/link_model.h"
#include "core/comm/world.h"
#include "federated/server.h"
#include "federated/topology.h"

namespace fedsplit {

/// The protections the recipe asks for; the hierarchy applies each at the tiers topology.*_tier names.
struct TierProtection {
  const RobustOptions* robust = nullptr;  ///< null without a robust rule
  const PrivacyOptions& privacy;
  const SecureOptions& secure;
};

/// ConfigError (one line, naming the tier and the keys) for protections that cannot meet at a tier:
/// check_secure_options' rules, tier by tier; and local DP-SGD, whose ledger lives at the edges.
void check_tier_options(const TopologyOptions& topology, const SecureOptions& secure, const PrivacyOptions& privacy,
                        const std::string& robust_rule, const std::string& lora_aggregation);

class Hierarchy {
 public:
  /// Every rank builds it, at about the same time (it makes the subgroups). `devices`: the device
  /// roster; `fed`: the [federated] options (sampling, min_clients and deadline apply per edge).
  Hierarchy(World& world, Topology topology, const TopologyOptions& options, Participant& participant,
            const ClientRoster& devices, const FederatedOptions& fed, int64_t global_rank, TierProtection protection,
            uint64_t seed);
  ~Hierarchy();

  /// The edges as the cloud's clients: their names, training samples (the sum of their devices') and
  /// the global LoRA rank.
  const ClientRoster& edge_roster() const { return edge_roster_; }
  /// The cloud's [federated] options: the edge-cloud link, every edge every round, no deadline.
  const FederatedOptions& cloud_options() const { return cloud_options_; }
  const Topology& topology() const { return topology_; }
  /// The world rank that hosts device `c`'s training.
  int device_rank(int64_t c) const;

  /// Rank 0: one cloud round on `cloud` (a Server built with edge_roster() and cloud_options()). Its
  /// report counts the edge-cloud traffic in bytes_up/down and adds "tiers": per tier bytes, rounds
  /// and simulated time.
  RoundReport serve_round(Server& cloud, ClientHost& host, int64_t round);
  /// Rank 0: what it has moved over the wire (the cloud subgroup's traffic under mpirun).
  TrafficStats cloud_traffic() const;
  /// Rank 0: tells the other ranks that the job is over ("done") or failed ("stop").
  void end(const std::string& kind);
  /// The other ranks: serve an edge or host its devices until rank 0 ends the job.
  void follow(ClientHost& host);

  /// The edges' robust and DP state after the last cloud round (rank 0, for the checkpoint), and
  /// back: the next cloud round hands each edge its state.
  nlohmann::json edge_states() const { return edge_states_; }
  void load_edge_states(const nlohmann::json& states);

 private:
  struct Edge;
  struct EdgeReply {
    std::string report, update;
  };
  // Edge e's part of a cloud round that started with `down`.
  EdgeReply run_edge(Edge& edge, const Message& down, ClientHost& host);
  void host_devices(Edge& edge, ClientHost& host);

  World& world_;
  Topology topology_;
  TopologyOptions options_;
  Participant& participant_;
  const ClientRoster& devices_;
  FederatedOptions edge_options_, cloud_options_;
  ClientRoster edge_roster_;
  std::vector<std::vector<int>> ranks_;       // per edge, its world ranks (empty in one process)
  std::vector<std::unique_ptr<Edge>> edges_;  // the edges this rank serves or hosts devices of
  std::shared_ptr<World> cloud_world_;        // rank 0 and the edge servers (mpirun only)
  std::unique_ptr<UpdateEncoding> cloud_encoding_;
  std::unique_ptr<SecureRoundContext> cloud_secure_;  // secure aggregation at the cloud tier
  PrivacyOptions no_privacy_;
  std::optional<LinkClass> edge_link_;
  std::vector<double> availability_;  // per device
  nlohmann::json edge_states_ = nlohmann::json::object();
  bool states_pending_ = false;  // loaded from a checkpoint, not yet handed to the edges
  uint64_t seed_;
};

}  // namespace fedsplit
