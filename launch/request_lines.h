// The line protocol of `fedsplit serve` and `generate --prompts`: a request is one line, a plain
// prompt or {"prompt": ..., "max_tokens", "temperature", "top_k", "top_p", "repetition_penalty",
// "seed"}; its answer is one JSON line with the request's id, its prompt and what answer_fields
// gives (or an "error"), whichever way the model runs.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <utility>

#include "core/tokenizer/tokenizer.h"
#include "infer/generate.h"

namespace fedsplit::cli {

/// The prompt and options of a request line; absent keys keep `options`. DataError naming the
/// key for a malformed line.
std::pair<std::string, GenerateOptions> parse_request(const std::string& line, GenerateOptions options);

/// The options request number `id` starts from: `defaults` with seed defaults.seed + id, so that
/// sampled requests differ and a rerun repeats them.
GenerateOptions request_defaults(const GenerateOptions& defaults, int64_t id);

/// completion, prompt_tokens, new_tokens, seconds, prompt_tokens_per_s and decode_tokens_per_s.
nlohmann::json answer_fields(const Tokenizer& tokenizer, const Generation& generation);

}  // namespace fedsplit::cli
