#include "core/tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include "core/tokenizer/byte_level.h"
#include "core/util/error.h"

namespace fedsplit::tok {

BpeModel::BpeModel(BpeSpec spec, const std::string& where)
    : vocab_(std::move(spec.vocab)), fuse_unk_(spec.fuse_unk), ignore_merges_(spec.ignore_merges) {
  const auto id_of = [&](const std::string& token) {
    const auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
  };
  merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [a, b] = spec.merges[rank];
    const int32_t ia = id_of(a), ib = id_of(b), merged = id_of(a + b);
    if (ia < 0 || ib < 0 || merged < 0)
      throw FormatError(where + ": merge " + std::to_string(rank) + " ('" + a + "' '" + b +
                        "') uses a token missing from the vocabulary: the file is inconsistent, re-export it");
    // A repeated pair keeps its last rank, as the reference library's map does.
    merges_[pair_key(ia, ib)] = Merge{static_cast<int32_t>(rank), merged};
  }
  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = id_of(alphabet.char_of(static_cast<uint8_t>(b)));
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    fallback_ids_[b] = spec.byte_fallback ? id_of(name) : -1;
  }
  if (!spec.unk_token.empty()) {
    unk_id_ = id_of(spec.unk_token);
    if (unk_id_ < 0) throw FormatError(where + ": unk_token '" + spec.unk_token + "' is not in the vocabulary");
  }
}

void BpeModel::encode(std::string_view piece, std::vector<int32_t>& ids) const {
  const bool cacheable = piece.size() <= kCacheMaxPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(std::string(piece));
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> piece_ids;
  const auto whole = ignore_merges_ ? vocab_.find(byte_level_alphabet().encode(piece)) : vocab_.end();
  if (whole != vocab_.end()) piece_ids.push_back(whole->second);
  else merge_piece(piece, piece_ids);
  ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheEntries) cache_.emplace(piece, std::move(piece_ids));
  }
}

void BpeModel::merge_piece(std::string_view piece, std::vector<int32_t>& ids) const {
  // Symbols form a doubly linked list over the bytes; a merged-away symbol gets id -1.
  struct Symbol {
    int32_t id;
    int prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  bool last_was_unk = false;
  const auto push = [&](int32_t id) {
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, index + 1});
  };
  for (const char c : piece) {
    const auto b = static_cast<uint8_t>(c);
    if (byte_ids_[b] >= 0) {
      push(byte_ids_[b]);
      last_was_unk = false;
    } else if (fallback_ids_[b] >= 0) {
      push(fallback_ids_[b]);
      last_was_unk = false;
    } else if (unk_id_ >= 0) {
      if (!(fuse_unk_ && last_was_unk)) push(unk_id_);
      last_was_unk = true;
    }  // else: no token can spell this byte; the reference library drops it too
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // Candidate merges, lowest rank first and leftmost on ties. Entries go stale when a neighbour
  // merges; a popped entry is used only if its pair still merges into the same token.
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  const auto consider = [&](int left) {
    const int right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace fedsplit::tok
