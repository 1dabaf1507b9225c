// UTF-8 stepping and the few Unicode character classes the HF tokenizers library uses outside its
// regexes (Rust's char::is_whitespace and regex \w), answered by ICU's property tables.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fedsplit::tok {

struct CodePoint {
  uint32_t value = 0;  ///< U+FFFD where the bytes are not valid UTF-8
  size_t length = 1;   ///< bytes it takes (1 for an invalid byte)
  bool valid = true;
};

/// Decodes the code point starting at byte `pos` of `text` (pos < text.size()).
CodePoint utf8_next(std::string_view text, size_t pos);
/// Start of the code point that ends just before byte `end` (end > 0).
size_t utf8_prev_start(std::string_view text, size_t end);
std::string utf8_encode(uint32_t code_point);

/// Unicode White_Space (Rust char::is_whitespace, regex \s).
bool is_unicode_whitespace(uint32_t cp);
/// Rust regex \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
bool is_word_char(uint32_t cp);
/// General category Mark (Mn, Mc, Me).
bool is_mark(uint32_t cp);

}  // namespace fedsplit::tok
