// tokenizer.json "normalizer": the text rewrites applied before pre-tokenization. Supported kinds:
// null, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend and Sequence of those.
// Unicode normalization and case mapping come from ICU.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace fedsplit::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string apply(const std::string& text) const = 0;
};

/// Builds the normalizer a tokenizer.json describes; nullptr for `null`. Throws FormatError naming
/// `where` and the kind for kinds it does not know.
std::unique_ptr<Normalizer> parse_normalizer(const nlohmann::json& spec, const std::string& where);

}  // namespace fedsplit::tok
