#include "federated/server.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/random.h"
#include "federated/sampling.h"

namespace fedsplit {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

int64_t shapes_bytes(const std::map<std::string, std::vector<int64_t>>& shapes) {
  int64_t n = 0;
  for (const auto& [name, shape] : shapes) {
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    n += numel * 4;
  }
  return n;
}

}  // namespace

Server::Server(Participant& participant, const ClientRoster& roster, const FederatedOptions& options, int64_t global_rank,
               const RobustOptions* robust, const PrivacyOptions* privacy, uint64_t seed)
    : participant_(participant), roster_(roster), options_(options), global_(participant.global()),
      optimizer_(options.server), seed_(seed) {
  const std::string lora = participant.has_lora() ? options.lora_aggregation : "fedavg";
  if (privacy && privacy->local_dp_sgd) {
    privacy_ = privacy;
    local_dp_ = std::make_unique<ClientPrivacyLedger>();
  }
  const auto clients = static_cast<int64_t>(roster.names.size());
  expected_clients_ = sample_size(clients, options.sample_fraction, options.sample_count);
  const std::string dp = privacy ? privacy->dp : "none";
  if (dp != "none") {
    if (robust) throw ConfigError("privacy.dp and robust.rule do not combine yet: choose one");
    if (lora != "fedavg")
      throw ConfigError("privacy.dp clips whole updates: use federated.lora_aggregation = fedavg (got " + lora + ")");
    privacy_ = privacy;
    accountant_ = std::make_unique<RdpAccountant>();
    sampling_rate_ = static_cast<double>(expected_clients_) / static_cast<double>(clients);
  }
  if (dp == "central") {
    auto aggregator = std::make_unique<DpAggregator>(*privacy, global_, expected_clients_);
    dp_ = aggregator.get();
    aggregator_ = std::move(aggregator);
  } else if (robust) {
    if (lora != "fedavg")
      throw ConfigError("robust.rule = " + robust->rule + " compares updates of one shape: use it with "
                        "federated.lora_aggregation = fedavg (got " + lora + ")");
    auto aggregator = std::make_unique<RobustAggregator>(*robust, global_);
    robust_ = aggregator.get();
    aggregator_ = std::move(aggregator);
  } else {
    aggregator_ = make_aggregator(lora, global_rank);
  }
  if (!options.link.empty()) link_ = parse_link("client", options.link, "network.link");
}

nlohmann::json Server::privacy_state() const {
  nlohmann::json state = nullptr;
  if (accountant_) state = {{"rdp", accountant_->rdp()}, {"clip", dp_ ? dp_->clip() : privacy_->clip}};
  if (local_dp_) state["local"] = local_dp_->to_json();
  return state;
}

void Server::load_privacy_state(const nlohmann::json& state) {
  if (state.is_null()) return;
  if (local_dp_ && state.contains("local")) *local_dp_ = ClientPrivacyLedger::from_json(state["local"]);
  if (!accountant_ || !state.contains("rdp")) return;
  // JSON has no infinity (σ = 0 gives no privacy): it stores null, read back as +inf.
  std::vector<double> rdp;
  for (const auto& v : state.at("rdp")) rdp.push_back(v.is_null() ? std::numeric_limits<double>::infinity() : v.get<double>());
  accountant_->load(rdp);
  if (dp_) dp_->set_clip(state.at("clip").get<double>());
}

std::map<int64_t, double> Server::trust() const { return robust_ ? robust_->trust() : std::map<int64_t, double>{}; }

void Server::load_trust(std::map<int64_t, double> trust) {
  if (robust_) robust_->load_trust(std::move(trust));
}

nlohmann::json Server::state() const {
  nlohmann::json trust_json = nlohmann::json::object();
  for (const auto& [client, value] : trust()) trust_json[std::to_string(client)] = value;
  return {{"privacy", privacy_state()}, {"trust", trust_json}};
}

void Server::load_state(const nlohmann::json& state) {
  if (state.contains("privacy")) load_privacy_state(state["privacy"]);
  if (state.contains("trust")) {
    std::map<int64_t, double> trust_map;
    for (const auto& [client, value] : state["trust"].items()) trust_map[std::stoll(client)] = value.get<double>();
    load_trust(std::move(trust_map));
  }
}

Message Server::round_message(int64_t round, int64_t attempt) const {
  Message m;
  m.meta = {{"kind", "round"}, {"round", round}, {"attempt", attempt}};
  if (participant_.lora_aggregation() == "flora") {
    m.meta.update({{"content", "stack"}, {"stack_round", stack_round_}});
    m.tensors = stack_;
  } else {
    m.meta["content"] = "global";
    m.tensors = global_;
  }
  return m;
}

void Server::begin_round(int64_t round, int64_t attempt, const std::vector<int64_t>& sample, int64_t round_bytes) {
  report_ = RoundReport{};
  report_.round = round;
  report_.attempt = attempt;
  report_.sampled = static_cast<int64_t>(sample.size());
  sample_ = sample;
  round_bytes_ = round_bytes;
  if (dp_) dp_->set_round(global_, splitmix64(seed_ ^ splitmix64(static_cast<uint64_t>(round) * 131 + attempt + 0xD9ull)));
  if (robust_) {
    // A retried round may have left updates behind: start from an empty aggregator, keeping the trust.
    const auto trust = robust_->trust();
    auto fresh = std::make_unique<RobustAggregator>(robust_->options(), global_);
    fresh->load_trust(trust);
    robust_ = fresh.get();
    aggregator_ = std::move(fresh);
  }
  loss_sum_ = weight_sum_ = 0;
}

void Server::exclude(int64_t client, const std::string& reason) {
  const std::string& name = roster_.names[static_cast<size_t>(client)];
  log_warn("round ", report_.round + 1, ": client ", name, " left out: ", reason);
  report_.excluded.push_back({{"client", name}, {"reason", reason}});
}

std::string Server::check_update(const Message& u, int64_t client, int from_rank) const {
  if (u.meta.value("client", int64_t{-1}) != client || u.meta.value("round", int64_t{-1}) != report_.round)
    return "rank " + std::to_string(from_rank) + " sent an update for client " + u.meta.value("client", nlohmann::json()).dump() +
           " round " + u.meta.value("round", nlohmann::json()).dump() + " where client " + std::to_string(client) +
           " round " + std::to_string(report_.round) + " was due";
  const std::string status = u.meta.value("status", "");
  if (status == "silent") return "sent no update before the deadline";
  if (status == "failed") return u.meta.value("reason", "its training failed");
  if (status != "ok") return "unknown status '" + status + "'";
  if (!(u.meta.value("samples", 0.0) > 0)) return "reported no training samples";
  const auto expected = participant_.update_shapes(roster_.lora_ranks[static_cast<size_t>(client)]);
  for (const auto& [name, shape] : expected) {
    const auto it = u.tensors.find(name);
    if (it == u.tensors.end()) return "its update lacks " + name;
    if (it->second.scalar_type() != torch::kFloat32)
      return name + " has dtype " + std::string(c10::toString(it->second.scalar_type())) + ", expected Float";
    if (it->second.sizes().vec() != shape)
      return name + " has shape " + shape_text(it->second.sizes().vec()) + ", expected " + shape_text(shape);
    if (!torch::isfinite(it->second).all().item<bool>()) return name + " holds non-finite values";
  }
  if (u.tensors.size() != expected.size()) return "its update holds tensors the model does not train";
  return "";
}

void Server::receive(const std::string& bytes, int64_t client, int from_rank) {
  const size_t i = static_cast<size_t>(client);
  const int64_t rank = roster_.lora_ranks[i];
  // What this client downloads: the round message, cut to its rank under hetlora.
  int64_t down = round_bytes_;
  if (participant_.lora_aggregation() == "hetlora")
    down = round_bytes_ - payload_bytes(global_) + shapes_bytes(participant_.update_shapes(rank));
  report_.bytes_down += down;
  report_.bytes_up += static_cast<int64_t>(bytes.size());

  Message u;
  try {
    u = decode_message(bytes, "client " + roster_.names[i] + " on rank " + std::to_string(from_rank));
  } catch (const FormatError& e) {
    exclude(client, e.what());
    return;
  }
  report_.client_wall_s += u.meta.value("wall_s", 0.0);
  // Local DP-SGD: a client that trained and released its update has spent privacy, whether or not the
  // update is used below.
  if (local_dp_ && u.meta.value("status", "") == "ok" && u.meta.value("client", int64_t{-1}) == client &&
      u.meta.value("round", int64_t{-1}) == report_.round) {
    const std::string why = local_dp_->charge_update(client, u.meta);
    if (!why.empty()) {
      exclude(client, why);
      return;
    }
  }
  const std::string problem = check_update(u, client, from_rank);
  if (!problem.empty()) {
    exclude(client, problem);
    return;
  }
  // Simulated time: the download, local compute at the client's speed, the upload.
  const double compute_s = u.meta.value("tokens", 0.0) / roster_.speeds[i];
  const double network_s = exchange_seconds(link_, down, static_cast<int64_t>(bytes.size()), 1);
  if (options_.deadline_s > 0 && compute_s + network_s > options_.deadline_s) {
    exclude(client, "late: needed " + std::to_string(compute_s + network_s) + " simulated s, deadline " +
                        std::to_string(options_.deadline_s) + " s");
    report_.sim_round_s = options_.deadline_s;
    return;
  }
  report_.sim_round_s = std::max(report_.sim_round_s, compute_s + network_s);
  report_.sim_network_s = std::max(report_.sim_network_s, network_s);
  const double weight = u.meta.at("samples").get<double>();
  aggregator_->add(u.tensors, UpdateInfo{client, weight, rank, participant_.client_scaling(rank)});
  loss_sum_ += weight * u.meta.value("loss", 0.0);
  weight_sum_ += weight;
}

RoundReport Server::finish_round() {
  report_.aggregated = aggregator_->count();
  report_.complete = report_.aggregated >= options_.min_clients;
  report_.train_loss = weight_sum_ > 0 ? loss_sum_ / weight_sum_ : std::nan("");
  if (report_.aggregated == 0) return report_;
  TensorMap combined;
  try {
    combined = aggregator_->finalize();
  } catch (const DataError& e) {
    if (!robust_) throw;
    // Too few updates for the robust rule: the round is short, as with fewer than min_clients.
    log_warn("round ", report_.round + 1, ": ", e.what());
    report_.complete = false;
    return report_;
  }
  if (robust_) report_.robust = robust_->last_decision();
  if (!report_.complete) return report_;
  account_privacy();
  if (participant_.lora_aggregation() == "flora") {
    participant_.merge_stacked(combined);
    set_stack(std::move(combined), report_.round);
    return report_;
  }
  if (assign_aggregate_) {
    for (auto& [name, value] : combined) global_[name] = value.to(global_.at(name).options());
    return report_;
  }
  TensorMap delta;
  for (const auto& [name, value] : combined) delta[name] = value - global_.at(name);
  optimizer_.step(global_, delta);
  return report_;
}

void Server::set_sampling(int64_t per_round, int64_t population) {
  expected_clients_ = per_round;
  sampling_rate_ = static_cast<double>(per_round) / static_cast<double>(population);
  if (dp_) dp_->set_expected(per_round);
}

void Server::account_privacy() {
  if (accountant_) {
    accountant_->step(sampling_rate_, privacy_->noise_multiplier);
    report_.privacy = {{"epsilon", accountant_->epsilon(privacy_->delta)}, {"delta", privacy_->delta},
                       {"clip", dp_ ? dp_->clip() : privacy_->clip}, {"sampling_rate", sampling_rate_},
                       {"noise_multiplier", privacy_->noise_multiplier}, {"noise", privacy_->dp}};
    if (dp_) report_.privacy["clipped"] = dp_->last_clipped();
  }
  if (local_dp_) {
    const auto [client, epsilon] = local_dp_->max_epsilon(privacy_->delta);
    if (!report_.privacy.is_object()) report_.privacy = nlohmann::json::object();
    report_.privacy["local"] = {{"epsilon_max", epsilon}, {"delta", privacy_->delta},
                                {"client", client < 0 ? "" : roster_.names[static_cast<size_t>(client)]},
                                {"steps", local_dp_->steps(client)}, {"example_clip", privacy_->example_clip},
                                {"example_noise_multiplier", privacy_->example_noise_multiplier}};
  }
}

RoundReport Server::finish_secure_round(const SecureOutcome& o) {
  for (const auto& [client, why] : o.excluded) exclude(client, why);
  for (int64_t c : sample_) {
    report_.bytes_down += round_bytes_;
    const auto it = o.costs.find(c);
    if (it == o.costs.end()) continue;
    report_.bytes_up += it->second.bytes_up;
    report_.bytes_down += it->second.bytes_down;
    report_.client_wall_s += it->second.wall_s;
    // Local DP-SGD: a client that released a masked update has spent privacy, whether or not it survived.
    if (local_dp_ && it->second.dp_sgd.is_object()) local_dp_->charge_update(c, {{"dp_sgd", it->second.dp_sgd}});
  }
  // Simulated time: the slowest survivor's download, compute and upload over the protocol's four steps.
  for (int64_t c : o.survivors) {
    const SecureClientReport& cost = o.costs.at(c);
    const double speed = roster_.speeds[static_cast<size_t>(c)];
    const double network_s = exchange_seconds(link_, round_bytes_ + cost.bytes_down, cost.bytes_up, 4);
    report_.sim_round_s = std::max(report_.sim_round_s, cost.tokens / speed + network_s);
    report_.sim_network_s = std::max(report_.sim_network_s, network_s);
  }
  for (const auto& [client, why] : o.excluded)
    if (why.rfind("late:", 0) == 0) report_.sim_round_s = std::max(report_.sim_round_s, options_.deadline_s);
  report_.secure = {{"stages", o.stages}};
  report_.aggregated = o.sum ? static_cast<int64_t>(o.survivors.size()) : 0;
  report_.complete = report_.aggregated >= options_.min_clients;
  if (!o.aborted.empty()) {
    log_warn("round ", report_.round + 1, ": ", o.aborted);
    report_.secure["aborted"] = o.aborted;
    return report_;
  }
  if (!report_.complete) return report_;
  const UpdateEncoding::Sum& sum = *o.sum;
  report_.secure["clamped"] = sum.clamped;
  // FedAvg: the survivors' weights n_i / (samples of the round's sample) sum to W; distributed DP: the
  // fixed denominator of DP-FedAvg, the clients expected per round.
  double denominator = static_cast<double>(expected_clients_);
  double loss_weight = static_cast<double>(o.survivors.size());
  if (!accountant_) {
    double sampled = 0, survived = 0;
    for (int64_t c : sample_) sampled += static_cast<double>(roster_.samples[static_cast<size_t>(c)]);
    for (int64_t c : o.survivors) survived += static_cast<double>(roster_.samples[static_cast<size_t>(c)]);
    denominator = loss_weight = survived / sampled;
  }
  report_.train_loss = sum.weighted_loss / loss_weight;
  TensorMap delta;
  for (const auto& [name, value] : sum.values) delta[name] = value / denominator;
  account_privacy();
  optimizer_.step(global_, delta);
  return report_;
}

}  // namespace fedsplit
