// A byte trie over piece texts, answering "which pieces start at this position" for SentencePiece
// encoding (user-defined symbols, the unigram lattice).
#pragma once
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fedsplit::tok {

class PieceTrie {
 public:
  /// Adds `key` (non-empty) with `value` >= 0; a repeated key keeps the later value.
  void insert(std::string_view key, int32_t value);
  bool empty() const { return values_.size() <= 1; }

  /// Calls visit(length, value) for each key that is a prefix of `text`, shortest first.
  template <typename Visit>
  void prefixes(std::string_view text, Visit&& visit) const {
    int32_t node = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const auto it = edges_.find(edge(node, static_cast<uint8_t>(text[i])));
      if (it == edges_.end()) return;
      node = it->second;
      if (values_[node] >= 0) visit(i + 1, values_[node]);
    }
  }

  /// Length of the longest key that prefixes `text`; 0 if none does.
  size_t longest(std::string_view text) const {
    size_t best = 0;
    prefixes(text, [&](size_t length, int32_t) { best = length; });
    return best;
  }

 private:
  static uint64_t edge(int32_t node, uint8_t byte) { return (static_cast<uint64_t>(node) << 8) | byte; }
  std::unordered_map<uint64_t, int32_t> edges_;  // (node, byte) -> child node
  std::vector<int32_t> values_{-1};               // per node (0 = root); -1: no key ends there
};

}  // namespace fedsplit::tok
