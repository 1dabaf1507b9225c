#include "core/tokenizer/piece_trie.h"

namespace fedsplit::tok {

void PieceTrie::insert(std::string_view key, int32_t value) {
  int32_t node = 0;
  for (const char c : key) {
    const auto [it, added] = edges_.emplace(edge(node, static_cast<uint8_t>(c)), static_cast<int32_t>(values_.size()));
    if (added) values_.push_back(-1);
    node = it->second;
  }
  values_[node] = value;
}

}  // namespace fedsplit::tok
