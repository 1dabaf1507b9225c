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

bool at_edge(const std::string& tier) { return tier != "cloud"; }
bool at_cloud(const std::string& tier) { return tier != "edge"; }

// The cloud tier's secure round takes the edges' models as its clients' updates.
class EdgeModels : public UpdateSource {
 public:
  EdgeModels(std::map<int64_t, std::string> updates, const TensorMap& global) : updates_(std::move(updates)), global_(global) {}
  std::string train_client(int64_t edge) override { return updates_.at(edge); }
  const TensorMap& round_global() const override { return global_; }

 private:
  std::map<int64_t, std::string> updates_;
  const TensorMap& global_;
};

std::vector<int64_t> all_of(size_t n) {
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(i);
  return out;
}

}  // namespace

struct Hierarchy::Edge {
  size_t index = 0;
  std::shared_ptr<World> world;     // the edge's subgroup; its rank 0 serves the edge
  std::unique_ptr<Server> server;   // on the rank that serves the edge
  std::unique_ptr<UpdateEncoding> encoding;
  std::unique_ptr<SecureRoundContext> secure;  // secure aggregation at the edge tier
};

Hierarchy::Hierarchy(World& world, Topology topology, const TopologyOptions& options, Participant& participant,
                     const ClientRoster& devices, const FederatedOptions& fed, int64_t global_rank, TierProtection protection,
                     uint64_t seed)
    : world_(world), topology_(std::move(topology)), options_(options), participant_(participant), devices_(devices),
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
  for (size_t e = 0; e < topology_.devices.size(); ++e) {
    int64_t samples = 0;
    for (int64_t c : topology_.devices[e]) samples += devices.samples[static_cast<size_t>(c)];
    edge_roster_.names.push_back(topology_.edge_names[e]);
    edge_roster_.lora_ranks.push_back(global_rank);
    edge_roster_.stragglers.push_back(false);
    edge_roster_.speeds.push_back(1.0);  // edges report no training tokens: the cloud charges only their transfers
    edge_roster_.local_steps.push_back(options.edge_rounds * fed.local_steps);
    edge_roster_.samples.push_back(samples);
  }

  const bool secure = protection.secure.aggregation != "none";
  const auto shapes = participant.update_shapes(global_rank);
  const PrivacyOptions& edge_privacy = at_edge(options.privacy_tier) ? protection.privacy : no_privacy_;
  const PrivacyOptions& cloud_privacy = at_cloud(options.privacy_tier) ? protection.privacy : no_privacy_;
  if (secure && at_cloud(options.secure_tier)) {
    const auto edges = static_cast<int64_t>(topology_.devices.size());
    cloud_encoding_ = std::make_unique<UpdateEncoding>(shapes, protection.secure.range,
                                                       secure_sum_bound(protection.secure, cloud_privacy, edges));
    cloud_secure_.reset(new SecureRoundContext{protection.secure, cloud_privacy, edge_roster_, *cloud_encoding_, 1, 0,
                                               options.edge_link, splitmix64(seed ^ 0xC10Dull)});
  }

  // This rank's part: every edge in one process; else the cloud (rank 0), or one edge's server or device host.
  ranks_ = edge_ranks(static_cast<int64_t>(topology_.devices.size()), world.size());
  const auto& ranks = ranks_;
  if (!ranks.empty()) {
    std::vector<int> cloud_members{0};
    for (const auto& r : ranks) cloud_members.push_back(r.front());
    if (std::find(cloud_members.begin(), cloud_members.end(), world.rank()) != cloud_members.end())
      cloud_world_ = world.subgroup(cloud_members, "cloud");
  }
  for (size_t e = 0; e < topology_.devices.size(); ++e) {
    if (!ranks.empty() && std::find(ranks[e].begin(), ranks[e].end(), world.rank()) == ranks[e].end()) continue;
    auto edge = std::make_unique<Edge>();
    edge->index = e;
    edge->world = world.subgroup(ranks.empty() ? std::vector<int>{world.rank()} : ranks[e], "edge-" + std::to_string(e));
    const auto size = static_cast<int64_t>(topology_.devices[e].size());
    const int64_t per_round = sample_size(size, fed.sample_fraction, fed.sample_count);
    if (edge->world->rank() == 0) {
      edge->server = std::make_unique<Server>(participant, devices, edge_options_, global_rank,
                                              at_edge(options.robust_tier) ? protection.robust : nullptr,
                                              at_edge(options.privacy_tier) ? &protection.privacy : nullptr, edge_seed(seed, e));
      edge->server->set_assign_aggregate(true);
      edge->server->set_sampling(per_round, size);
    }
    if (secure && at_edge(options.secure_tier)) {
      edge->encoding = std::make_unique<UpdateEncoding>(shapes, protection.secure.range,
                                                        secure_sum_bound(protection.secure, edge_privacy, per_round));
      edge->secure.reset(new SecureRoundContext{protection.secure, edge_privacy, devices, *edge->encoding, fed.min_clients,
                                                fed.deadline_s, options.device_link, edge_seed(seed, e)});
    }
    edges_.push_back(std::move(edge));
  }
}

Hierarchy::~Hierarchy() = default;

int Hierarchy::device_rank(int64_t c) const {
  if (ranks_.empty()) return 0;
  for (size_t e = 0; e < topology_.devices.size(); ++e)
    for (int64_t d : topology_.devices[e])
      if (d == c) return ranks_[e][static_cast<size_t>(host_rank(c, static_cast<int>(ranks_[e].size())))];
  throw Error("device " + std::to_string(c) + " is in no edge of the topology");
}

void check_tier_options(const TopologyOptions& t, const SecureOptions& secure, const PrivacyOptions& privacy,
                        const std::string& robust_rule, const std::string& lora_aggregation) {
  if (privacy.local_dp_sgd && !at_edge(t.privacy_tier))
    throw ConfigError("privacy.local_dp_sgd: each device's ledger is kept by its edge: set topology.privacy_tier = edge or both");
  const SecureOptions none_secure;
  const PrivacyOptions none_privacy;
  for (const std::string tier : {"edge", "cloud"}) {
    auto here = [&](const std::string& key) { return key == "both" || key == tier; };
    try {
      check_secure_options(here(t.secure_tier) ? secure : none_secure, here(t.privacy_tier) ? privacy : none_privacy,
                           here(t.robust_tier) ? robust_rule : "none", lora_aggregation);
    } catch (const ConfigError& e) {
      throw ConfigError(std::string("at the ") + tier + " tier (topology.secure_tier = " + t.secure_tier +
                        ", privacy_tier = " + t.privacy_tier + ", robust_tier = " + t.robust_tier + "): " + e.what());
    }
  }
}

void Hierarchy::load_edge_states(const nlohmann::json& states) {
  edge_states_ = states;
  states_pending_ = true;
}

Hierarchy::EdgeReply Hierarchy::run_edge(Edge& edge, const Message& down, ClientHost& host) {
  const size_t e = edge.index;
  const std::string& name = topology_.edge_names[e];
  Server& server = *edge.server;
  World& group = *edge.world;
  const int64_t round = down.meta.at("round"), k2 = options_.edge_rounds;
  server.global() = deep_copy(down.tensors);
  if (down.meta.contains("edge_states") && down.meta["edge_states"].contains(name)) server.load_state(down.meta["edge_states"][name]);
  int64_t bytes_up = 0, bytes_down = 0, rounds = 0, updates = 0, aggregated_rounds = 0;
  double sim_s = 0, client_wall_s = 0, loss = 0;
  nlohmann::json excluded = nlohmann::json::array(), privacy;
  for (int64_t j = 0; j < k2; ++j) {
    const int64_t edge_round = round * k2 + j;
    std::vector<int64_t> present;
    for (int64_t c : topology_.devices[e])
      if (available(seed_, edge_round, c, availability_[static_cast<size_t>(c)])) present.push_back(c);
    if (present.empty()) continue;
    const auto n = static_cast<int64_t>(present.size());
    std::vector<int64_t> sample;
    for (int64_t i : sample_clients(n, sample_size(n, edge_options_.sample_fraction, edge_options_.sample_count),
                                    edge_seed(seed_, e), edge_round, 0))
      sample.push_back(present[static_cast<size_t>(i)]);
    Message m = server.round_message(edge_round, 0);
    m.meta["sample"] = sample;
    std::string bytes = encode_message(m);
    group.broadcast_bytes(bytes, 0);
    server.begin_round(edge_round, 0, sample, static_cast<int64_t>(bytes.size()));
    if (group.size() == 1) host.on_round(m);  // this rank hosts the edge's devices itself
    RoundReport r;
    if (edge.secure) {
      r = server.finish_secure_round(*run_secure_round(group, host, *edge.secure, sample, edge_round, 0));
    } else {
      for (int64_t c : sample) {
        const int from = host_rank(c, group.size());
        server.receive(from == 0 ? host.train_client(c) : group.recv_bytes(from), c, from);
      }
      r = server.finish_round();
    }
    bytes_up += r.bytes_up;
    bytes_down += r.bytes_down;
    updates += r.aggregated;
    ++rounds;
    for (const auto& x : r.excluded) excluded.push_back({{"client", x["client"]}, {"edge", name}, {"reason", x["reason"]}});
    sim_s += r.sim_round_s;
    client_wall_s += r.client_wall_s;
    if (!r.privacy.is_null()) privacy = r.privacy;
    if (r.complete) ++aggregated_rounds, loss = r.train_loss;
  }
  // An edge none of whose rounds aggregated anything has no model of its own to send.
  const bool ok = aggregated_rounds > 0;
  const nlohmann::json status{{"client", static_cast<int64_t>(e)}, {"round", round}, {"status", ok ? "ok" : "failed"},
                              {"reason", "none of its edge rounds aggregated a device update (no device available or valid)"},
                              {"samples", edge_roster_.samples[e]}, {"loss", loss}};
  Message report, update;
  report.meta = status;
  report.meta.update({{"kind", "edge_report"}, {"excluded", excluded}, {"privacy", privacy}, {"state", server.state()},
                      {"tier", {{"bytes_up", bytes_up}, {"bytes_down", bytes_down}, {"edge_rounds", rounds},
                                {"device_updates", updates}, {"sim_s", sim_s}, {"client_wall_s", client_wall_s}}}});
  update.meta = status;
  if (ok) update.tensors = server.global();
  return {encode_message(report), encode_message(update)};
}

RoundReport Hierarchy::serve_round(Server& cloud, ClientHost& host, int64_t round) {
  const size_t num_edges = topology_.devices.size();
  Message down = cloud.round_message(round, 0);
  if (states_pending_) down.meta["edge_states"] = edge_states_, states_pending_ = false;
  std::string down_bytes = encode_message(down);
  std::vector<std::string> reports(num_edges), updates(num_edges);
  if (!cloud_world_) {
    for (auto& edge : edges_) {
      EdgeReply reply = run_edge(*edge, down, host);
      reports[edge->index] = std::move(reply.report);
      updates[edge->index] = std::move(reply.update);
    }
  } else {
    // The edges run their rounds in parallel, each on its own ranks; their replies come in edge order.
    cloud_world_->broadcast_bytes(down_bytes, 0);
    for (size_t e = 0; e < num_edges; ++e) {
      reports[e] = cloud_world_->recv_bytes(static_cast<int>(e) + 1);
      if (!cloud_secure_) updates[e] = cloud_world_->recv_bytes(static_cast<int>(e) + 1);
    }
  }

  const auto edges = all_of(num_edges);
  const auto down_size = static_cast<int64_t>(down_bytes.size());
  cloud.begin_round(round, 0, edges, down_size);
  RoundReport out;
  if (cloud_secure_) {
    std::map<int64_t, std::string> local;
    if (!cloud_world_) for (size_t e = 0; e < num_edges; ++e) local[static_cast<int64_t>(e)] = updates[e];
    EdgeModels models(std::move(local), cloud.global());
    out = cloud.finish_secure_round(*run_secure_round(cloud_world_ ? *cloud_world_ : world_, models, *cloud_secure_, edges, round, 0));
  } else {
    for (size_t e = 0; e < num_edges; ++e) cloud.receive(updates[e], static_cast<int64_t>(e), cloud_world_ ? static_cast<int>(e) + 1 : 0);
    out = cloud.finish_round();
  }

  int64_t tier_up = 0, tier_down = 0, tier_rounds = 0, tier_updates = 0, report_bytes = 0;
  double loss = 0, loss_weight = 0, client_wall = 0, edge_tier_s = 0, round_sim = 0;
  nlohmann::json edge_privacy = nlohmann::json::object();
  for (size_t e = 0; e < num_edges; ++e) {
    const Message r = decode_message(reports[e], "edge " + topology_.edge_names[e]);
    const auto& tier = r.meta.at("tier");
    tier_up += tier.at("bytes_up").get<int64_t>();
    tier_down += tier.at("bytes_down").get<int64_t>();
    tier_rounds += tier.at("edge_rounds").get<int64_t>();
    tier_updates += tier.at("device_updates").get<int64_t>();
    client_wall += tier.at("client_wall_s").get<double>();
    const double edge_s = tier.at("sim_s").get<double>();
    edge_tier_s = std::max(edge_tier_s, edge_s);
    const auto up_bytes = static_cast<int64_t>(reports[e].size() + (cloud_secure_ ? 0 : updates[e].size()));
    round_sim = std::max(round_sim, edge_s + exchange_seconds(edge_link_, down_size, up_bytes, 2));
    report_bytes += static_cast<int64_t>(reports[e].size());
    for (const auto& x : r.meta.at("excluded")) out.excluded.push_back(x);
    if (!r.meta.at("privacy").is_null()) edge_privacy[topology_.edge_names[e]] = r.meta.at("privacy");
    edge_states_[topology_.edge_names[e]] = r.meta.at("state");
    if (r.meta.at("status") == "ok") {
      const auto w = static_cast<double>(edge_roster_.samples[e]);
      loss += r.meta.at("loss").get<double>() * w;
      loss_weight += w;
    }
  }
  // Under secure aggregation the edge models move in the protocol's exchanges, after every edge is done.
  if (cloud_secure_) round_sim = std::max(round_sim, edge_tier_s + out.sim_round_s);
  out.bytes_up += report_bytes;
  out.sim_round_s = round_sim;
  out.client_wall_s = client_wall;
  out.train_loss = loss_weight > 0 ? loss / loss_weight : std::nan("");
  out.tiers = {{"device_edge", {{"bytes_up", tier_up}, {"bytes_down", tier_down}, {"edge_rounds", tier_rounds},
                                {"device_updates", tier_updates}, {"sim_s", edge_tier_s}}},
               {"edge_cloud", {{"bytes_up", out.bytes_up}, {"bytes_down", out.bytes_down}, {"sim_s", round_sim - edge_tier_s}}}};
  if (!edge_privacy.empty()) out.tiers["device_edge"]["privacy"] = edge_privacy;
  double epsilon_max = -1;
  for (const auto& [name, p] : edge_privacy.items())
    if (p.contains("epsilon")) epsilon_max = std::max(epsilon_max, p["epsilon"].get<double>());
  if (epsilon_max >= 0) out.tiers["device_edge"]["epsilon_max"] = epsilon_max;
  // Local DP-SGD's ledgers live at the edges: the round reports the most-charged device of any edge.
  for (const auto& [name, p] : edge_privacy.items()) {
    if (!p.contains("local")) continue;
    if (!out.privacy.is_object()) out.privacy = nlohmann::json::object();
    if (!out.privacy.contains("local") || p["local"]["epsilon_max"] > out.privacy["local"]["epsilon_max"]) out.privacy["local"] = p["local"];
  }
  return out;
}

TrafficStats Hierarchy::cloud_traffic() const { return cloud_world_ ? cloud_world_->traffic() : world_.traffic(); }

void Hierarchy::end(const std::string& kind) {
  if (!cloud_world_) return;
  Message m;
  m.meta = {{"kind", kind}};
  std::string bytes = encode_message(m);
  cloud_world_->broadcast_bytes(bytes, 0);
}

void Hierarchy::follow(ClientHost& host) {
  if (edges_.size() != 1) throw Error("rank " + std::to_string(world_.rank()) + " belongs to no edge of the hierarchy");
  Edge& edge = *edges_.front();
  if (!edge.server) return host_devices(edge, host);
  const auto edges = all_of(topology_.devices.size());
  while (true) {
    std::string bytes;
    cloud_world_->broadcast_bytes(bytes, 0);
    const Message down = decode_message(bytes, "the cloud (rank 0)");
    if (down.meta.at("kind") != "round") {
      edge.world->broadcast_bytes(bytes, 0);  // the edge's device ranks end too
      return;
    }
    EdgeReply reply = run_edge(edge, down, host);
    cloud_world_->send_bytes(reply.report, 0);
    if (cloud_secure_) {
      EdgeModels mine({{static_cast<int64_t>(edge.index), reply.update}}, down.tensors);
      run_secure_round(*cloud_world_, mine, *cloud_secure_, edges, down.meta.at("round").get<int64_t>(), 0);
    } else {
      cloud_world_->send_bytes(reply.update, 0);
    }
  }
}

void Hierarchy::host_devices(Edge& edge, ClientHost& host) {
  World& group = *edge.world;
  while (true) {
    std::string bytes;
    group.broadcast_bytes(bytes, 0);
    const Message m = decode_message(bytes, "edge " + topology_.edge_names[edge.index] + "'s server");
    if (m.meta.at("kind") != "round") return;
    host.on_round(m);
    const auto sample = m.meta.at("sample").get<std::vector<int64_t>>();
    const int64_t edge_round = m.meta.at("round");
    if (edge.secure) {
      run_secure_round(group, host, *edge.secure, sample, edge_round, 0);
      continue;
    }
    for (int64_t c : sample)
      if (host_rank(c, group.size()) == group.rank()) group.send_bytes(host.train_client(c), 0);
  }
}

}  // namespace fedsplit
