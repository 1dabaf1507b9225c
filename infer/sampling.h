// Choosing the next token from a row of logits, as transformers' generate does it: repetition
// penalty, then temperature, then top-k, then top-p (nucleus), then a draw; temperature 0 is greedy.
//
// The draw is reproducible: a seeded std::mt19937_64 and our own uniform double, never the std
// distributions (which differ between standard libraries). Torch-free.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace fedsplit {

struct SamplingOptions {
  double temperature = 0;          ///< 0 = greedy (argmax, lowest id on ties); else logits / temperature
  int64_t top_k = 0;               ///< keep the k most likely tokens (0 = all)
  double top_p = 1;                ///< keep the smallest set of most likely tokens whose mass reaches top_p
  double repetition_penalty = 1;   ///< CTRL's rule: a seen token's logit is divided by it if > 0, else multiplied
  uint64_t seed = 0;               ///< seeds the draws
};

/// ConfigError naming the flag (`--temperature`, ...) unless the options are in range.
void check_sampling_options(const SamplingOptions& options);

/// The tokens that remain candidates and their probabilities (summing to 1), in decreasing
/// probability (lower id first on ties), after the penalty, temperature, top-k and top-p; one
/// token with probability 1 when greedy. `history` holds the ids seen so far (prompt and output).
struct Candidates {
  std::vector<int64_t> ids;
  std::vector<double> probabilities;
};
Candidates sampling_candidates(const float* logits, int64_t vocab, const std::vector<int64_t>& history,
                               const SamplingOptions& options);

/// A sampler with its own generator: next() draws one token from sampling_candidates.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int64_t next(const float* logits, int64_t vocab, const std::vector<int64_t>& history);
  const SamplingOptions& options() const { return options_; }

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

}  // namespace fedsplit
