#include "federated/hierarchy.h"

#include <algorithm>
#include <cmath>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/random.h"
#include "federated/options.h"
#include "federated/sampling.h"

namespace fedsplit {
namespace {

// Edge e's own stream of device samples; edge 0's is the flat run's, so one edge reproduces it.
uint64_t edge_seed(uint64_t seed, size_t edge) { return edge == 0 ? seed : splitmix64(seed ^ (0xED6Eull + edge)); }

// Whether `device` can take part in edge round `edge_round` (seeded, so every run draws the same).
bool available(uint64_t seed, int64_t edge_round, int64_t device, double availability) {
  if (availability >= 1) return true;
  const uint64_t draw = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(edge_round) * 0x9E37ull + static_cast<uint64_t>(device) + 0xA5ull));
  return static_cast<double>(draw >> 11) * 0x1p-53 < availability;
}

TensorMap deep_copy(const TensorMap& m) {
  TensorMap out;
  for (const auto& [name, t] : m) out[name] = t.clone();
  return out;
}

}  // namespace

Hierarchy::Hierarchy(Topology topology, const TopologyOptions& options, Participant& participant,
                     const ClientRoster& devices, const FederatedOptions& fed, int64_t global_rank,
                     const RobustOptions* robust, const PrivacyOptions* privacy, uint64_t seed)
    : topology_(std::move(topology)), options_(options), participant_(participant), devices_(devices),
      edge_options_(fed), cloud_options_(fed), seed_(seed) {
  edge_options_.link = options.device_link;
  edge_options_.server = ServerOptimizerOptions{};  // HierFAVG edges average; the cloud's optimizer steps
  cloud_options_.link = options.edge_link;
  cloud_options_.deadline_s = 0;
  cloud_options_.sample_fraction = 1;
  cloud_options_.sample_count = 0;
  cloud_options_.min_clients = 1;
  if (!options.edge_link.empty()) edge_link_ = parse_link("edge", options.edge_link, "topology.edge_link");
  availability_.assign(devices.names.size(), options.availability);
  for (const auto& [c, p] : parse_client_values(options.device_availability, devices.names, "topology.device_availability", 0.0, 1.0))
    availability_[static_cast<size_t>(c)] = p;
  const bool robust_at_edges = options.robust_tier != "cloud", privacy_at_edges = options.privacy_tier != "cloud";
  for (size_t e = 0; e < topology_.devices.size(); ++e) {
    const auto& d = topology_.devices[e];
    auto edge = std::make_unique<Server>(participant, devices, edge_options_, global_rank, robust_at_edges ? robust : nullptr,
                                         privacy_at_edges ? privacy : nullptr, edge_seed(seed, e));
    edge->set_assign_aggregate(true);
    const auto size = static_cast<int64_t>(d.size());
    edge->set_sampling(sample_size(size, fed.sample_fraction, fed.sample_count), size);
    edges_.push_back(std::move(edge));
    int64_t samples = 0;
    for (int64_t c : d) samples += devices.samples[static_cast<size_t>(c)];
    edge_roster_.names.push_back(topology_.edge_names[e]);
    edge_roster_.lora_ranks.push_back(global_rank);
    edge_roster_.stragglers.push_back(false);
    edge_roster_.speeds.push_back(1.0);  // edges report no training tokens: the cloud charges only their transfers
    edge_roster_.local_steps.push_back(options.edge_rounds * fed.local_steps);
    edge_roster_.samples.push_back(samples);
  }
}

RoundReport Hierarchy::serve_round(Server& cloud, ClientHost& host, int64_t round) {
  const int64_t k2 = options_.edge_rounds;
  int64_t tier_up = 0, tier_down = 0, tier_rounds = 0, tier_updates = 0;  // device-edge links, all edges
  std::vector<std::string> messages;
  std::vector<double> edge_sim(edges_.size(), 0.0);
  double loss = 0, loss_weight = 0, client_wall = 0;
  nlohmann::json excluded = nlohmann::json::array();
  for (size_t e = 0; e < edges_.size(); ++e) {
    Server& edge = *edges_[e];
    edge.global() = deep_copy(cloud.global());
    const auto& devices = topology_.devices[e];
    int64_t aggregated_rounds = 0;
    double edge_loss = 0;
    for (int64_t j = 0; j < k2; ++j) {
      const int64_t edge_round = round * k2 + j;
      std::vector<int64_t> present;
      for (int64_t c : devices)
        if (available(seed_, edge_round, c, availability_[static_cast<size_t>(c)])) present.push_back(c);
      if (present.empty()) continue;
      const auto n = static_cast<int64_t>(present.size());
      std::vector<int64_t> sample;
      for (int64_t i : sample_clients(n, sample_size(n, edge_options_.sample_fraction, edge_options_.sample_count),
                                      edge_seed(seed_, e), edge_round, 0))
        sample.push_back(present[static_cast<size_t>(i)]);
      const Message m = edge.round_message(edge_round, 0);
      edge.begin_round(edge_round, 0, sample, static_cast<int64_t>(encode_message(m).size()));
      host.on_round(m);
      for (int64_t c : sample) edge.receive(host.train_client(c), c, 0);
      const RoundReport r = edge.finish_round();
      tier_up += r.bytes_up;
      tier_down += r.bytes_down;
      tier_updates += r.aggregated;
      ++tier_rounds;
      for (const auto& x : r.excluded) excluded.push_back({{"client", x["client"]}, {"edge", topology_.edge_names[e]}, {"reason", x["reason"]}});
      edge_sim[e] += r.sim_round_s;
      client_wall += r.client_wall_s;
      if (r.complete) ++aggregated_rounds, edge_loss = r.train_loss;
    }
    // An edge none of whose rounds aggregated anything has no model of its own to send.
    Message up;
    up.meta = {{"client", static_cast<int64_t>(e)}, {"round", round}, {"status", aggregated_rounds > 0 ? "ok" : "failed"},
               {"reason", "none of its edge rounds aggregated a device update (no device available or valid)"},
               {"samples", edge_roster_.samples[e]}, {"loss", edge_loss}};
    if (aggregated_rounds > 0) {
      up.tensors = edge.global();
      loss += edge_loss * static_cast<double>(edge_roster_.samples[e]);
      loss_weight += static_cast<double>(edge_roster_.samples[e]);
    }
    messages.push_back(encode_message(up));
  }
  const Message down = cloud.round_message(round, 0);
  const auto down_bytes = static_cast<int64_t>(encode_message(down).size());
  std::vector<int64_t> all_edges(edges_.size());
  for (size_t e = 0; e < edges_.size(); ++e) all_edges[e] = static_cast<int64_t>(e);
  cloud.begin_round(round, 0, all_edges, down_bytes);
  double round_sim = 0;
  for (size_t e = 0; e < edges_.size(); ++e) {
    cloud.receive(messages[e], static_cast<int64_t>(e), 0);
    const double link_s = exchange_seconds(edge_link_, down_bytes, static_cast<int64_t>(messages[e].size()), 1);
    round_sim = std::max(round_sim, edge_sim[e] + link_s);
  }
  const double edge_tier_s = edge_sim.empty() ? 0.0 : *std::max_element(edge_sim.begin(), edge_sim.end());
  RoundReport report = cloud.finish_round();
  report.sim_round_s = round_sim;
  report.client_wall_s = client_wall;
  report.train_loss = loss_weight > 0 ? loss / loss_weight : std::nan("");
  for (const auto& x : excluded) report.excluded.push_back(x);
  report.tiers = {{"device_edge", {{"bytes_up", tier_up}, {"bytes_down", tier_down}, {"edge_rounds", tier_rounds},
                                   {"device_updates", tier_updates}, {"sim_s", edge_tier_s}}},
                  {"edge_cloud", {{"bytes_up", report.bytes_up}, {"bytes_down", report.bytes_down}, {"sim_s", round_sim - edge_tier_s}}}};
  return report;
}

}  // namespace fedsplit
