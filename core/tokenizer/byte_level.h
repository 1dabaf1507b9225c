// The GPT-2 byte-level alphabet: every byte 0..255 stands for one printable Unicode character, so
// that a byte-level BPE vocabulary (tokenizer.json) can spell any byte string with text tokens.
// Bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68
// map, in byte order, to U+0100, U+0101, ...
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace fedsplit::tok {

class ByteLevelAlphabet {
 public:
  ByteLevelAlphabet();
  /// UTF-8 spelling of the character that stands for `byte`.
  const std::string& char_of(uint8_t byte) const { return chars_[byte]; }
  /// Byte-level spelling of raw bytes (what the vocabulary's keys look like).
  std::string encode(std::string_view bytes) const;
  /// Raw bytes of a byte-level spelled token; false if it holds a character outside the alphabet.
  bool decode(std::string_view token, std::string& out) const;

 private:
  std::array<std::string, 256> chars_;
  std::array<int16_t, 324> byte_of_code_point_;  // the alphabet's code points are all < 324
};

/// The process-wide alphabet (immutable, built once).
const ByteLevelAlphabet& byte_level_alphabet();

}  // namespace fedsplit::tok
