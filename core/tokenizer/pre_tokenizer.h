// tokenizer.json "pre_tokenizer" for byte-level BPE: cuts normalized text into the pieces that BPE
// encodes one at a time. Supported kinds: ByteLevel (add_prefix_space, use_regex: the GPT-2 split),
// Split (Regex or String pattern, any behavior, invert), Digits, and a Sequence of those ending in
// ByteLevel (the Llama-3 and Qwen2 form: Split with their regex, then ByteLevel without regex).
// Pieces stay raw bytes: the byte-to-character mapping of ByteLevel happens inside the BPE model.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tokenizer/regex.h"

namespace fedsplit::tok {

/// The pattern the ByteLevel pre-tokenizer splits with when use_regex is true (GPT-2's).
extern const char* const kGpt2SplitPattern;

class PreTokenizer {
 public:
  /// What happens to the matches of a Split pattern (names as in tokenizer.json).
  enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

  /// Appends the non-empty pieces of `text` to `pieces`.
  void split(std::string_view text, std::vector<std::string>& pieces) const;

  struct Step {
    std::shared_ptr<const Regex> regex;  ///< the pattern, or null for a literal
    std::string literal;                 ///< Split with a {"String": ...} pattern
    Behavior behavior = Behavior::isolated;
    bool invert = false;                 ///< split on what does not match
    bool add_prefix_space = false;       ///< ByteLevel: prepend ' ' to a piece not starting with one
  };
  std::vector<Step> steps;
};

/// Builds the pre-tokenizer a tokenizer.json describes. Throws FormatError naming `where` and the
/// kind for unknown kinds, and for a pipeline that is not byte-level (no final ByteLevel).
PreTokenizer parse_pre_tokenizer(const nlohmann::json& spec, const std::string& where);

}  // namespace fedsplit::tok
