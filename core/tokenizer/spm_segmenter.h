// SentencePiece segmentation of normalized text, as libsentencepiece does it:
// - BPE: start from characters (user-defined symbols stay whole), repeatedly merge the adjacent
//   pair whose concatenation is the highest-scoring piece (leftmost on ties); UNUSED pieces that
//   result are split back into the pieces they were merged from.
// - Unigram: Viterbi over every piece that matches at each character, scores summed; a character
//   no piece covers becomes <unk> with score min_score - 10; user-defined symbols get a bonus.
// Pieces here are views into the normalized text; ids of pieces not in the vocabulary are <unk>.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/tokenizer/piece_trie.h"
#include "core/tokenizer/spm_model.h"

namespace fedsplit::tok {

class SpmSegmenter {
 public:
  /// Keeps a reference to `model`, which must outlive it and stay in place. Throws FormatError
  /// naming `where` for an inconsistent vocabulary (duplicates, missing byte pieces).
  SpmSegmenter(const SpmModel& model, const std::string& where);
  SpmSegmenter(const SpmSegmenter&) = delete;
  SpmSegmenter& operator=(const SpmSegmenter&) = delete;

  struct Piece {
    std::string_view text;
    int32_t id;
  };
  /// Appends the pieces of `normalized`, in order.
  void segment(std::string_view normalized, std::vector<Piece>& out) const;

  /// Id of a piece text: control/unknown/byte pieces first, then the others; <unk> if none.
  int32_t piece_to_id(std::string_view text) const;
  int32_t unk_id() const { return unk_id_; }
  /// Id of the <0xXX> piece of each byte (-1 when the model has no byte fallback).
  const std::array<int32_t, 256>& byte_ids() const { return byte_ids_; }
  /// User-defined symbols: never split or normalized.
  const PieceTrie& user_defined() const { return user_defined_; }

 private:
  void segment_bpe(std::string_view normalized, std::vector<Piece>& out) const;
  void segment_unigram(std::string_view normalized, std::vector<Piece>& out) const;
  SpmPiece::Type type(int32_t id) const { return model_.pieces[id].type; }

  const SpmModel& model_;
  std::unordered_map<std::string_view, int32_t> normal_;    // NORMAL, USER_DEFINED, UNUSED
  std::unordered_map<std::string_view, int32_t> reserved_;  // UNKNOWN, CONTROL, BYTE
  PieceTrie user_defined_;
  PieceTrie lattice_;  // the pieces in normal_, for unigram
  std::array<int32_t, 256> byte_ids_;
  int32_t unk_id_ = -1;
  float min_score_, max_score_;  // over NORMAL pieces
};

/// Bytes of the UTF-8 character a lead byte starts, as SentencePiece counts them (no validation).
inline size_t spm_char_length(char lead) {
  const auto b = static_cast<uint8_t>(lead);
  return b < 0xC0 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

}  // namespace fedsplit::tok
