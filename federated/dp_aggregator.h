// Client-level differential privacy for federated averaging (DP-FedAvg, McMahan et al. 2018): every
// client's delta is clipped to L2 norm C, the clipped deltas are summed, Gaussian noise of standard
// deviation σ·C is added to the sum, and the sum is divided by the expected number of clients per round
// (a fixed denominator, so one client's presence changes the result by at most C / expected). With
// adaptive clipping (Andrew et al. 2021) C follows the target quantile of the update norms, estimated
// from a noised count of unclipped clients (count noise σ_b = expected / 20, as they suggest).
// The server's RDP accountant (federated/rdp_accountant.h) charges each round as one sampled Gaussian
// mechanism with q = clients per round / clients and noise multiplier σ.
#pragma once
#include <cstdint>
#include <string>

#include "federated/aggregator.h"

namespace fedsplit {

class Recipe;

struct PrivacyOptions {
  std::string dp = "none";        ///< none | central: the server clips and adds the noise | distributed: each client
                                  ///< clips and adds its share of the noise (with secure aggregation, secure_round.h)
  double clip = 1.0;              ///< C: largest L2 norm of a client's delta (the starting value when adaptive)
  double noise_multiplier = 1.0;  ///< σ: noise standard deviation in units of C
  double delta = 1e-5;            ///< δ at which ε is reported
  bool adaptive_clip = false;     ///< move C toward the target quantile of the update norms
  double target_quantile = 0.5;   ///< γ: share of clients that should be unclipped
  double clip_lr = 0.2;           ///< η: geometric step of the adaptive clip
  /// Local DP-SGD in each client's own training (independent of dp): per-example clipping and noise
  /// (federated/local_training.h), each client's ε counted by the server (federated/client_privacy.h).
  bool local_dp_sgd = false;
  double example_clip = 1.0;              ///< largest L2 norm of one example's gradient
  double example_noise_multiplier = 1.0;  ///< σ of local DP-SGD, in units of example_clip
};

/// Registers the [privacy] keys.
void bind_privacy_options(Recipe& recipe, PrivacyOptions& options);

class DpAggregator : public Aggregator {
 public:
  /// `expected_clients`: clients sampled per round (the denominator); `global`: the round's model.
  DpAggregator(PrivacyOptions options, TensorMap global, int64_t expected_clients);
  void add(const TensorMap& update, const UpdateInfo& info) override;
  /// global + (Σ clipped deltas + noise) / expected_clients; then adapts C when asked. The noise is drawn
  /// from `round_seed` (set_round), so a resumed run draws the same noise.
  TensorMap finalize() override;
  int64_t count() const override { return count_; }

  /// Starts a round: its reference model and noise seed (drops updates left from a short round).
  void set_round(TensorMap global, uint64_t round_seed);
  double clip() const { return options_.clip; }
  void set_clip(double clip) { options_.clip = clip; }
  void set_expected(int64_t expected_clients) { expected_ = expected_clients; }
  /// Clients of the last finalize whose delta was clipped.
  int64_t last_clipped() const { return last_clipped_; }

 private:
  PrivacyOptions options_;
  TensorMap global_;
  int64_t expected_;
  uint64_t seed_ = 0;
  TensorMap sum_;
  int64_t count_ = 0, unclipped_ = 0, last_clipped_ = 0;
};

}  // namespace fedsplit
