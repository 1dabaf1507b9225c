// Reconstruction metrics for the in-context autoencoder: how closely decoded token sequences
// (hypotheses) reproduce their references. All work on token ids, so they need no tokenizer and
// compare exactly what the model emits.
#pragma once
#include <cstdint>
#include <vector>

namespace fedsplit {

/// Corpus BLEU-4 (Papineni et al. 2002) on token ids: for n = 1..4, clipped n-gram matches and
/// hypothesis n-gram counts are summed over the corpus; the score is the geometric mean of the four
/// precisions (weights 1/4) times the brevity penalty exp(1 - r/c) when the total hypothesis length
/// c is below the total reference length r (1 otherwise). 0 when any precision is 0 or c = 0.
/// Throws std::invalid_argument when the two lists differ in size.
double corpus_bleu4(const std::vector<std::vector<int64_t>>& hypotheses,
                    const std::vector<std::vector<int64_t>>& references);

/// Over all reference positions, the fraction where the hypothesis has the same token at the same
/// index (a short hypothesis misses the rest, extra hypothesis tokens cost nothing). 0 when the
/// references hold no tokens. std::invalid_argument when the sizes differ.
double token_match_rate(const std::vector<std::vector<int64_t>>& hypotheses,
                        const std::vector<std::vector<int64_t>>& references);

/// The fraction of pairs whose hypothesis equals its reference (0 for no pairs).
/// std::invalid_argument when the sizes differ.
double exact_match_rate(const std::vector<std::vector<int64_t>>& hypotheses,
                        const std::vector<std::vector<int64_t>>& references);

}  // namespace fedsplit
