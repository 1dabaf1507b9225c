#include "infer/generate.h"

#include <algorithm>
#include <chrono>

#include "core/util/error.h"

namespace fedsplit {

void check_generation_fits(const std::vector<int64_t>& prompt, int64_t max_tokens, int64_t context) {
  if (prompt.empty()) throw DataError("the prompt has no tokens");
  if (static_cast<int64_t>(prompt.size()) + max_tokens > context)
    throw DataError("the prompt of " + std::to_string(prompt.size()) + " tokens and " + std::to_string(max_tokens) +
                    " new tokens exceed the context of " + std::to_string(context) +
                    ": shorten the prompt or lower --max-tokens");
}

Generation generate(CausalLm& runner, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                    const std::function<void(int64_t)>& on_token) {
  check_generation_fits(prompt, options.max_tokens, runner.context());
  Sampler sampler(options.sampling);
  const auto& eos = runner.config().eos_token_ids;
  using clock = std::chrono::steady_clock;
  runner.reset();
  Generation out;
  out.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<int64_t> history = prompt;
  auto t0 = clock::now();
  torch::Tensor logits = runner.forward_last(prompt)[0].contiguous();
  out.prompt_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  for (int64_t i = 0; i < options.max_tokens; ++i) {
    const int64_t next = sampler.next(logits.data_ptr<float>(), logits.size(0), history);
    if (options.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    out.tokens.push_back(next);
    history.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 < options.max_tokens) logits = runner.forward({next})[0].contiguous();
  }
  out.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return out;
}

}  // namespace fedsplit
