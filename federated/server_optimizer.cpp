#include "federated/server_optimizer.h"

#include <cmath>

#include "core/util/error.h"

namespace fedsplit {
namespace {

bool is_adaptive(const std::string& rule) { return rule == "fedadagrad" || rule == "fedyogi" || rule == "fedadam"; }

}  // namespace

TensorMap weighted_average(const std::vector<TensorMap>& updates, const std::vector<double>& weights) {
  if (updates.empty()) throw DataError("no client updates to average");
  if (updates.size() != weights.size())
    throw DataError(std::to_string(updates.size()) + " client updates but " + std::to_string(weights.size()) + " weights");
  double total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!(weights[i] > 0) || !std::isfinite(weights[i]))
      throw DataError("client " + std::to_string(i) + " has weight " + std::to_string(weights[i]) + ": weights must be positive");
    total += weights[i];
  }
  torch::NoGradGuard no_grad;
  TensorMap out;
  for (const auto& [key, first] : updates.front()) {
    torch::Tensor sum = torch::zeros(first.sizes(), first.options().dtype(torch::kFloat64));
    for (size_t i = 0; i < updates.size(); ++i) {
      const auto it = updates[i].find(key);
      if (it == updates[i].end()) throw DataError("client " + std::to_string(i) + "'s update has no tensor " + key);
      if (it->second.sizes() != first.sizes())
        throw DataError("client " + std::to_string(i) + "'s tensor " + key + " has another shape than client 0's");
      sum.add_(it->second.to(torch::kFloat64), weights[i] / total);
    }
    out.emplace(key, sum.to(torch::kFloat32));
  }
  for (size_t i = 1; i < updates.size(); ++i)
    if (updates[i].size() != out.size())
      throw DataError("client " + std::to_string(i) + "'s update has tensors that client 0's lacks");
  return out;
}

ServerOptimizer::ServerOptimizer(ServerOptimizerOptions o) : options_(std::move(o)) {
  const auto& r = options_.rule;
  if (r != "fedavg" && r != "fedavgm" && !is_adaptive(r))
    throw ConfigError("federated.server_optimizer '" + r + "' is not one of fedavg, fedavgm, fedadagrad, fedyogi, fedadam");
  if (!(options_.lr > 0)) throw ConfigError("federated.server_lr must be positive");
  if (!(options_.beta1 >= 0 && options_.beta1 < 1)) throw ConfigError("federated.server_beta1 must be in [0, 1)");
  if (!(options_.beta2 >= 0 && options_.beta2 < 1)) throw ConfigError("federated.server_beta2 must be in [0, 1)");
  if (!(options_.tau > 0)) throw ConfigError("federated.server_tau must be positive");
}

void ServerOptimizer::step(TensorMap& global, const TensorMap& delta) {
  torch::NoGradGuard no_grad;
  const auto& o = options_;
  for (auto& [key, x] : global) {
    const auto it = delta.find(key);
    if (it == delta.end()) throw DataError("the round's update has no tensor " + key + " of the global model");
    const torch::Tensor d = it->second.to(x.options());
    if (o.rule == "fedavg") {
      x.add_(d, o.lr);
      continue;
    }
    torch::Tensor& m = m_.try_emplace(key, torch::zeros_like(x)).first->second;
    if (o.rule == "fedavgm") {
      m.mul_(o.beta1).add_(d);
      x.add_(m, o.lr);
      continue;
    }
    m.mul_(o.beta1).add_(d, 1 - o.beta1);
    torch::Tensor& v = v_.try_emplace(key, torch::full_like(x, o.tau * o.tau)).first->second;
    const torch::Tensor d2 = d * d;
    if (o.rule == "fedadagrad") v.add_(d2);
    else if (o.rule == "fedyogi") v.sub_(d2 * torch::sign(v - d2), 1 - o.beta2);
    else v.mul_(o.beta2).add_(d2, 1 - o.beta2);
    x.add_(m / (v.sqrt() + o.tau), o.lr);
  }
  ++rounds_;
}

TensorMap ServerOptimizer::state() const {
  TensorMap out;
  for (const auto& [key, m] : m_) out.emplace("m/" + key, m);
  for (const auto& [key, v] : v_) out.emplace("v/" + key, v);
  return out;
}

void ServerOptimizer::load_state(const TensorMap& state, int64_t rounds) {
  m_.clear();
  v_.clear();
  for (const auto& [name, t] : state) {
    if (name.rfind("m/", 0) == 0) m_.emplace(name.substr(2), t.clone());
    else if (name.rfind("v/", 0) == 0) v_.emplace(name.substr(2), t.clone());
    else throw FormatError("server optimizer state: unexpected tensor " + name + " (expected m/<key> or v/<key>)");
  }
  rounds_ = rounds;
}

}  // namespace fedsplit
