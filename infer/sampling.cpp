#include "infer/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "core/util/error.h"
#include "core/util/random.h"

namespace fedsplit {

void check_sampling_options(const SamplingOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw ConfigError("--temperature must be 0 (greedy) or positive, got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw ConfigError("--top-k must be 0 (off) or positive, got " + std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw ConfigError("--top-p must be in (0, 1], got " + std::to_string(o.top_p));
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty))
    throw ConfigError("--repetition-penalty must be positive (1 = off), got " + std::to_string(o.repetition_penalty));
}

Candidates sampling_candidates(const float* logits, int64_t vocab, const std::vector<int64_t>& history,
                               const SamplingOptions& o) {
  if (vocab < 1) throw DataError("sampling: no logits");
  std::vector<double> score(logits, logits + vocab);
  if (o.repetition_penalty != 1) {
    for (const int64_t id : std::set<int64_t>(history.begin(), history.end())) {
      if (id < 0 || id >= vocab) continue;
      double& s = score[static_cast<size_t>(id)];
      s = s > 0 ? s / o.repetition_penalty : s * o.repetition_penalty;
    }
  }
  if (o.temperature == 0) {
    const auto best = std::max_element(score.begin(), score.end());  // the first maximum: lowest id
    return {{static_cast<int64_t>(best - score.begin())}, {1.0}};
  }
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto more_likely = [&](int64_t a, int64_t b) {
    return score[static_cast<size_t>(a)] != score[static_cast<size_t>(b)] ? score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)]
                                                                            : a < b;
  };
  const int64_t keep = o.top_k > 0 ? std::min(o.top_k, vocab) : vocab;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), more_likely);
  order.resize(static_cast<size_t>(keep));

  // Softmax of score / temperature over the kept tokens, from the largest (first) for stability.
  const double top = score[static_cast<size_t>(order.front())] / o.temperature;
  std::vector<double> p;
  double total = 0;
  for (const int64_t id : order) {
    p.push_back(std::exp(score[static_cast<size_t>(id)] / o.temperature - top));
    total += p.back();
  }
  for (double& x : p) x /= total;
  if (o.top_p < 1) {
    double mass = 0;
    size_t n = 0;
    while (n < p.size() && mass < o.top_p) mass += p[n++];
    order.resize(n);
    p.resize(n);
    for (double& x : p) x /= mass;
  }
  return {std::move(order), std::move(p)};
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(splitmix64(options.seed ^ 0x5A3D1Eull)) {
  check_sampling_options(options_);
}

int64_t Sampler::next(const float* logits, int64_t vocab, const std::vector<int64_t>& history) {
  const Candidates c = sampling_candidates(logits, vocab, history, options_);
  if (c.ids.size() == 1) return c.ids.front();
  const double u = static_cast<double>(rng_() >> 11) * 0x1p-53;  // [0, 1)
  double cumulative = 0;
  for (size_t i = 0; i < c.ids.size(); ++i) {
    cumulative += c.probabilities[i];
    if (u < cumulative) return c.ids[i];
  }
  return c.ids.back();  // u beyond the rounded total
}

}  // namespace fedsplit
