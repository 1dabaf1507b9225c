// A compiled regular expression with the semantics the HF tokenizers library's patterns are written
// for (Oniguruma: Unicode classes such as \p{L} and \s, lookahead, (?i:...)), backed by PCRE2 in
// UTF + UCP mode with JIT. One known difference: PCRE2's \s also matches U+180E.
// Text that is not valid UTF-8 is accepted: invalid bytes never match and are left between matches.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace fedsplit::tok {

class Regex {
 public:
  /// Compiles `pattern`; throws FormatError naming `where` and the pattern if PCRE2 rejects it.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// Byte ranges [begin, end) of the successive non-overlapping matches in `text`, left to right.
  /// After an empty match the search resumes one character further. Safe to call from many threads.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& matches) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
};

}  // namespace fedsplit::tok
