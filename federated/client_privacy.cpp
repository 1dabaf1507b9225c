#include "federated/client_privacy.h"

#include <cmath>

#include "core/util/error.h"
#include "federated/rdp_accountant.h"

namespace fedsplit {

void ClientPrivacyLedger::charge(int64_t client, double q, double sigma, int64_t steps) {
  if (client < 0) throw DataError("local DP-SGD ledger: client index " + std::to_string(client) + " is negative");
  if (!(q > 0 && q <= 1)) throw DataError("local DP-SGD ledger: sampling rate q = " + std::to_string(q) + " is outside (0, 1]");
  if (!(sigma >= 0 && std::isfinite(sigma)))
    throw DataError("local DP-SGD ledger: noise multiplier " + std::to_string(sigma) + " is negative or not finite");
  if (steps < 0) throw DataError("local DP-SGD ledger: steps = " + std::to_string(steps) + " is negative");
  if (steps == 0) return;
  auto& list = charges_[client];
  cache_.erase(client);
  for (auto& c : list)
    if (c.q == q && c.sigma == sigma) {
      c.steps += steps;
      return;
    }
  list.push_back({q, sigma, steps});
}

std::string ClientPrivacyLedger::charge_update(int64_t client, const nlohmann::json& meta) {
  const auto it = meta.find("dp_sgd");
  if (it == meta.end() || !it->is_object()) return "its update lacks the local DP-SGD accounting (meta dp_sgd)";
  const auto& d = *it;
  if (!d.contains("q") || !d["q"].is_number() || !d.contains("sigma") || !d["sigma"].is_number() ||
      !d.contains("steps") || !d["steps"].is_number_integer())
    return "its local DP-SGD accounting is malformed: " + d.dump();
  try {
    charge(client, d["q"].get<double>(), d["sigma"].get<double>(), d["steps"].get<int64_t>());
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

int64_t ClientPrivacyLedger::steps(int64_t client) const {
  const auto it = charges_.find(client);
  int64_t n = 0;
  if (it != charges_.end())
    for (const auto& c : it->second) n += c.steps;
  return n;
}

double ClientPrivacyLedger::epsilon(int64_t client, double delta) const {
  if (delta != cached_delta_) {
    cache_.clear();
    cached_delta_ = delta;
  }
  const auto hit = cache_.find(client);
  if (hit != cache_.end()) return hit->second;
  RdpAccountant accountant;
  const auto it = charges_.find(client);
  if (it != charges_.end())
    for (const auto& c : it->second) accountant.step(c.q, c.sigma, c.steps);
  const double eps = accountant.epsilon(delta);
  cache_[client] = eps;
  return eps;
}

std::pair<int64_t, double> ClientPrivacyLedger::max_epsilon(double delta) const {
  std::pair<int64_t, double> best{-1, 0.0};
  for (const auto& [client, list] : charges_) {
    const double eps = epsilon(client, delta);
    if (best.first < 0 || eps > best.second) best = {client, eps};
  }
  return best;
}

nlohmann::json ClientPrivacyLedger::to_json() const {
  nlohmann::json clients = nlohmann::json::object();
  for (const auto& [client, list] : charges_) {
    nlohmann::json entries = nlohmann::json::array();
    for (const auto& c : list) entries.push_back({{"q", c.q}, {"sigma", c.sigma}, {"steps", c.steps}});
    clients[std::to_string(client)] = entries;
  }
  return {{"clients", clients}};
}

ClientPrivacyLedger ClientPrivacyLedger::from_json(const nlohmann::json& json) {
  ClientPrivacyLedger ledger;
  if (!json.is_object() || !json.contains("clients") || !json["clients"].is_object())
    throw DataError("local DP-SGD ledger: expected {\"clients\": {...}}, got " + json.dump().substr(0, 200));
  for (const auto& [key, entries] : json["clients"].items()) {
    int64_t client = -1;
    try {
      size_t used = 0;
      client = std::stoll(key, &used);
      if (used != key.size()) client = -1;
    } catch (const std::exception&) {
    }
    if (client < 0) throw DataError("local DP-SGD ledger: client key '" + key + "' is not a client index");
    if (!entries.is_array()) throw DataError("local DP-SGD ledger: client " + key + " holds no list of charges");
    for (const auto& e : entries) {
      const std::string why = ledger.charge_update(client, {{"dp_sgd", e}});
      if (!why.empty()) throw DataError("local DP-SGD ledger: client " + key + ": " + why);
    }
  }
  return ledger;
}

}  // namespace fedsplit
