#include "core/tokenizer/spm_normalizer.h"

#include "core/tokenizer/utf8.h"
#include "core/util/error.h"

namespace fedsplit::tok {

namespace {

// darts-clone packs each double-array unit into 32 bits.
bool unit_has_leaf(uint32_t unit) { return ((unit >> 8) & 1) == 1; }
uint32_t unit_value(uint32_t unit) { return unit & ((1u << 31) - 1); }
uint32_t unit_label(uint32_t unit) { return unit & ((1u << 31) | 0xFF); }
uint32_t unit_offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

uint32_t read_u32_le(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

SpmNormalizer::SpmNormalizer(const SpmNormalizerSpec& spec, bool treat_whitespace_as_suffix,
                             const PieceTrie* user_defined, const std::string& where)
    : spec_(spec), treat_whitespace_as_suffix_(treat_whitespace_as_suffix), user_defined_(user_defined) {
  const std::string& blob = spec_.precompiled_charsmap;
  if (blob.empty()) return;  // e.g. the "identity" rule: characters are copied
  // <trie size: u32 little-endian><double array><replacement strings>
  const uint32_t trie_size = blob.size() > 4 ? read_u32_le(blob.data()) : 0;
  if (blob.size() <= 4 || trie_size > blob.size() - 4 || trie_size % 4 != 0 || trie_size == 0)
    throw FormatError(where + " is not a SentencePiece model (its normalization map is broken): pass a .model "
                      "written by SentencePiece");
  units_.resize(trie_size / 4);
  for (size_t i = 0; i < units_.size(); ++i) units_[i] = read_u32_le(blob.data() + 4 + 4 * i);
  outputs_ = blob.substr(4 + trie_size);
  spec_.precompiled_charsmap.clear();  // copied into units_ and outputs_
}

std::pair<size_t, uint32_t> SpmNormalizer::longest_rule(std::string_view input) const {
  std::pair<size_t, uint32_t> best{0, 0};
  size_t node = unit_offset(units_[0]);
  for (size_t i = 0; i < input.size(); ++i) {
    const auto byte = static_cast<uint8_t>(input[i]);
    node ^= byte;
    if (node >= units_.size()) break;
    const uint32_t unit = units_[node];
    if (unit_label(unit) != byte) break;
    node ^= unit_offset(unit);
    if (unit_has_leaf(unit)) {
      if (node >= units_.size()) break;
      best = {i + 1, unit_value(units_[node])};
    }
  }
  return best;
}

std::pair<std::string_view, size_t> SpmNormalizer::normalize_prefix(std::string_view input) const {
  if (user_defined_ != nullptr) {
    if (const size_t n = user_defined_->longest(input); n > 0) return {input.substr(0, n), n};
  }
  if (!units_.empty()) {
    const auto [length, offset] = longest_rule(input);
    if (length > 0 && offset < outputs_.size()) {
      const size_t end = outputs_.find('\0', offset);
      return {std::string_view(outputs_).substr(offset, end == std::string::npos ? std::string::npos : end - offset),
              length};
    }
  }
  const CodePoint cp = utf8_next(input, 0);
  if (!cp.valid) return {kReplacementChar, 1};
  return {input.substr(0, cp.length), cp.length};
}

std::string SpmNormalizer::normalize(std::string_view input) const {
  std::string out;
  if (spec_.remove_extra_whitespaces) {  // leading whitespace goes
    while (!input.empty()) {
      const auto [text, consumed] = normalize_prefix(input);
      if (text != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return out;
  out.reserve(input.size() * 3 / 2);
  const auto add_space = [&] { out += spec_.escape_whitespaces ? kSpaceSymbol : std::string_view(" "); };

  if (!treat_whitespace_as_suffix_ && spec_.add_dummy_prefix) add_space();
  bool previous_was_space = spec_.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [text, consumed] = normalize_prefix(input);
    // After a space, further spaces are dropped (when collapsing whitespace).
    while (previous_was_space && !text.empty() && text.front() == ' ') text.remove_prefix(1);
    if (!text.empty()) {
      for (const char c : text) {
        if (spec_.escape_whitespaces && c == ' ') out += kSpaceSymbol;
        else out += c;
      }
      previous_was_space = text.back() == ' ';
    }
    input.remove_prefix(consumed);
    if (!spec_.remove_extra_whitespaces) previous_was_space = false;
  }
  if (spec_.remove_extra_whitespaces) {  // trailing whitespace goes
    const std::string_view space = spec_.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
    while (out.size() >= space.size() && std::string_view(out).substr(out.size() - space.size()) == space)
      out.resize(out.size() - space.size());
  }
  if (treat_whitespace_as_suffix_ && spec_.add_dummy_prefix) add_space();
  return out;
}

}  // namespace fedsplit::tok
