// The BPE model of a byte-level tokenizer.json: a piece's bytes start as one symbol each (the
// vocabulary id of the byte's alphabet character) and the adjacent pair with the lowest merge rank
// is merged, leftmost first, until no pair has a merge. Results are cached per piece.
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fedsplit::tok {

/// What a tokenizer.json "model" of type BPE holds.
struct BpeSpec {
  std::unordered_map<std::string, int32_t> vocab;          ///< token (byte-level spelling) -> id
  std::vector<std::pair<std::string, std::string>> merges;  ///< in rank order
  std::string unk_token;       ///< empty: bytes with no token are dropped
  bool fuse_unk = false;       ///< consecutive unknowns become one unk
  bool byte_fallback = false;  ///< unknown bytes become <0xXX> tokens when the vocabulary has them
  bool ignore_merges = false;  ///< a piece that is itself in the vocabulary is emitted whole
};

class BpeModel {
 public:
  /// Throws FormatError naming `where` if a merge names a token missing from the vocabulary.
  BpeModel(BpeSpec spec, const std::string& where);

  /// Appends the ids of one pre-tokenized piece (raw bytes). Safe to call from many threads.
  void encode(std::string_view piece, std::vector<int32_t>& ids) const;

  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_piece(std::string_view piece, std::vector<int32_t>& ids) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_;           ///< id of each byte's alphabet character, -1 if none
  std::array<int32_t, 256> fallback_ids_;       ///< id of <0xXX>, -1 if none (or byte_fallback off)
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;

  // Pieces repeat a lot in text (words), so their ids are kept; bounded so memory stays small.
  static constexpr size_t kCacheEntries = 1 << 18;
  static constexpr size_t kCacheMaxPiece = 256;  ///< longer pieces are rare: not cached
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace fedsplit::tok
