#include "federated/dp_aggregator.h"


#include "core/config/recipe.h"
#include "core/util/error.h"
#include "core/util/random.h"
#include "federated/dp.h"

namespace fedsplit {

void bind_privacy_options(Recipe& r, PrivacyOptions& o) {
  r.add_choice("privacy.dp", &o.dp, {"none", "central", "distributed"},
               "client-level differential privacy (central: the server adds the noise; distributed: each client adds "
               "its share, under secure aggregation)");
  r.add("privacy.clip", &o.clip, "largest L2 norm of a client's update (the start when adaptive)", 1e-12, 1e12);
  r.add("privacy.noise_multiplier", &o.noise_multiplier, "noise standard deviation in units of the clip", 0.0, 1e6);
  r.add("privacy.delta", &o.delta, "delta at which epsilon is reported", 1e-30, 0.999);
  r.add("privacy.adaptive_clip", &o.adaptive_clip, "move the clip toward privacy.target_quantile of the update norms");
  r.add("privacy.target_quantile", &o.target_quantile, "share of clients whose update should stay unclipped", 0.0, 1.0);
  r.add("privacy.clip_lr", &o.clip_lr, "geometric learning rate of the adaptive clip", 0.0, 10.0);
  r.add("privacy.local_dp_sgd", &o.local_dp_sgd,
        "local DP-SGD: every client clips each example's gradient and adds noise in its own training (any privacy.dp)");
  r.add("privacy.example_clip", &o.example_clip, "local DP-SGD: largest L2 norm of one example's gradient", 1e-12, 1e12);
  r.add("privacy.example_noise_multiplier", &o.example_noise_multiplier,
        "local DP-SGD: noise standard deviation in units of privacy.example_clip (0 = clipping only, no privacy)", 0.0, 1e6);
}

DpAggregator::DpAggregator(PrivacyOptions options, TensorMap global, int64_t expected_clients)
    : options_(std::move(options)), global_(std::move(global)), expected_(expected_clients) {
  if (expected_ < 1) throw ConfigError("DP-FedAvg needs at least one client per round");
}

void DpAggregator::set_round(TensorMap global, uint64_t round_seed) {
  global_ = std::move(global);
  seed_ = round_seed;
  sum_.clear();
  count_ = unclipped_ = 0;
}

void DpAggregator::add(const TensorMap& update, const UpdateInfo& info) {
  TensorMap delta;
  for (const auto& [name, x] : update) {
    const auto it = global_.find(name);
    if (it == global_.end() || !it->second.sizes().equals(x.sizes()))
      throw DataError("client " + std::to_string(info.client) + "'s tensor " + name + " does not match the global model");
    delta[name] = x.to(torch::kFloat64) - it->second.to(torch::kFloat64);
  }
  if (clip_update(delta, options_.clip) <= options_.clip) ++unclipped_;
  for (auto& [name, d] : delta) {
    auto& s = sum_[name];
    s = s.defined() ? s.add_(d) : d;
  }
  ++count_;
}

TensorMap DpAggregator::finalize() {
  add_gaussian_noise(sum_, options_.noise_multiplier, options_.clip, seed_);
  TensorMap out;
  for (const auto& [name, g] : global_) {
    const auto it = sum_.find(name);
    out[name] = it == sum_.end() ? g.clone() : (g.to(torch::kFloat64) + it->second / static_cast<double>(expected_)).to(torch::kFloat32);
  }
  last_clipped_ = count_ - unclipped_;
  if (options_.adaptive_clip && count_ > 0) {
    // The unclipped count is noised too (σ_b = expected / 20), so the clip itself leaks little.
    const double normal = SeededNormal(seed_ ^ 0xC11Bull)();
    const double sigma_b = static_cast<double>(expected_) / 20.0;
    const double fraction = (static_cast<double>(unclipped_) + sigma_b * normal) / static_cast<double>(expected_);
    options_.clip = adaptive_clip_update(options_.clip, fraction, options_.target_quantile, options_.clip_lr);
  }
  sum_.clear();
  count_ = unclipped_ = 0;
  return out;
}

}  // namespace fedsplit
