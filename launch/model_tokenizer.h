// The tokenizer a command uses with its --model: --tokenizer when given, else the one that came
// with the model (compress/gguf_vocab.h's find_model_tokenizer; `export gguf` copies it beside).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "compress/gguf_vocab.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"

namespace fedsplit::cli {

inline std::unique_ptr<Tokenizer> tokenizer_for_model(const std::string& model, const std::string& tokenizer_flag) {
  const std::string path = tokenizer_flag.empty() ? find_model_tokenizer(model) : tokenizer_flag;
  if (path.empty()) throw ConfigError("no tokenizer beside " + model + ": pass --tokenizer");
  return load_tokenizer(path);
}

/// The ids a prompt is generated from: BOS (when the tokenizer has one), then the text's tokens.
inline std::vector<int64_t> prompt_ids(const Tokenizer& tokenizer, const std::string& text) {
  std::vector<int64_t> out;
  if (tokenizer.bos_id() >= 0) out.push_back(tokenizer.bos_id());
  for (const auto id : tokenizer.encode(text)) out.push_back(id);
  return out;
}

/// The text of generated ids (the engine's int64 ids as the tokenizer's int32 ones).
inline std::string text_of(const Tokenizer& tokenizer, const std::vector<int64_t>& ids) {
  return tokenizer.decode(std::vector<int32_t>(ids.begin(), ids.end()));
}

}  // namespace fedsplit::cli
