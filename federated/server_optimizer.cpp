#include "federated/server_optimizer.h"

#include <cmath>

#include "core/util/error.h"

namespace fedsplit {
namespace {

bool is_adaptive(const std::string& rule) { return rule == "fedadagrad" || rule == "fedyogi" || rule == "fedadam"; }

}  // namespace

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
