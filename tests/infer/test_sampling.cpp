// labels: unit
// Next-token sampling (infer/sampling.h) against values worked out by hand: greedy and its ties,
// CTRL's repetition penalty, temperature, top-k and top-p candidate sets with their renormalised
// probabilities (1e-12), draws whose frequencies match the candidates' probabilities (20,000 draws,
// within 0.01, about three binomial standard deviations), seeds, and the option checks.
#include <gtest/gtest.h>

#include <cmath>

#include "core/util/error.h"
#include "infer/sampling.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_error;

SamplingOptions with(double temperature, int64_t top_k = 0, double top_p = 1, double penalty = 1) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.repetition_penalty = penalty;
  return o;
}

TEST(Sampling, GreedyTakesTheArgmaxAndTheLowestIdOnTies) {
  const std::vector<float> logits{0.5f, 2.0f, -1.0f, 2.0f};
  const auto c = sampling_candidates(logits.data(), 4, {}, with(0));
  EXPECT_EQ(c.ids, (std::vector<int64_t>{1}));
  EXPECT_EQ(c.probabilities, (std::vector<double>{1.0}));
  Sampler greedy(with(0));
  EXPECT_EQ(greedy.next(logits.data(), 4, {}), 1);
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  const std::vector<float> logits{2.0f, -1.0f, 0.5f};
  // Penalty 2 on ids 0 and 1 (id 0 seen twice counts once): {1, -2, 0.5}.
  auto c = sampling_candidates(logits.data(), 3, {0, 1, 0}, with(1, 0, 1, 2));
  ASSERT_EQ(c.ids, (std::vector<int64_t>{0, 2, 1}));
  const double z = std::exp(1.0) + std::exp(0.5) + std::exp(-2.0);
  EXPECT_NEAR(c.probabilities[0], std::exp(1.0) / z, 1e-12);
  EXPECT_NEAR(c.probabilities[2], std::exp(-2.0) / z, 1e-12);
  // Penalty 5: {0.4, -5, 0.5}: greedy now picks id 2.
  EXPECT_EQ(sampling_candidates(logits.data(), 3, {0, 1}, with(0, 0, 1, 5)).ids, (std::vector<int64_t>{2}));
}

TEST(Sampling, TemperatureTopKAndTopPKeepTheStatedSets) {
  // Temperature 2 on {0, ln 4}: probabilities proportional to {1, 2}.
  const std::vector<float> two{0.0f, static_cast<float>(std::log(4.0))};
  auto c = sampling_candidates(two.data(), 2, {}, with(2));
  ASSERT_EQ(c.ids, (std::vector<int64_t>{1, 0}));
  EXPECT_NEAR(c.probabilities[0], 2.0 / 3.0, 1e-7);  // the logit is a float: ln 4 to 1e-7
  // Top-k 2 of {1, 3, 2, 0}: ids 1 and 2 with e^3 : e^2.
  const std::vector<float> four{1.0f, 3.0f, 2.0f, 0.0f};
  c = sampling_candidates(four.data(), 4, {}, with(1, 2));
  ASSERT_EQ(c.ids, (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(c.probabilities[0], std::exp(3.0) / (std::exp(3.0) + std::exp(2.0)), 1e-12);
  // Top-p 0.75 of probabilities {0.5, 0.3, 0.15, 0.05}: the first two reach it; renormalised 5/8, 3/8.
  const std::vector<float> probs{static_cast<float>(std::log(0.5)), static_cast<float>(std::log(0.3)),
                                 static_cast<float>(std::log(0.15)), static_cast<float>(std::log(0.05))};
  c = sampling_candidates(probs.data(), 4, {}, with(1, 0, 0.75));
  ASSERT_EQ(c.ids, (std::vector<int64_t>{0, 1}));
  EXPECT_NEAR(c.probabilities[0], 0.625, 1e-7);
  EXPECT_NEAR(c.probabilities[1], 0.375, 1e-7);
  // A tiny top-p keeps the most likely token alone: the same as greedy.
  EXPECT_EQ(sampling_candidates(probs.data(), 4, {}, with(1, 0, 1e-6)).ids, (std::vector<int64_t>{0}));
}

TEST(Sampling, DrawsFollowTheCandidateProbabilitiesAndTheSeed) {
  const std::vector<float> probs{static_cast<float>(std::log(0.5)), static_cast<float>(std::log(0.3)),
                                 static_cast<float>(std::log(0.15)), static_cast<float>(std::log(0.05))};
  SamplingOptions o = with(1);
  o.seed = 42;
  Sampler sampler(o);
  std::vector<int64_t> counts(4, 0), first;
  for (int i = 0; i < 20000; ++i) {
    const int64_t id = sampler.next(probs.data(), 4, {});
    ++counts[static_cast<size_t>(id)];
    if (i < 50) first.push_back(id);
  }
  const std::vector<double> want{0.5, 0.3, 0.15, 0.05};
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(counts[i] / 20000.0, want[i], 0.01) << "token " << i;
  Sampler again(o);
  std::vector<int64_t> replay;
  for (int i = 0; i < 50; ++i) replay.push_back(again.next(probs.data(), 4, {}));
  EXPECT_EQ(replay, first);
  o.seed = 43;
  Sampler other(o);
  std::vector<int64_t> different;
  for (int i = 0; i < 50; ++i) different.push_back(other.next(probs.data(), 4, {}));
  EXPECT_NE(different, first);
}

TEST(Sampling, OptionsOutOfRangeNameTheFlag) {
  expect_error<ConfigError>([] { check_sampling_options(with(-1)); }, {"--temperature"});
  expect_error<ConfigError>([] { check_sampling_options(with(1, -2)); }, {"--top-k"});
  expect_error<ConfigError>([] { check_sampling_options(with(1, 0, 0)); }, {"--top-p"});
  expect_error<ConfigError>([] { check_sampling_options(with(1, 0, 1, 0)); }, {"--repetition-penalty"});
  expect_error<ConfigError>([] { Sampler s(with(1, 0, 1.5)); }, {"--top-p"});
}

}  // namespace
}  // namespace fedsplit
