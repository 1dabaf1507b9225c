#include "federated/robust_aggregation.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "core/util/error.h"

namespace fedsplit {
namespace {

const std::vector<std::string> kRules{"median", "trimmed_mean", "krum", "multi_krum", "bulyan", "norm_bound", "trust"};

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

torch::Tensor flatten(const TensorMap& tensors) {
  std::vector<torch::Tensor> parts;
  for (const auto& [name, t] : tensors) parts.push_back(t.detach().to(torch::kFloat64).reshape(-1));
  return torch::cat(parts);
}

// Coordinate-wise median of the rows of `stack` [n, D] (even n: mean of the two middle values).
torch::Tensor median_rows(const torch::Tensor& stack) {
  const int64_t n = stack.size(0);
  const auto sorted = std::get<0>(stack.sort(0));
  if (n % 2 == 1) return sorted[n / 2];
  return (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

// Squared L2 distances between every two rows, computed from differences (the Gram-matrix shortcut
// loses the small distances of an honest cluster to cancellation).
std::vector<std::vector<double>> squared_distances(const std::vector<torch::Tensor>& rows) {
  const size_t n = rows.size();
  std::vector<std::vector<double>> d2(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) d2[i][j] = d2[j][i] = (rows[i] - rows[j]).square().sum().item<double>();
  return d2;
}

// Krum scores of the updates in `set` (indices into d2): each one's sum of squared distances to its
// `neighbours` nearest others in the set.
std::vector<double> krum_scores(const std::vector<std::vector<double>>& d2, const std::vector<size_t>& set,
                                int64_t neighbours) {
  std::vector<double> scores;
  for (const size_t i : set) {
    std::vector<double> d;
    for (const size_t j : set)
      if (j != i) d.push_back(d2[i][j]);
    std::sort(d.begin(), d.end());
    const auto k = std::min<size_t>(static_cast<size_t>(std::max<int64_t>(neighbours, 0)), d.size());
    scores.push_back(std::accumulate(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(k), 0.0));
  }
  return scores;
}

// Positions of `scores` from lowest to highest; equal scores keep arrival order.
std::vector<size_t> by_score(const std::vector<double>& scores) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  return order;
}

void need(bool ok, const std::string& rule, const std::string& what, int64_t n) {
  if (!ok) throw DataError(rule + " needs " + what + " updates, got " + std::to_string(n) + ": add updates or lower robust.byzantine");
}

}  // namespace

void check_robust_options(const RobustOptions& o) {
  if (std::find(kRules.begin(), kRules.end(), o.rule) == kRules.end())
    throw ConfigError("robust.rule '" + o.rule + "' is not one of median, trimmed_mean, krum, multi_krum, bulyan, norm_bound, trust");
  if (o.byzantine < 0) throw ConfigError("robust.byzantine must be >= 0, got " + std::to_string(o.byzantine));
  if (!(o.trim_fraction >= 0 && o.trim_fraction < 0.5))
    throw ConfigError("robust.trim_fraction must be in [0, 0.5), got " + std::to_string(o.trim_fraction));
  if (o.multi_krum_m < 0) throw ConfigError("robust.multi_krum_m must be >= 0 (0 = n - f), got " + std::to_string(o.multi_krum_m));
  if (!(o.norm_bound > 0) || !std::isfinite(o.norm_bound))
    throw ConfigError("robust.norm_bound must be positive and finite, got " + std::to_string(o.norm_bound));
  if (!(o.trust_quality >= 0) || !std::isfinite(o.trust_quality))
    throw ConfigError("robust.trust_quality must be >= 0, got " + std::to_string(o.trust_quality));
  if (!(o.trust_weight >= 0) || !std::isfinite(o.trust_weight))
    throw ConfigError("robust.trust_weight must be >= 0, got " + std::to_string(o.trust_weight));
  if (o.trust_quality + o.trust_weight <= 0)
    throw ConfigError("robust.trust_quality and robust.trust_weight are both 0: give one a positive value");
  if (!(o.trust_decay >= 0 && o.trust_decay <= 1))
    throw ConfigError("robust.trust_decay must be in [0, 1], got " + std::to_string(o.trust_decay));
}

RobustAggregator::RobustAggregator(RobustOptions options, TensorMap global) : options_(std::move(options)) {
  check_robust_options(options_);
  set_global(std::move(global));
}

void RobustAggregator::set_global(TensorMap global) {
  if (!deltas_.empty())
    throw DataError("set_global with " + std::to_string(deltas_.size()) + " updates of this round pending: finalize() first");
  if (global.empty()) throw DataError("the global model for robust aggregation has no tensors");
  torch::NoGradGuard no_grad;
  global_flat_ = flatten(global);
  global_ = std::move(global);
}

void RobustAggregator::add(const TensorMap& update, const UpdateInfo& info) {
  const std::string client = "client " + std::to_string(info.client);
  if (!(info.weight > 0) || !std::isfinite(info.weight))
    throw DataError(client + " has weight " + std::to_string(info.weight) + ": weights must be positive");
  for (const auto& [name, t] : update) {
    const auto it = global_.find(name);
    if (it == global_.end()) throw DataError(client + "'s update has tensor " + name + ", which the global model lacks");
    if (it->second.sizes() != t.sizes())
      throw DataError(client + "'s tensor " + name + " has shape " + shape_of(t) + ", the global model's " + shape_of(it->second));
  }
  for (const auto& [name, t] : global_)
    if (update.count(name) == 0) throw DataError(client + "'s update lacks tensor " + name + " of the global model");
  torch::NoGradGuard no_grad;
  torch::Tensor delta = flatten(update) - global_flat_;
  // NaN would poison the sorts and distances that the rules rely on.
  if (!torch::isfinite(delta).all().item<bool>()) throw DataError(client + "'s update has values that are not finite");
  deltas_.push_back(std::move(delta));
  infos_.push_back(info);
}

TensorMap RobustAggregator::finalize() {
  torch::NoGradGuard no_grad;
  const auto& o = options_;
  const int64_t n = count();
  const int64_t f = o.byzantine;
  if (n == 0) throw DataError(o.rule + " has no updates to aggregate");
  nlohmann::json decision{{"rule", o.rule}, {"clients", nlohmann::json::array()}};
  for (const auto& info : infos_) decision["clients"].push_back(info.client);
  auto ids = [&](const std::vector<size_t>& positions) {
    auto out = nlohmann::json::array();
    for (const size_t p : positions) out.push_back(infos_[p].client);
    return out;
  };

  torch::Tensor combined;  // the combination of the deltas, [D] fp64
  if (o.rule == "median") {
    combined = median_rows(torch::stack(deltas_));
  } else if (o.rule == "trimmed_mean") {
    const int64_t k = o.trim_fraction > 0 ? static_cast<int64_t>(std::floor(o.trim_fraction * static_cast<double>(n))) : f;
    need(n > 2 * k, "trimmed_mean trimming " + std::to_string(k) + " from each end", "more than " + std::to_string(2 * k), n);
    const auto [sorted, order] = torch::stack(deltas_).sort(0);
    combined = sorted.narrow(0, k, n - 2 * k).mean(0);
    // Which clients were cut, as a share of the coordinates: a persistent outlier shows up near 1.
    const auto cut = torch::cat({order.narrow(0, 0, k), order.narrow(0, n - k, k)}).reshape(-1);
    const auto share = torch::bincount(cut, {}, n).to(torch::kFloat64) / static_cast<double>(order.size(1));
    decision["trimmed"] = k;
    decision["trimmed_share"] = std::vector<double>(share.data_ptr<double>(), share.data_ptr<double>() + n);
  } else if (o.rule == "krum" || o.rule == "multi_krum") {
    need(n > 2 * f + 2, o.rule + " with robust.byzantine = " + std::to_string(f), "more than " + std::to_string(2 * f + 2), n);
    const int64_t m = o.rule == "krum" ? 1 : (o.multi_krum_m > 0 ? o.multi_krum_m : n - f);
    if (m > n) throw DataError("multi_krum averages robust.multi_krum_m = " + std::to_string(m) + " updates but got " + std::to_string(n));
    std::vector<size_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    const auto scores = krum_scores(squared_distances(deltas_), all, n - f - 2);
    auto order = by_score(scores);
    order.resize(static_cast<size_t>(m));
    combined = torch::zeros_like(global_flat_);
    for (const size_t p : order) combined += deltas_[p];
    combined /= static_cast<double>(m);
    decision["selected"] = ids(order);
    decision["scores"] = scores;
  } else if (o.rule == "bulyan") {
    need(n >= 4 * f + 3, "bulyan with robust.byzantine = " + std::to_string(f), "at least " + std::to_string(4 * f + 3), n);
    const int64_t theta = n - 2 * f, beta = theta - 2 * f;
    const auto d2 = squared_distances(deltas_);
    std::vector<size_t> remaining(static_cast<size_t>(n)), chosen;
    std::iota(remaining.begin(), remaining.end(), 0);
    while (static_cast<int64_t>(chosen.size()) < theta) {
      // Krum on R counts |R| − f − 2 neighbours; late in the recursion that drops to 0, where every score would
      // be 0 and the pick blind: keep at least the nearest one.
      const auto neighbours = std::max<int64_t>(1, static_cast<int64_t>(remaining.size()) - f - 2);
      const size_t best = by_score(krum_scores(d2, remaining, neighbours)).front();
      chosen.push_back(remaining[best]);
      remaining.erase(remaining.begin() + static_cast<std::ptrdiff_t>(best));
    }
    std::vector<torch::Tensor> rows;
    for (const size_t p : chosen) rows.push_back(deltas_[p]);
    const auto selected = torch::stack(rows);
    const auto distance = (selected - median_rows(selected)).abs();
    const auto closest = std::get<1>(distance.sort(/*stable=*/c10::optional<bool>(true), /*dim=*/0)).narrow(0, 0, beta);
    combined = selected.gather(0, closest).mean(0);
    decision["selected"] = ids(chosen);
  } else if (o.rule == "norm_bound") {
    combined = torch::zeros_like(global_flat_);
    double total = 0;
    std::vector<size_t> clipped;
    std::vector<double> norms;
    for (size_t i = 0; i < deltas_.size(); ++i) {
      const double norm = deltas_[i].norm().item<double>();
      const double scale = norm > o.norm_bound ? o.norm_bound / norm : 1.0;
      if (norm > o.norm_bound) clipped.push_back(i);
      norms.push_back(norm);
      combined += deltas_[i] * (scale * infos_[i].weight);
      total += infos_[i].weight;
    }
    combined /= total;
    decision["clipped"] = ids(clipped);
    decision["norms"] = norms;
  } else {  // trust
    const auto median = median_rows(torch::stack(deltas_));
    const double median_norm = median.norm().item<double>();
    std::vector<double> quality, weights;
    double total = 0;
    for (size_t i = 0; i < deltas_.size(); ++i) {
      const double denom = deltas_[i].norm().item<double>() * median_norm;
      const double cosine = denom > 0 ? deltas_[i].dot(median).item<double>() / denom : 0.0;
      quality.push_back(std::clamp(cosine, 0.0, 1.0));
      const auto it = trust_.find(infos_[i].client);
      const double t = it == trust_.end() ? 0.5 : it->second;
      weights.push_back(o.trust_quality * quality.back() + o.trust_weight * t);
      total += weights.back();
    }
    decision["fallback"] = !(total > 0);
    if (total > 0) {
      combined = torch::zeros_like(global_flat_);
      for (size_t i = 0; i < deltas_.size(); ++i) combined += deltas_[i] * (weights[i] / total);
      for (double& w : weights) w /= total;
    } else {
      combined = median;
    }
    for (size_t i = 0; i < deltas_.size(); ++i) {
      double& t = trust_.try_emplace(infos_[i].client, 0.5).first->second;
      t = o.trust_decay * t + (1 - o.trust_decay) * quality[i];
    }
    decision["quality"] = quality;
    decision["weights"] = weights;
  }

  // Unflatten global + combination into the global model's keys and shapes.
  const auto flat = global_flat_ + combined;
  TensorMap out;
  int64_t offset = 0;
  for (const auto& [name, g] : global_) {
    out[name] = flat.narrow(0, offset, g.numel()).reshape(g.sizes()).to(torch::kFloat32);
    offset += g.numel();
  }
  deltas_.clear();
  infos_.clear();
  decision_ = std::move(decision);
  return out;
}

void RobustAggregator::load_trust(std::map<int64_t, double> trust) {
  for (const auto& [client, t] : trust)
    if (!(t >= 0 && t <= 1)) throw DataError("client " + std::to_string(client) + " has trust " + std::to_string(t) + ", outside [0, 1]");
  trust_ = std::move(trust);
}

}  // namespace fedsplit
