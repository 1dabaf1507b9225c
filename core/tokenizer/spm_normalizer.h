// SentencePiece's text normalization, as libsentencepiece applies it before segmenting: the
// model's precompiled character map (a darts-clone double-array trie of rewrite rules, e.g. NFKC
// for "nmt_nfkc"), whitespace cleanup and the ▁ (U+2581) space symbol. User-defined symbols are
// copied untouched. Malformed UTF-8 bytes become U+FFFD.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tokenizer/piece_trie.h"
#include "core/tokenizer/spm_model.h"

namespace fedsplit::tok {

/// UTF-8 of the space symbol ▁ (U+2581).
inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";

class SpmNormalizer {
 public:
  /// `user_defined` may be null (none); it must outlive the normalizer. Throws FormatError naming
  /// `where` if the character map is malformed.
  SpmNormalizer(const SpmNormalizerSpec& spec, bool treat_whitespace_as_suffix, const PieceTrie* user_defined,
                const std::string& where);

  std::string normalize(std::string_view input) const;

 private:
  // The rewritten form of the longest rule (or user-defined symbol, or character) at the start of
  // `input`, and how many input bytes it consumes.
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view input) const;
  // Longest rule of the double array prefixing `input`: (bytes matched, output offset); (0, 0) if none.
  std::pair<size_t, uint32_t> longest_rule(std::string_view input) const;

  SpmNormalizerSpec spec_;
  bool treat_whitespace_as_suffix_;
  const PieceTrie* user_defined_;
  std::vector<uint32_t> units_;  // the double array
  std::string outputs_;          // NUL-terminated replacement strings, addressed by offset
};

}  // namespace fedsplit::tok
