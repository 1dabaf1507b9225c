#include "launch/request_lines.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/util/error.h"
#include "launch/model_tokenizer.h"

namespace fedsplit::cli {

std::pair<std::string, GenerateOptions> parse_request(const std::string& line, GenerateOptions options) {
  if (line.empty() || line[0] != '{') return {line, options};
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception&) {
    throw DataError("the request starts with '{' but is not JSON: send a plain prompt or a JSON object");
  }
  if (!j.is_object()) throw DataError("the request is JSON but not an object: send {\"prompt\": ...}");
  std::string prompt;
  for (const auto& [key, value] : j.items()) {
    try {
      if (key == "prompt") prompt = value.get<std::string>();
      else if (key == "max_tokens") options.max_tokens = value.get<int64_t>();
      else if (key == "temperature") options.sampling.temperature = value.get<double>();
      else if (key == "top_k") options.sampling.top_k = value.get<int64_t>();
      else if (key == "top_p") options.sampling.top_p = value.get<double>();
      else if (key == "repetition_penalty") options.sampling.repetition_penalty = value.get<double>();
      else if (key == "seed") options.sampling.seed = value.get<uint64_t>();
      else
        throw DataError("unknown key '" + key +
                        "' in the request: use prompt, max_tokens, temperature, top_k, top_p, repetition_penalty, seed");
    } catch (const nlohmann::json::exception&) {
      throw DataError("\"" + key + "\" in the request has the wrong type (" + value.dump() + ")");
    }
  }
  if (prompt.empty()) throw DataError("the request has no \"prompt\"");
  if (options.max_tokens < 1) throw DataError("\"max_tokens\" must be at least 1");
  return {prompt, options};
}

GenerateOptions request_defaults(const GenerateOptions& defaults, int64_t id) {
  GenerateOptions options = defaults;
  options.sampling.seed = defaults.sampling.seed + static_cast<uint64_t>(id);
  return options;
}

nlohmann::json answer_fields(const Tokenizer& tokenizer, const Generation& g) {
  const auto new_tokens = static_cast<int64_t>(g.tokens.size());
  return {{"completion", text_of(tokenizer, g.tokens)},
          {"prompt_tokens", g.prompt_tokens},
          {"new_tokens", new_tokens},
          {"seconds", g.prompt_seconds + g.decode_seconds},
          {"prompt_tokens_per_s", g.prompt_tokens / std::max(g.prompt_seconds, 1e-9)},
          {"decode_tokens_per_s", new_tokens / std::max(g.decode_seconds, 1e-9)}};
}

}  // namespace fedsplit::cli
