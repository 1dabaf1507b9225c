// Byzantine-robust aggregation: rules under which a minority of malicious clients cannot steer the model.
//
// Every rule works on the round's deltas δ_i = flat(x_i) − flat(g), where flat() concatenates a TensorMap's
// tensors (keys in map order, each flattened row-major) and g is the round's global model; it returns
// g + combine(δ_1..δ_n) with g's keys, shapes and fp32 dtype. Arithmetic runs in fp64. n is the round's
// update count and f = robust.byzantine, the number of clients assumed malicious.
//   median        coordinate-wise median of the δ_i (even n: the mean of the two middle values).
//   trimmed_mean  per coordinate, drop the k largest and k smallest values and average the rest, k =
//                 floor(trim_fraction·n), or f when trim_fraction = 0 (Yin et al. 2018); needs n > 2k.
//   krum          score_i = Σ of the squared L2 distances from δ_i to its n − f − 2 nearest other deltas;
//                 the δ with the lowest score wins (Blanchard et al. 2017); needs n > 2f + 2.
//   multi_krum    the plain (unweighted) mean of the m lowest-score deltas, m = multi_krum_m or n − f: plain
//                 so that a client cannot buy influence by claiming many samples. Needs n > 2f + 2, m ≤ n.
//   bulyan        (El Mhamdi et al. 2018) θ = n − 2f deltas chosen by repeated Krum over the remaining set R
//                 (neighbours max(1, |R| − f − 2), the chosen one leaves R), then per coordinate the mean of
//                 the β = θ − 2f selected values closest to their median (ties: the one chosen first).
//                 Needs n ≥ 4f + 3.
//   norm_bound    δ_i ← δ_i · min(1, C/‖δ_i‖), then the mean weighted by samples (Sun et al. 2019, "Can you
//                 really backdoor federated learning?"); C = robust.norm_bound.
//   trust         q_i = clamp(cos(δ_i, coordinate-wise median δ), 0, 1); w_i = a·q_i + b·t_i with t_i the
//                 client's trust (0.5 for a client never seen); the w-weighted mean (the median when every
//                 w_i is 0). After the round t_i ← decay·t_i + (1 − decay)·q_i for this round's clients, so
//                 that a client that keeps pulling against the majority loses its weight round over round.
// Ties in a Krum score go to the update that arrived first. Memory: the round's n deltas in fp64, plus
// an [n, D] fp64 stack while finalize() runs.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"  // TensorMap
#include "federated/aggregator.h"

namespace fedsplit {

struct RobustOptions {
  std::string rule = "median";  ///< median | trimmed_mean | krum | multi_krum | bulyan | norm_bound | trust
  int64_t byzantine = 1;        ///< f: clients assumed malicious (krum, multi_krum, bulyan; trimmed_mean trims f from each end when trim_fraction = 0)
  double trim_fraction = 0;     ///< trimmed_mean: share of the updates trimmed from each end, in [0, 0.5) (0 = use byzantine)
  int64_t multi_krum_m = 0;     ///< multi_krum: updates averaged (0 = n − f)
  double norm_bound = 1.0;      ///< norm_bound: C, the largest L2 norm a delta keeps (larger ones are scaled down to it)
  double trust_quality = 0.5;   ///< trust: a, the weight of this round's quality in w = a·quality + b·trust
  double trust_weight = 0.5;    ///< trust: b, the weight of the client's trust
  double trust_decay = 0.9;     ///< trust: trust ← decay·trust + (1 − decay)·quality after each round, in [0, 1]
};

/// Throws ConfigError naming the recipe key robust.<field> for an unknown rule or a value out of range.
void check_robust_options(const RobustOptions& options);

class RobustAggregator : public Aggregator {
 public:
  /// Checks `options` (ConfigError) and takes the round's global model (DataError when it has no tensors).
  RobustAggregator(RobustOptions options, TensorMap global);

  /// Keeps the client's delta. DataError naming the client and the key for keys or shapes other than the
  /// global model's, and naming the client for a weight that is not positive or a value that is not finite.
  void add(const TensorMap& update, const UpdateInfo& info) override;
  /// global + the rule's combination of the deltas (fp32, the global model's keys and shapes); empty
  /// again afterwards. DataError naming the counts when the rule has too few updates (they are kept).
  TensorMap finalize() override;
  int64_t count() const override { return static_cast<int64_t>(deltas_.size()); }

  /// What the last finalize() decided, for logs and metrics: {"rule", "clients": [ids in arrival order]} and
  /// per rule "selected" (krum, multi_krum, bulyan), "scores" (krum, multi_krum; aligned with clients),
  /// "trimmed" (k) and "trimmed_share" (per client: share of coordinates where it was trimmed), "clipped"
  /// and "norms" (norm_bound), "quality", "weights" and "fallback" (trust).
  const nlohmann::json& last_decision() const { return decision_; }

  /// The next round's reference model; DataError while updates of this round are pending.
  void set_global(TensorMap global);

  /// trust rule: client id -> trust in [0, 1] (clients not listed have 0.5), for checkpoints.
  const std::map<int64_t, double>& trust() const { return trust_; }
  /// Restores trust(); DataError naming the client for a value outside [0, 1].
  void load_trust(std::map<int64_t, double> trust);

  const RobustOptions& options() const { return options_; }

 private:
  RobustOptions options_;
  TensorMap global_;                   ///< the reference model (for keys, shapes)
  torch::Tensor global_flat_;          ///< flat(global), fp64
  std::vector<torch::Tensor> deltas_;  ///< flat(x_i) − flat(global), fp64, in arrival order
  std::vector<UpdateInfo> infos_;
  nlohmann::json decision_ = nlohmann::json::object();
  std::map<int64_t, double> trust_;
};

}  // namespace fedsplit
