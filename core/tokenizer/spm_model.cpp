#include "core/tokenizer/spm_model.h"

#include <cstring>
#include <string_view>

#include "core/util/error.h"

namespace fedsplit::tok {

namespace {

// Malformed wire format; parse_spm_model turns it into a FormatError naming the file.
struct WireError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Reads protobuf wire-format fields from a byte range.
class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) throw WireError("truncated varint");
      const auto byte = static_cast<uint8_t>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw WireError("varint longer than 10 bytes");
  }
  // Field number and wire type of the next field.
  std::pair<uint32_t, int> tag() {
    const uint64_t key = varint();
    const auto field = static_cast<uint32_t>(key >> 3);
    if (field == 0) throw WireError("field number 0");
    return {field, static_cast<int>(key & 7)};
  }
  std::string_view bytes() {
    const uint64_t size = varint();
    if (size > data_.size() - pos_) throw WireError("length-delimited field past the end");
    const std::string_view out = data_.substr(pos_, size);
    pos_ += size;
    return out;
  }
  uint32_t fixed32() {
    if (data_.size() - pos_ < 4) throw WireError("truncated fixed32");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += 4;
    return v;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); return;
      case 1:
        if (data_.size() - pos_ < 8) throw WireError("truncated fixed64");
        pos_ += 8;
        return;
      case 2: bytes(); return;
      case 5: fixed32(); return;
      default: throw WireError("unsupported wire type " + std::to_string(wire_type));
    }
  }
  void expect(int wire_type, int actual) {
    if (wire_type != actual)
      throw WireError("wire type " + std::to_string(actual) + " where " + std::to_string(wire_type) + " is due");
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

SpmPiece parse_piece(std::string_view data) {
  SpmPiece piece;
  WireReader r(data);
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 1) { r.expect(2, wire); piece.text = std::string(r.bytes()); }
    else if (field == 2) {
      r.expect(5, wire);
      const uint32_t bits = r.fixed32();
      std::memcpy(&piece.score, &bits, sizeof(bits));
    } else if (field == 3) {
      r.expect(0, wire);
      const uint64_t type = r.varint();
      if (type < 1 || type > 6) throw WireError("piece type " + std::to_string(type));
      piece.type = static_cast<SpmPiece::Type>(type);
    } else {
      r.skip(wire);
    }
  }
  return piece;
}

void parse_trainer_spec(std::string_view data, SpmModel& model) {
  WireReader r(data);
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 3) {
      r.expect(0, wire);
      const uint64_t kind = r.varint();
      if (kind < 1 || kind > 4) throw WireError("model_type " + std::to_string(kind));
      model.kind = static_cast<SpmModel::Kind>(kind);
    } else if (field == 24) { r.expect(0, wire); model.treat_whitespace_as_suffix = r.varint() != 0; }
    else if (field == 35) { r.expect(0, wire); model.byte_fallback = r.varint() != 0; }
    else if (field == 44) { r.expect(2, wire); model.unk_surface = std::string(r.bytes()); }
    else if (field == 45) { r.expect(2, wire); model.unk_piece = std::string(r.bytes()); }
    else if (field == 46) { r.expect(2, wire); model.bos_piece = std::string(r.bytes()); }
    else if (field == 47) { r.expect(2, wire); model.eos_piece = std::string(r.bytes()); }
    else r.skip(wire);
  }
}

SpmNormalizerSpec parse_normalizer_spec(std::string_view data) {
  SpmNormalizerSpec spec;
  WireReader r(data);
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 1) { r.expect(2, wire); spec.name = std::string(r.bytes()); }
    else if (field == 2) { r.expect(2, wire); spec.precompiled_charsmap = std::string(r.bytes()); }
    else if (field == 3) { r.expect(0, wire); spec.add_dummy_prefix = r.varint() != 0; }
    else if (field == 4) { r.expect(0, wire); spec.remove_extra_whitespaces = r.varint() != 0; }
    else if (field == 5) { r.expect(0, wire); spec.escape_whitespaces = r.varint() != 0; }
    else r.skip(wire);
  }
  return spec;
}

}  // namespace

SpmModel parse_spm_model(const std::string& bytes, const std::string& where) {
  const auto fail = [&](const std::string& why) -> FormatError {
    return FormatError(where + " is not a SentencePiece model (" + why +
                       "): pass a .model written by SentencePiece, or a HF tokenizer.json");
  };
  SpmModel model;
  try {
    WireReader r(bytes);
    while (!r.done()) {
      const auto [field, wire] = r.tag();
      if (field == 1) { r.expect(2, wire); model.pieces.push_back(parse_piece(r.bytes())); }
      else if (field == 2) { r.expect(2, wire); parse_trainer_spec(r.bytes(), model); }
      else if (field == 3) { r.expect(2, wire); model.normalizer = parse_normalizer_spec(r.bytes()); }
      else if (field == 5) {
        r.expect(2, wire);
        model.denormalizer = parse_normalizer_spec(r.bytes());
        model.has_denormalizer = true;
      } else {
        r.skip(wire);
      }
    }
  } catch (const WireError& e) {
    throw fail(std::string("bad protobuf: ") + e.what());
  }
  if (model.pieces.empty()) throw fail("no pieces");
  int unknowns = 0;
  for (const auto& p : model.pieces) {
    if (p.text.empty()) throw fail("an empty piece");
    if (p.type == SpmPiece::unknown) ++unknowns;
  }
  if (unknowns != 1) throw fail(std::to_string(unknowns) + " <unk> pieces instead of one");
  return model;
}

}  // namespace fedsplit::tok
