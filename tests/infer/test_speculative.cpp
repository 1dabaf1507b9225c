// labels: unit
// Speculative decoding (infer/speculative.h):
//   - greedy: the tokens of plain generate() for k = 1, 3, 5, with a draft that is a perturbed copy
//     of the target (some proposals rejected, some kept) and with the target itself (all kept);
//   - sampled: the law of the first 3 tokens is the target's. Fake models with 6 tokens whose logits
//     are a function of the history (so a cache left wrong by a rollback changes them) are run with
//     20000 seeds; every sequence's frequency f must be within 5 standard errors of its exact
//     probability p, |f - p| <= 5 sqrt(p (1 - p) / N) (p = 0: never seen). Measured: the largest
//     deviation over the 216 sequences is 2.9, 3.8 and 1.3 standard errors in the three cases; the
//     draft's own law is thousands away (asserted > 20), and mutants fail: keeping every proposal
//     gives 450-550 (inf with top-k/top-p), drawing a rejection's token from p instead of the
//     residual 26-35;
//   - the caches after a run: the target holds prompt + tokens but the last, the draft at most that,
//     and both continue with the logits of a fresh pass over the whole sequence;
//   - refused: vocabularies that differ, k < 1, a draft context too small.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "compress/gguf_export.h"
#include "core/model/decoder.h"
#include "core/util/error.h"
#include "infer/generate.h"
#include "infer/gguf_runner.h"
#include "infer/speculative.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_one_line_error;
using fedsplit::testing::TempDir;

// A causal LM without weights: the logits after a history are a fixed function of it (and `salt`).
class FakeLm : public CausalLm {
 public:
  FakeLm(int64_t vocab, double salt, int64_t context = 64) : salt_(salt), context_(context) {
    config_.vocab_size = vocab;
  }
  torch::Tensor forward(const std::vector<int64_t>& tokens) override {
    if (position() + static_cast<int64_t>(tokens.size()) > context_) throw DataError("FakeLm: past the context");
    auto out = torch::empty({static_cast<int64_t>(tokens.size()), config_.vocab_size});
    for (size_t t = 0; t < tokens.size(); ++t) {
      seen_.push_back(tokens[t]);
      const auto row = logits_after(seen_);
      std::copy(row.begin(), row.end(), out[static_cast<int64_t>(t)].data_ptr<float>());
    }
    return out;
  }
  void truncate(int64_t position) override {
    ASSERT_TRUE(position >= 0 && position <= this->position()) << position;
    seen_.resize(static_cast<size_t>(position));
  }
  int64_t position() const override { return static_cast<int64_t>(seen_.size()); }
  int64_t context() const override { return context_; }
  const DecoderConfig& config() const override { return config_; }

  std::vector<float> logits_after(const std::vector<int64_t>& history) const {
    double h = salt_;
    for (size_t j = 0; j < history.size(); ++j) h = std::fmod(h * 1.37 + 0.61 * (history[j] + 1) * (j + 1), 97.0);
    std::vector<float> row(static_cast<size_t>(config_.vocab_size));
    for (size_t v = 0; v < row.size(); ++v)
      row[v] = static_cast<float>(1.5 * std::sin(h + v * (1.1 + salt_)) + 0.4 * std::cos(2.3 * h * (v + 1)));
    return row;
  }

 private:
  DecoderConfig config_;
  double salt_;
  int64_t context_;
  std::vector<int64_t> seen_;
};

using Law = std::map<std::vector<int64_t>, double>;

// The exact law of the next `length` tokens of `model` after `prompt` under `sampling`.
Law exact_law(const FakeLm& model, const std::vector<int64_t>& prompt, int64_t length, const SamplingOptions& sampling) {
  Law law{{{}, 1.0}};
  for (int64_t step = 0; step < length; ++step) {
    Law longer;
    for (const auto& [prefix, mass] : law) {
      std::vector<int64_t> history = prompt;
      history.insert(history.end(), prefix.begin(), prefix.end());
      const auto row = model.logits_after(history);
      const Candidates c = sampling_candidates(row.data(), static_cast<int64_t>(row.size()), history, sampling);
      for (size_t i = 0; i < c.ids.size(); ++i) {
        auto next = prefix;
        next.push_back(c.ids[i]);
        longer[next] += mass * c.probabilities[i];
      }
    }
    law = std::move(longer);
  }
  return law;
}

// The largest |f - p| / sqrt(p (1 - p) / n) over the sequences; infinity when one with p = 0 occurs.
double largest_z(const Law& frequencies, const Law& exact, int64_t n) {
  double worst = 0;
  for (const auto& [sequence, f] : frequencies)
    if (!exact.count(sequence) && f > 0) return INFINITY;
  for (const auto& [sequence, p] : exact) {
    const auto it = frequencies.find(sequence);
    const double f = it == frequencies.end() ? 0.0 : it->second;
    if (p >= 1) continue;
    worst = std::max(worst, std::abs(f - p) / std::sqrt(p * (1 - p) / static_cast<double>(n)));
  }
  return worst;
}

TEST(Speculative, SampledTokensFollowTheTargetsLaw) {
  const std::vector<int64_t> prompt{2, 4, 1};
  const int64_t kSeeds = 20000, kLength = 3;
  struct Case {
    const char* name;
    SamplingOptions sampling;
    int64_t k;
  };
  std::vector<Case> cases(3);
  cases[0] = {"temperature 1", {}, 2};
  cases[0].sampling.temperature = 1;
  cases[1] = {"temperature 1, repetition penalty 1.5", {}, 3};
  cases[1].sampling.temperature = 1;
  cases[1].sampling.repetition_penalty = 1.5;
  cases[2] = {"temperature 0.8, top-k 4, top-p 0.9", {}, 2};
  cases[2].sampling.temperature = 0.8;
  cases[2].sampling.top_k = 4;
  cases[2].sampling.top_p = 0.9;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FakeLm target(6, 0.3), draft(6, 0.8);
    const Law exact = exact_law(target, prompt, kLength, c.sampling);
    Law frequencies;
    int64_t drafted = 0, accepted = 0;
    GenerateOptions options;
    options.sampling = c.sampling;
    options.max_tokens = kLength;
    for (int64_t seed = 0; seed < kSeeds; ++seed) {
      options.sampling.seed = static_cast<uint64_t>(seed);
      const auto g = speculative_generate(target, draft, prompt, options, c.k);
      ASSERT_EQ(g.tokens.size(), static_cast<size_t>(kLength));
      frequencies[g.tokens] += 1.0 / kSeeds;
      drafted += g.drafted;
      accepted += g.accepted;
    }
    EXPECT_LE(largest_z(frequencies, exact, kSeeds), 5.0);
    EXPECT_GT(accepted, 0);
    EXPECT_LT(accepted, drafted) << "the draft differs: some proposals are rejected";
    // The test can fail: the draft's own law (what keeping every proposal would give) is far outside.
    EXPECT_GT(largest_z(exact_law(draft, prompt, kLength, c.sampling), exact, kSeeds), 20.0);
  }
}

TEST(Speculative, SameSeedSameTokensAndADraftEqualToTheTargetIsAlwaysKept) {
  FakeLm target(6, 0.3), same(6, 0.3);
  GenerateOptions options;
  options.sampling.temperature = 1;
  options.sampling.seed = 11;
  options.max_tokens = 12;
  const auto a = speculative_generate(target, same, {1, 2}, options, 4);
  const auto b = speculative_generate(target, same, {1, 2}, options, 4);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.accepted, a.drafted);
  EXPECT_GT(a.drafted, 0);
  EXPECT_EQ(a.target_forwards, 3) << "12 tokens in rounds of 4 + 1 (the last round proposes 1)";
}

// Tiny GGUF models: the target, and a draft that is the target with noise on its weights.
Decoder tiny(double noise) {
  DecoderConfig c = family_config(ModelFamily::llama, 96, 64, 2, 4, 2, 0, 64);
  Decoder model(c, /*init=*/false);
  model->init_weights(5);
  torch::NoGradGuard no_grad;
  torch::manual_seed(9);
  for (auto& p : model->parameters())
    if (p.dim() == 2) p.mul_(4).add_(torch::randn_like(p) * noise);  // larger than init's: clear argmaxes
  model->eval();
  return model;
}

std::string exported(double noise, const TempDir& dir, const std::string& name) {
  GgufExportOptions options;
  options.quant = GgufQuant::f32;
  export_gguf(tiny(noise), options, dir / name);
  return dir / (name + "/model.gguf");
}

class SpeculativeGguf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("speculative");
    target_ = exported(0, *dir_, "target");
    draft_ = exported(0.02, *dir_, "draft");
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
  static std::string target_, draft_;
};
TempDir* SpeculativeGguf::dir_ = nullptr;
std::string SpeculativeGguf::target_, SpeculativeGguf::draft_;

const std::vector<int64_t> kPrompt{3, 17, 42, 8, 91, 5, 60, 23};

TEST_F(SpeculativeGguf, GreedyTokensAreGenerates) {
  GgufRunner target(target_, 1), draft(draft_, 1), target_copy(target_, 1);
  GenerateOptions options;
  options.max_tokens = 32;
  options.stop_at_eos = false;
  const auto plain = generate(target, kPrompt, options);
  ASSERT_EQ(plain.tokens.size(), 32u);
  for (const int64_t k : {1, 3, 5}) {
    SCOPED_TRACE("k = " + std::to_string(k));
    std::vector<int64_t> streamed;
    const auto g = speculative_generate(target, draft, kPrompt, options, k, [&](int64_t t) { streamed.push_back(t); });
    EXPECT_EQ(g.tokens, plain.tokens);
    EXPECT_EQ(streamed, g.tokens);
    EXPECT_GT(g.accepted, 0) << g.drafted;
    EXPECT_LT(g.accepted, g.drafted) << "the perturbed draft disagrees somewhere";
    const auto same = speculative_generate(target, target_copy, kPrompt, options, k);
    EXPECT_EQ(same.tokens, plain.tokens);
    EXPECT_EQ(same.accepted, same.drafted);
    EXPECT_EQ(same.target_forwards, (32 + k) / (k + 1)) << "k + 1 tokens a pass";
  }
  options.stop_at_eos = true;
  options.max_tokens = 20;
  EXPECT_EQ(speculative_generate(target, draft, kPrompt, options, 3).tokens, generate(target, kPrompt, options).tokens);
}

TEST_F(SpeculativeGguf, CachesHoldTheSequenceButItsLastToken) {
  GgufRunner target(target_, 1), draft(draft_, 1), fresh(target_, 1), fresh_draft(draft_, 1);
  GenerateOptions options;
  options.max_tokens = 17;
  options.stop_at_eos = false;
  options.sampling.temperature = 1;
  options.sampling.seed = 3;
  const auto g = speculative_generate(target, draft, kPrompt, options, 4);
  ASSERT_EQ(g.tokens.size(), 17u);
  ASSERT_LT(g.accepted, g.drafted) << "a rollback happened";
  std::vector<int64_t> sequence = kPrompt;
  sequence.insert(sequence.end(), g.tokens.begin(), g.tokens.end());
  const int64_t n = static_cast<int64_t>(sequence.size());
  EXPECT_EQ(target.position(), n - 1);
  EXPECT_LE(draft.position(), n - 1);
  // Continuing from the caches gives a fresh pass's logits: nothing rejected was left behind.
  const auto last = target.forward({sequence.back()})[0];
  EXPECT_LE((last - fresh.forward(sequence)[-1]).abs().max().item<double>(), 1e-4);
  const std::vector<int64_t> unread(sequence.begin() + draft.position(), sequence.end());
  const auto draft_last = draft.forward(unread)[-1];
  EXPECT_LE((draft_last - fresh_draft.forward(sequence)[-1]).abs().max().item<double>(), 1e-4);
}

TEST(Speculative, RefusesMismatchedModelsAndBadK) {
  FakeLm target(6, 0.3), other_vocab(7, 0.3), small_context(6, 0.8, 8);
  GenerateOptions options;
  options.max_tokens = 6;
  expect_one_line_error<ConfigError>([&] { speculative_generate(target, other_vocab, {1, 2}, options, 2); },
                                     {"--draft", "7", "6", "vocabulary"});
  expect_one_line_error<ConfigError>([&] { speculative_generate(target, target, {1, 2}, options, 0); },
                                     {"--draft-tokens", "0"});
  expect_one_line_error<DataError>([&] { speculative_generate(target, small_context, {1, 2, 3}, options, 2); },
                                   {"draft model's context of 8", "--max-tokens"});
  expect_one_line_error<DataError>([&] { speculative_generate(target, small_context, {}, options, 2); }, {"prompt"});
}

}  // namespace
}  // namespace fedsplit
