// Text generation with a CausalLm (a GgufRunner, the pipeline's driver): the prompt in one pass,
// then one token at a time from the KV cache, each chosen by a Sampler, until max_tokens or an
// end-of-sequence id.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "infer/causal_lm.h"
#include "infer/sampling.h"

namespace fedsplit {

struct GenerateOptions {
  SamplingOptions sampling;
  int64_t max_tokens = 64;  ///< new tokens at most
  bool stop_at_eos = true;  ///< end at the model's EOS ids (they are not returned)
};

struct Generation {
  std::vector<int64_t> tokens;  ///< the new tokens
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0;    ///< the prompt's pass
  double decode_seconds = 0;    ///< the new tokens' passes
};

/// DataError unless `prompt` is non-empty and it and `max_tokens` new tokens fit `context`.
void check_generation_fits(const std::vector<int64_t>& prompt, int64_t max_tokens, int64_t context);

/// Generates after `prompt` (non-empty) from an empty cache; `on_token` (if set) sees each new
/// token as it is chosen. DataError when prompt + max_tokens exceed the runner's context.
Generation generate(CausalLm& runner, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                    const std::function<void(int64_t)>& on_token = {});

}  // namespace fedsplit
