#include "core/tokenizer/byte_level.h"

#include "core/tokenizer/utf8.h"

namespace fedsplit::tok {

namespace {
bool stands_for_itself(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }
}  // namespace

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_code_point_.fill(-1);
  uint32_t next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = stands_for_itself(b) ? static_cast<uint32_t>(b) : next_extra++;
    chars_[b] = utf8_encode(cp);
    byte_of_code_point_[cp] = static_cast<int16_t>(b);
  }
}

std::string ByteLevelAlphabet::encode(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += chars_[static_cast<uint8_t>(c)];
  return out;
}

bool ByteLevelAlphabet::decode(std::string_view token, std::string& out) const {
  const size_t old_size = out.size();
  size_t pos = 0;
  while (pos < token.size()) {
    const CodePoint cp = utf8_next(token, pos);
    if (!cp.valid || cp.value >= byte_of_code_point_.size() || byte_of_code_point_[cp.value] < 0) {
      out.resize(old_size);
      return false;
    }
    out += static_cast<char>(byte_of_code_point_[cp.value]);
    pos += cp.length;
  }
  return true;
}

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

}  // namespace fedsplit::tok
