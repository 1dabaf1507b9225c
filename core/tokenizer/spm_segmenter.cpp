#include "core/tokenizer/spm_segmenter.h"

#include <algorithm>
#include <cfloat>
#include <cstdio>
#include <functional>
#include <queue>

#include "core/util/error.h"

namespace fedsplit::tok {

SpmSegmenter::SpmSegmenter(const SpmModel& model, const std::string& where) : model_(model) {
  min_score_ = FLT_MAX;
  max_score_ = FLT_MIN;  // as the reference library: a tiny positive number, not -FLT_MAX
  for (size_t i = 0; i < model.pieces.size(); ++i) {
    const SpmPiece& p = model.pieces[i];
    const auto id = static_cast<int32_t>(i);
    const bool normal = p.type == SpmPiece::normal || p.type == SpmPiece::user_defined || p.type == SpmPiece::unused;
    if (!(normal ? normal_ : reserved_).emplace(p.text, id).second)
      throw FormatError(where + " is not a usable SentencePiece model (piece '" + p.text +
                        "' is defined twice): pass a .model written by SentencePiece");
    if (normal) lattice_.insert(p.text, id);
    if (p.type == SpmPiece::user_defined) user_defined_.insert(p.text, id);
    if (p.type == SpmPiece::unknown) unk_id_ = id;
    if (p.type == SpmPiece::normal) {
      min_score_ = std::min(min_score_, p.score);
      max_score_ = std::max(max_score_, p.score);
    }
  }
  byte_ids_.fill(-1);
  if (model.byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      const auto it = reserved_.find(name);
      if (it == reserved_.end() || type(it->second) != SpmPiece::byte)
        throw FormatError(where + " is not a usable SentencePiece model (byte_fallback is on but piece " + name +
                          " is missing): pass a .model written by SentencePiece");
      byte_ids_[b] = it->second;
    }
  }
}

int32_t SpmSegmenter::piece_to_id(std::string_view text) const {
  if (const auto it = reserved_.find(text); it != reserved_.end()) return it->second;
  if (const auto it = normal_.find(text); it != normal_.end()) return it->second;
  return unk_id_;
}

void SpmSegmenter::segment(std::string_view normalized, std::vector<Piece>& out) const {
  if (normalized.empty()) return;
  if (model_.kind == SpmModel::Kind::bpe) segment_bpe(normalized, out);
  else segment_unigram(normalized, out);
}

void SpmSegmenter::segment_bpe(std::string_view text, std::vector<Piece>& out) const {
  struct Symbol {
    int prev, next;
    bool frozen;  // a user-defined symbol: never merged
    std::string_view piece;
  };
  struct Pair {
    int left, right;
    float score;
    size_t size;
  };
  // Highest score first; on equal scores the leftmost pair.
  const auto later = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(later)> agenda(later);
  std::vector<Symbol> symbols;
  // Merged UNUSED pieces are split back into what they were merged from.
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> unmerge;

  const auto consider = [&](int left, int right) {
    if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
    const std::string_view merged(symbols[left].piece.data(), symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = normal_.find(merged);
    if (it == normal_.end()) return;
    agenda.push({left, right, model_.pieces[it->second].score, merged.size()});
    if (type(it->second) == SpmPiece::unused) unmerge[merged] = {symbols[left].piece, symbols[right].piece};
  };

  for (size_t pos = 0; pos < text.size();) {
    size_t length = user_defined_.longest(text.substr(pos));
    const bool frozen = length > 0;
    if (!frozen) length = std::min(spm_char_length(text[pos]), text.size() - pos);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({index - 1, -1, frozen, text.substr(pos, length)});
    if (index > 0) symbols[index - 1].next = index;
    pos += length;
  }
  for (size_t i = 1; i < symbols.size(); ++i) consider(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Stale: one side was merged away or changed since the pair was queued.
    if (left.piece.empty() || right.piece.empty() || left.piece.size() + right.piece.size() != top.size) continue;
    left.piece = std::string_view(left.piece.data(), top.size);
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = std::string_view();
    consider(left.prev, top.left);
    consider(top.left, left.next);
  }

  const std::function<void(std::string_view)> emit = [&](std::string_view piece) {
    const int32_t id = piece_to_id(piece);
    const auto it = type(id) == SpmPiece::unused ? unmerge.find(piece) : unmerge.end();
    if (it == unmerge.end()) {
      out.push_back({piece, id});
      return;
    }
    emit(it->second.first);
    emit(it->second.second);
  };
  for (int i = 0; i >= 0; i = symbols[i].next) emit(symbols[i].piece);
}

void SpmSegmenter::segment_unigram(std::string_view text, std::vector<Piece>& out) const {
  // Best path ending at each byte position. The arithmetic mirrors the reference library's types
  // (float scores, double candidates) so that near-ties resolve the same way.
  struct Best {
    int32_t id = -1;
    float score = 0.0f;
    int starts_at = -1;
  };
  const auto size = static_cast<int>(text.size());
  constexpr float kUnkPenalty = 10.0f;
  const float unk_score = min_score_ - kUnkPenalty;
  std::vector<Best> best(size + 1);
  for (int start = 0; start < size;) {
    const float till_here = best[start].score;
    const auto char_length = static_cast<int>(std::min<size_t>(spm_char_length(text[start]), size - start));
    bool covered = false;  // some piece spans exactly this character
    lattice_.prefixes(text.substr(start), [&](size_t length, int32_t id) {
      if (type(id) == SpmPiece::unused) return;
      Best& target = best[start + length];
      // User-defined symbols get a bonus so they are always chosen.
      const double score = type(id) == SpmPiece::user_defined ? static_cast<float>(length) * max_score_ - 0.1
                                                               : model_.pieces[id].score;
      const double candidate = score + till_here;
      if (target.starts_at == -1 || candidate > target.score) {
        target = {id, static_cast<float>(candidate), start};
      }
      if (static_cast<int>(length) == char_length) covered = true;
    });
    if (!covered) {
      Best& target = best[start + char_length];
      const float candidate = unk_score + till_here;
      if (target.starts_at == -1 || candidate > target.score) target = {unk_id_, candidate, start};
    }
    start += char_length;
  }
  const size_t first = out.size();
  for (int end = size; end > 0; end = best[end].starts_at)
    out.push_back({text.substr(best[end].starts_at, end - best[end].starts_at), best[end].id});
  std::reverse(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
}

}  // namespace fedsplit::tok
