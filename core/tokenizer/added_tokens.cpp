#include "core/tokenizer/added_tokens.h"

#include <algorithm>

#include "core/tokenizer/utf8.h"

namespace fedsplit::tok {

namespace {
bool word_char_before(std::string_view text, size_t pos) {
  return pos > 0 && is_word_char(utf8_next(text, utf8_prev_start(text, pos)).value);
}
bool word_char_at(std::string_view text, size_t pos) {
  return pos < text.size() && is_word_char(utf8_next(text, pos).value);
}
}  // namespace

void AddedTokenMatcher::add(const AddedToken& token, const std::string& text) {
  if (text.empty()) return;  // the reference library ignores empty tokens as well
  int node = 0;
  for (const char c : text) {
    const auto byte = static_cast<uint8_t>(c);
    int child = 0;
    if (node == 0) {
      child = root_children_[byte];
    } else {
      const auto& kids = nodes_[node].children;
      const auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(byte, 0));
      if (it != kids.end() && it->first == byte) child = it->second;
    }
    if (child == 0) {
      child = static_cast<int>(nodes_.size());
      nodes_.emplace_back();
      if (node == 0) {
        root_children_[byte] = child;
      } else {
        auto& kids = nodes_[node].children;
        kids.insert(std::lower_bound(kids.begin(), kids.end(), std::make_pair(byte, 0)), {byte, child});
      }
    }
    node = child;
  }
  // The same text added twice: the later definition wins.
  nodes_[node].token = static_cast<int>(tokens_.size());
  tokens_.push_back(token);
}

std::pair<int, size_t> AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  int node = root_children_[static_cast<uint8_t>(text[pos])];
  std::pair<int, size_t> best{-1, 0};
  for (size_t i = pos + 1; node != 0; ++i) {
    if (nodes_[node].token >= 0) best = {nodes_[node].token, i - pos};
    if (i == text.size()) break;
    const auto byte = static_cast<uint8_t>(text[i]);
    const auto& kids = nodes_[node].children;
    const auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(byte, 0));
    node = (it != kids.end() && it->first == byte) ? it->second : 0;
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& segments) const {
  size_t done = 0;  // end of the last segment pushed
  size_t pos = 0;
  while (pos < text.size()) {
    const auto [index, length] = longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t begin = pos, end = pos + length;
    pos = end;  // a rejected match still consumes its bytes, as the library's matcher does
    if (token.single_word && (word_char_before(text, begin) || word_char_at(text, end))) continue;
    if (token.lstrip) {
      while (begin > done) {
        const size_t prev = utf8_prev_start(text, begin);
        if (!is_unicode_whitespace(utf8_next(text, prev).value)) break;
        begin = prev;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        const CodePoint cp = utf8_next(text, end);
        if (!is_unicode_whitespace(cp.value)) break;
        end += cp.length;
      }
      pos = end;
    }
    if (begin > done) segments.push_back({done, begin, -1});
    segments.push_back({begin, end, token.id});
    done = end;
  }
  if (done < text.size()) segments.push_back({done, text.size(), -1});
}

}  // namespace fedsplit::tok
