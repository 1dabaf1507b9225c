// The server's side of a federated round: the mean client update (federated/aggregator.h) applied to the
// global model by a server optimizer (Reddi et al., 2021, "Adaptive Federated Optimization").
//
// With x the global parameters and Δ = Σ_i w_i (x_i - x) / Σ_i w_i the weighted mean of the client
// deltas (w_i = the client's training samples for FedAvg), every rule treats Δ as a pseudo-gradient
// step:
//   fedavg      x ← x + η Δ                     (η = 1: the weighted mean of the client models)
//   fedavgm     m ← β1 m + Δ;  x ← x + η m        (server momentum, Hsu et al. 2019)
//   fedadagrad  m ← β1 m + (1-β1) Δ;  v ← v + Δ²
//   fedyogi     m as above;  v ← v - (1-β2) Δ² sign(v - Δ²)
//   fedadam     m as above;  v ← β2 v + (1-β2) Δ²
//               and for the three adaptive rules x ← x + η m / (√v + τ)
// m starts at 0 and v at τ² (the paper's Algorithm 2), without bias correction, as in the paper.
// The state (m, v, rounds) is what a server checkpoint must hold to resume exactly.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

struct ServerOptimizerOptions {
  std::string rule = "fedavg";  ///< fedavg | fedavgm | fedadagrad | fedyogi | fedadam
  double lr = 1.0;              ///< η, the server learning rate
  double beta1 = 0.9;           ///< momentum (fedavgm, adaptive rules)
  double beta2 = 0.99;          ///< second-moment decay (fedyogi, fedadam)
  double tau = 1e-3;            ///< adaptivity: added to √v, and v's start τ²
};

class ServerOptimizer {
 public:
  /// Throws ConfigError naming federated.server_* for an unknown rule or a value out of range.
  explicit ServerOptimizer(ServerOptimizerOptions options);

  /// Applies the round's mean client delta `delta` to `global` in place (same keys and shapes).
  void step(TensorMap& global, const TensorMap& delta);

  /// The optimizer state as named tensors ("m/<key>", "v/<key>") for checkpoints, and the rounds
  /// taken; load_state restores both.
  TensorMap state() const;
  int64_t rounds() const { return rounds_; }
  void load_state(const TensorMap& state, int64_t rounds);

  const ServerOptimizerOptions& options() const { return options_; }

 private:
  ServerOptimizerOptions options_;
  TensorMap m_, v_;
  int64_t rounds_ = 0;
};

}  // namespace fedsplit
