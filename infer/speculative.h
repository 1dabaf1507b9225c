// Speculative decoding (Leviathan et al. 2023, Chen et al. 2023): a small draft model proposes k
// tokens one at a time, the target reads them all in one forward pass, and a rejection rule keeps
// what the target would have produced, so decoding costs fewer target passes per token.
//
// Why the output distribution is the target's: p and q are the target's and the draft's candidate
// distributions (sampling_candidates: penalty, temperature, top-k, top-p) after the same history.
// The draft draws x ~ q and it is kept with probability min(1, p(x)/q(x)); otherwise a token is drawn
// from the residual r = max(0, p - q) / Σ max(0, p - q). Then
//   P(y) = q(y) min(1, p(y)/q(y)) + (1 - Σ_x min(q(x), p(x))) r(y)
//        = min(q(y), p(y)) + max(0, p(y) - q(y)) = p(y),
// since 1 - Σ min(q, p) = Σ max(0, p - q). Each position is judged after the tokens before it (kept
// ones and the resampled one end the round), so by induction every prefix has the target's law; when
// all k are kept, a bonus token is drawn from the target's row after them. Greedy (temperature 0) is
// the case where p and q are point masses: the draft token is kept while it equals the target's
// argmax, and the first disagreement takes the target's argmax, so the tokens are plain greedy's
// (up to the floating-point rounding of a k+1-token pass against one-token passes).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "infer/causal_lm.h"
#include "infer/generate.h"

namespace fedsplit {

struct SpeculativeGeneration : Generation {
  int64_t drafted = 0;          ///< tokens the draft proposed and the target judged
  int64_t accepted = 0;         ///< of those, the ones kept
  int64_t target_forwards = 0;  ///< target passes after the prompt's (one per round)
  int64_t draft_forwards = 0;   ///< draft passes after the prompt's
  double acceptance_rate() const { return drafted > 0 ? static_cast<double>(accepted) / drafted : 0.0; }
};

/// ConfigError unless `draft` can serve `target` with k = `draft_tokens`: the same vocabulary size
/// (naming --draft and both sizes) and k >= 1 (naming --draft-tokens).
void check_draft(const CausalLm& target, const CausalLm& draft, int64_t draft_tokens);

/// Generates after `prompt` (non-empty) from empty caches with `target`'s output distribution (the
/// tokens of generate(target, ...) when greedy), using `draft` to propose `draft_tokens` (k >= 1)
/// tokens per round; stops at max_tokens or an EOS id of the target like generate(). Draws are
/// reproducible from options.sampling.seed. On return both caches hold prompt + tokens except the
/// last of them (target: exactly; draft: at most that), as if the last token were still to be read.
/// check_draft's ConfigError; DataError when prompt + max_tokens exceed either context.
SpeculativeGeneration speculative_generate(CausalLm& target, CausalLm& draft, const std::vector<int64_t>& prompt,
                                           const GenerateOptions& options, int64_t draft_tokens,
                                           const std::function<void(int64_t)>& on_token = {});

}  // namespace fedsplit
