// The tokenizer a command uses with its --model: --tokenizer when given, else the one that came
// with the model (compress/gguf_vocab.h's find_model_tokenizer; `export gguf` copies it beside).
#pragma once
#include <memory>
#include <string>

#include "compress/gguf_vocab.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"

namespace fedsplit::cli {

inline std::unique_ptr<Tokenizer> tokenizer_for_model(const std::string& model, const std::string& tokenizer_flag) {
  const std::string path = tokenizer_flag.empty() ? find_model_tokenizer(model) : tokenizer_flag;
  if (path.empty()) throw ConfigError("no tokenizer beside " + model + ": pass --tokenizer");
  return load_tokenizer(path);
}

}  // namespace fedsplit::cli
