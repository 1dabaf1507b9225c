#include "infer/speculative.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <string>

#include "core/util/error.h"
#include "core/util/random.h"

namespace fedsplit {
namespace {

// A uniform double in [0, 1) from 53 bits: our own, like Sampler's, so draws agree across libraries.
double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1p-53; }

// One of `ids` with probability weight / total (no draw when there is one).
int64_t draw(const std::vector<int64_t>& ids, const std::vector<double>& weights, double total, std::mt19937_64& rng) {
  if (ids.size() == 1) return ids.front();
  const double u = uniform(rng) * total;
  double cumulative = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    cumulative += weights[i];
    if (u < cumulative) return ids[i];
  }
  for (size_t i = ids.size(); i-- > 0;)  // u beyond the rounded total: the last token that can occur
    if (weights[i] > 0) return ids[i];
  return ids.back();
}

double probability_of(const Candidates& c, int64_t id) {
  const auto it = std::find(c.ids.begin(), c.ids.end(), id);
  return it == c.ids.end() ? 0.0 : c.probabilities[static_cast<size_t>(it - c.ids.begin())];
}

Candidates candidates_of(const torch::Tensor& row, const std::vector<int64_t>& history, const SamplingOptions& options) {
  const torch::Tensor r = row.contiguous();
  return sampling_candidates(r.data_ptr<float>(), r.size(0), history, options);
}

// A token from the residual max(0, p - q), normalised: what a rejection draws instead of the draft's.
int64_t draw_residual(const Candidates& p, const Candidates& q, std::mt19937_64& rng) {
  std::vector<int64_t> ids;
  std::vector<double> weights;
  double total = 0;
  for (size_t i = 0; i < p.ids.size(); ++i) {
    const double w = p.probabilities[i] - probability_of(q, p.ids[i]);
    if (w <= 0) continue;
    ids.push_back(p.ids[i]);
    weights.push_back(w);
    total += w;
  }
  // p <= q everywhere leaves no mass (then rejection has probability 0; rounding alone gets here).
  if (ids.empty()) return draw(p.ids, p.probabilities, 1.0, rng);
  return draw(ids, weights, total, rng);
}

void check_context(const CausalLm& model, const std::string& which, int64_t prompt, int64_t max_tokens) {
  if (prompt + max_tokens <= model.context()) return;
  throw DataError("the prompt of " + std::to_string(prompt) + " tokens and " + std::to_string(max_tokens) +
                  " new tokens exceed the " + which + " context of " + std::to_string(model.context()) +
                  ": shorten the prompt or lower --max-tokens");
}

}  // namespace

void check_draft(const CausalLm& target, const CausalLm& draft, int64_t draft_tokens) {
  if (draft_tokens < 1) throw ConfigError("--draft-tokens must be at least 1, got " + std::to_string(draft_tokens));
  const int64_t vocab = target.config().vocab_size;
  if (draft.config().vocab_size != vocab)
    throw ConfigError("--draft: the draft model's vocabulary of " + std::to_string(draft.config().vocab_size) +
                      " tokens differs from the target's " + std::to_string(vocab) +
                      ": the draft needs the target's tokenizer");
}

SpeculativeGeneration speculative_generate(CausalLm& target, CausalLm& draft, const std::vector<int64_t>& prompt,
                                           const GenerateOptions& options, int64_t draft_tokens,
                                           const std::function<void(int64_t)>& on_token) {
  check_draft(target, draft, draft_tokens);
  if (prompt.empty()) throw DataError("the prompt has no tokens");
  check_sampling_options(options.sampling);
  const int64_t prompt_size = static_cast<int64_t>(prompt.size());
  check_context(target, "model's", prompt_size, options.max_tokens);
  check_context(draft, "draft model's", prompt_size, options.max_tokens);

  const SamplingOptions& sampling = options.sampling;
  const auto& eos = target.config().eos_token_ids;
  std::mt19937_64 rng(splitmix64(sampling.seed ^ 0x5BEC0DEull));
  using clock = std::chrono::steady_clock;
  SpeculativeGeneration out;
  out.prompt_tokens = prompt_size;
  // The prompt and the tokens produced so far; both caches hold all of it but (at most) the last one.
  std::vector<int64_t> history = prompt;
  auto sync_caches = [&] {
    const int64_t read = static_cast<int64_t>(history.size()) - 1;
    target.truncate(std::min(target.position(), read));
    draft.truncate(std::min(draft.position(), read));
  };

  auto t0 = clock::now();
  target.reset();
  draft.reset();
  if (prompt_size > 1) {
    const std::vector<int64_t> head(prompt.begin(), prompt.end() - 1);
    target.forward_last(head);  // only the caches matter here
    draft.forward_last(head);
  }
  out.prompt_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();

  // Appends a chosen token; false when generation ends (EOS, not kept, or max_tokens reached).
  auto emit = [&](int64_t token) {
    if (options.stop_at_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) return false;
    out.tokens.push_back(token);
    history.push_back(token);
    if (on_token) on_token(token);
    return static_cast<int64_t>(out.tokens.size()) < options.max_tokens;
  };

  bool more = options.max_tokens > 0;
  while (more) {
    // A round makes at most k + 1 tokens: no proposal beyond max_tokens.
    const int64_t k = std::min<int64_t>(draft_tokens, options.max_tokens - static_cast<int64_t>(out.tokens.size()) - 1);

    // The draft reads what it has not seen and proposes k tokens, each drawn from its q.
    std::vector<int64_t> proposal;
    std::vector<Candidates> q;
    if (k > 0) {
      std::vector<int64_t> seen = history;  // the penalty's history grows with the proposal
      const std::vector<int64_t> unread(history.begin() + draft.position(), history.end());
      torch::Tensor row = draft.forward_last(unread)[0];
      ++out.draft_forwards;
      for (int64_t i = 0; i < k; ++i) {
        if (i > 0) {
          row = draft.forward({proposal.back()})[0];
          ++out.draft_forwards;
        }
        q.push_back(candidates_of(row, seen, sampling));
        proposal.push_back(draw(q.back().ids, q.back().probabilities, 1.0, rng));
        seen.push_back(proposal.back());
      }
    }

    // The target reads its unread tail and the proposal in one pass; the last k + 1 rows judge.
    std::vector<int64_t> reading(history.begin() + target.position(), history.end());
    reading.insert(reading.end(), proposal.begin(), proposal.end());
    const torch::Tensor rows = target.forward(reading);
    ++out.target_forwards;
    const int64_t first = rows.size(0) - (k + 1);

    bool rejected = false;
    int64_t next = -1;
    for (int64_t i = 0; i < k && more; ++i) {
      const Candidates p = candidates_of(rows[first + i], history, sampling);  // history holds the kept ones
      const int64_t x = proposal[static_cast<size_t>(i)];
      const double px = probability_of(p, x), qx = probability_of(q[static_cast<size_t>(i)], x);
      ++out.drafted;
      if (px >= qx || (px > 0 && uniform(rng) * qx < px)) {  // kept with probability min(1, p/q)
        ++out.accepted;
        more = emit(x);
        continue;
      }
      next = draw_residual(p, q[static_cast<size_t>(i)], rng);
      rejected = true;
      break;
    }
    if (!more) break;
    if (!rejected) {  // every proposal kept: the bonus token from the row after them
      const Candidates p = candidates_of(rows[first + k], history, sampling);
      next = draw(p.ids, p.probabilities, 1.0, rng);
    }
    more = emit(next);
    sync_caches();  // forget the rejected proposals (and what the draft read past them)
  }
  sync_caches();
  out.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return out;
}

}  // namespace fedsplit
