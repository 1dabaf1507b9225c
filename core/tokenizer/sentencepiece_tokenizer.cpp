#include "core/tokenizer/sentencepiece_tokenizer.h"

#include <cctype>

#include "core/tokenizer/spm_model.h"
#include "core/tokenizer/spm_normalizer.h"
#include "core/tokenizer/spm_segmenter.h"
#include "core/tokenizer/unsupported.h"
#include "core/tokenizer/utf8.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit::tok {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::string path, SpmModel model)
      : path_(std::move(path)),
        model_(std::move(model)),
        segmenter_(model_, path_),
        normalizer_(model_.normalizer, model_.treat_whitespace_as_suffix, &segmenter_.user_defined(), path_) {
    if (model_.kind == SpmModel::Kind::word || model_.kind == SpmModel::Kind::character)
      throw UnsupportedTokenizer(path_ + ": SentencePiece word/char models are not supported (only unigram and BPE)");
    // Byte pieces spell <0xHH>; their values are read once here.
    byte_value_.assign(model_.pieces.size(), -1);
    for (size_t i = 0; i < model_.pieces.size(); ++i) {
      const std::string& t = model_.pieces[i].text;
      if (model_.pieces[i].type != SpmPiece::byte) continue;
      const bool well_formed = t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
                               std::isxdigit(static_cast<unsigned char>(t[3])) &&
                               std::isxdigit(static_cast<unsigned char>(t[4]));
      if (!well_formed) throw FormatError(path_ + " is not a usable SentencePiece model (byte piece '" + t + "')");
      byte_value_[i] = static_cast<int16_t>(std::stoi(t.substr(3, 2), nullptr, 16));
    }
    if (model_.has_denormalizer && !model_.denormalizer.precompiled_charsmap.empty())
      denormalizer_ = std::make_unique<SpmNormalizer>(model_.denormalizer, false, nullptr, path_);
    bos_ = control_id(model_.bos_piece);
    eos_ = control_id(model_.eos_piece);
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    const std::string normalized = normalizer_.normalize(text);
    std::vector<SpmSegmenter::Piece> pieces;
    segmenter_.segment(normalized, pieces);
    std::vector<int32_t> ids;
    ids.reserve(pieces.size());
    bool previous_unknown = false;
    for (const auto& piece : pieces) {
      const bool unknown = type(piece.id) == SpmPiece::unknown;
      if (unknown && model_.byte_fallback) {
        // An unknown character is spelled with its UTF-8 bytes.
        for (const char c : piece.text) ids.push_back(segmenter_.byte_ids()[static_cast<uint8_t>(c)]);
      } else if (!(unknown && previous_unknown)) {  // a run of unknowns is one <unk>
        ids.push_back(piece.id);
      }
      previous_unknown = unknown;
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    std::string bytes;  // a run of byte pieces, turned into text at its end
    const auto flush_bytes = [&] {
      for (size_t pos = 0; pos < bytes.size();) {
        const CodePoint cp = utf8_next(bytes, pos);
        if (cp.valid) text.append(bytes, pos, cp.length);
        else text += "\xEF\xBF\xBD";  // U+FFFD for each stray byte
        pos += cp.length;
      }
      bytes.clear();
    };
    // Leading ▁ (the dummy prefix) is dropped from the first piece that gives text.
    bool at_start = true;
    bool start_space_seen = false;
    for (const int32_t id : ids) {
      check_id(id);
      const SpmPiece& piece = model_.pieces[id];
      if (piece.type == SpmPiece::byte) {
        bytes += static_cast<char>(byte_value_[id]);
        continue;
      }
      flush_bytes();
      if (start_space_seen || !text.empty()) at_start = false;
      start_space_seen = false;
      if (piece.type == SpmPiece::control) continue;  // <s>, </s>: no text
      if (piece.type == SpmPiece::unknown) {
        text += model_.unk_surface;
        continue;
      }
      std::string_view surface = piece.text;
      const SpmNormalizerSpec& spec = model_.normalizer;
      if (at_start && (spec.add_dummy_prefix || spec.remove_extra_whitespaces)) {
        if (surface.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
          surface.remove_prefix(kSpaceSymbol.size());
          // Collapsing whitespace means text never starts with a space: keep stripping.
          start_space_seen = !spec.remove_extra_whitespaces;
        }
      }
      for (size_t pos = 0; pos < surface.size();) {
        if (surface.substr(pos, kSpaceSymbol.size()) == kSpaceSymbol) {
          text += ' ';
          pos += kSpaceSymbol.size();
        } else {
          text += surface[pos++];
        }
      }
    }
    flush_bytes();
    return denormalizer_ ? denormalizer_->normalize(text) : text;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(model_.pieces.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  const std::string& path() const override { return path_; }

 private:
  SpmPiece::Type type(int32_t id) const { return model_.pieces[id].type; }
  int32_t control_id(const std::string& piece) const {
    const int32_t id = segmenter_.piece_to_id(piece);
    return type(id) == SpmPiece::control ? id : -1;
  }
  void check_id(int32_t id) const {
    if (id < 0 || id >= vocab_size())
      throw DataError("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                      std::to_string(vocab_size()) + ") of tokenizer " + path_ +
                      ": the ids come from another tokenizer or model");
  }

  std::string path_;
  SpmModel model_;
  SpmSegmenter segmenter_;  // refers to model_
  SpmNormalizer normalizer_;
  std::unique_ptr<SpmNormalizer> denormalizer_;
  std::vector<int16_t> byte_value_;  // per piece: its byte for BYTE pieces, else -1
  int32_t bos_ = -1, eos_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path, parse_spm_model(read_file(path), path));
}

}  // namespace fedsplit::tok
