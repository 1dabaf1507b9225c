// labels: unit
// Reconstruction metrics (compress/icae_metrics.h) against values worked out by hand in the comments:
// corpus BLEU-4 with clipped counts and the brevity penalty, zero without a 4-gram match, clipping of
// repeated tokens, the token match rate with short hypotheses, the exact match rate, size errors.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "compress/icae_metrics.h"

namespace fedsplit {
namespace {

using Seqs = std::vector<std::vector<int64_t>>;
constexpr double kTol = 1e-12;

TEST(IcaeMetrics, IdenticalSequencesScoreOne) {
  const Seqs refs = {{1, 2, 3, 4, 5}, {6, 7, 8, 9}};
  EXPECT_NEAR(corpus_bleu4(refs, refs), 1.0, kTol);
  EXPECT_NEAR(token_match_rate(refs, refs), 1.0, kTol);
  EXPECT_NEAR(exact_match_rate(refs, refs), 1.0, kTol);
}

TEST(IcaeMetrics, BleuSumsClippedCountsOverTheCorpusWithTheBrevityPenalty) {
  // Pair A: ref 1..10 (r = 10), hyp 1 2 3 4 5 9 7 8 (c = 8).
  //   1-grams 8/8; 2-grams 12 23 34 45 [59 97] 78 -> 5/7; 3-grams 123 234 345 [459 597 978] -> 3/6;
  //   4-grams 1234 2345 [3459 4597 5978] -> 2/5.
  const Seqs hyp_a = {{1, 2, 3, 4, 5, 9, 7, 8}};
  const Seqs ref_a = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}};
  EXPECT_NEAR(corpus_bleu4(hyp_a, ref_a), std::exp(1.0 - 10.0 / 8.0) * std::pow(1.0 * 5 / 7 * 3 / 6 * 2 / 5, 0.25), kTol);
  // Adding pair B (identical, 4 tokens: 4/4, 3/3, 2/2, 1/1) sums counts, not scores:
  //   12/12, 8/10, 5/8, 3/6, c = 12, r = 14.
  const Seqs hyp = {hyp_a[0], {20, 21, 22, 23}};
  const Seqs ref = {ref_a[0], {20, 21, 22, 23}};
  EXPECT_NEAR(corpus_bleu4(hyp, ref), std::exp(1.0 - 14.0 / 12.0) * std::pow(1.0 * 0.8 * 0.625 * 0.5, 0.25), kTol);
}

TEST(IcaeMetrics, NoFourGramMatchGivesZero) {
  // 1-, 2- and 3-grams overlap (123), the only 4-gram 1237 does not.
  EXPECT_EQ(corpus_bleu4({{1, 2, 3, 7}}, {{1, 2, 3, 8}}), 0.0);
  // Too short for any 4-gram: no precision at all.
  EXPECT_EQ(corpus_bleu4({{1, 2, 3}}, {{1, 2, 3}}), 0.0);
  // An empty hypothesis corpus (c = 0).
  EXPECT_EQ(corpus_bleu4({{}}, {{1, 2, 3, 4}}), 0.0);
}

TEST(IcaeMetrics, RepeatedTokensAreClipped) {
  // "the the the" against "the": unigram 1/3 (clipped), no bigram match -> 0.
  EXPECT_EQ(corpus_bleu4({{7, 7, 7}}, {{7}}), 0.0);
  // hyp 1 1 1 2 3 4 (c = 6), ref 1 2 3 4 1 (r = 5, no brevity penalty):
  //   1-grams: 1 x3 clipped to the ref's 2, + 2 3 4 -> 5/6; 2-grams [11 11] 12 23 34 -> 3/5;
  //   3-grams [111 112] 123 234 -> 2/4; 4-grams [1112 1123] 1234 -> 1/3; product 1/12.
  EXPECT_NEAR(corpus_bleu4({{1, 1, 1, 2, 3, 4}}, {{1, 2, 3, 4, 1}}), std::pow(1.0 / 12.0, 0.25), kTol);
}

TEST(IcaeMetrics, TokenMatchRateCountsReferencePositions) {
  // ref 1..10 vs hyp 1 2 3 4 5 9 7 8: positions 0-4, 6, 7 match; 5 differs; 8, 9 missing -> 7/10.
  EXPECT_NEAR(token_match_rate({{1, 2, 3, 4, 5, 9, 7, 8}}, {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}), 0.7, kTol);
  // Summed over pairs: (2 of 4) + (3 of 3, extra hypothesis tokens cost nothing) -> 5/7.
  EXPECT_NEAR(token_match_rate({{1, 2}, {5, 6, 7, 8, 9}}, {{1, 2, 3, 4}, {5, 6, 7}}), 5.0 / 7.0, kTol);
  EXPECT_EQ(token_match_rate({}, {}), 0.0);
}

TEST(IcaeMetrics, ExactMatchRateCountsWholePairs) {
  // [1 2] == [1 2]; [1] != [1 2]; [] == [] -> 2/3.
  EXPECT_NEAR(exact_match_rate({{1, 2}, {1}, {}}, {{1, 2}, {1, 2}, {}}), 2.0 / 3.0, kTol);
  EXPECT_EQ(exact_match_rate({}, {}), 0.0);
}

TEST(IcaeMetrics, SizeMismatchThrows) {
  const Seqs one = {{1}}, two = {{1}, {2}};
  EXPECT_THROW(corpus_bleu4(one, two), std::invalid_argument);
  EXPECT_THROW(token_match_rate(two, one), std::invalid_argument);
  EXPECT_THROW(exact_match_rate(one, two), std::invalid_argument);
}

}  // namespace
}  // namespace fedsplit
