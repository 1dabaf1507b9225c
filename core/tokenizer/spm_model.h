// The contents of a SentencePiece .model file: a serialized protobuf ModelProto
// (sentencepiece_model.proto), read here from the wire format without libprotobuf. Only the fields
// that encoding and decoding depend on are kept; unknown fields are skipped.
//
//   ModelProto      1: pieces (repeated SentencePiece) 2: trainer_spec 3: normalizer_spec
//                   5: denormalizer_spec
//   SentencePiece   1: piece (string) 2: score (float) 3: type (NORMAL=1 UNKNOWN=2 CONTROL=3
//                   USER_DEFINED=4 UNUSED=5 BYTE=6; default NORMAL)
//   TrainerSpec     3: model_type (UNIGRAM=1 BPE=2 WORD=3 CHAR=4; default UNIGRAM)
//                   24: treat_whitespace_as_suffix 35: byte_fallback 44: unk_surface
//                   45..47: unk/bos/eos piece
//   NormalizerSpec  1: name 2: precompiled_charsmap 3: add_dummy_prefix (default true)
//                   4: remove_extra_whitespaces (default true) 5: escape_whitespaces (default true)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fedsplit::tok {

struct SpmPiece {
  enum Type : int { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };
  std::string text;
  float score = 0.0f;
  Type type = normal;
};

struct SpmNormalizerSpec {
  std::string name;
  std::string precompiled_charsmap;     ///< <u32 trie bytes><darts-clone double array><NUL-separated outputs>
  bool add_dummy_prefix = true;         ///< a leading ▁ so that "world" and " world" encode alike
  bool remove_extra_whitespaces = true; ///< drop leading/trailing spaces, collapse runs
  bool escape_whitespaces = true;       ///< ' ' becomes ▁ (U+2581)
};

struct SpmModel {
  enum class Kind { unigram = 1, bpe = 2, word = 3, character = 4 };
  std::vector<SpmPiece> pieces;
  Kind kind = Kind::unigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string unk_surface = " \xE2\x81\x87 ";  ///< what <unk> decodes to (" ⁇ ")
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>";
  SpmNormalizerSpec normalizer;
  bool has_denormalizer = false;
  SpmNormalizerSpec denormalizer;
};

/// Parses a serialized ModelProto. Throws FormatError naming `where` if the bytes are not one
/// (bad wire format, no pieces, an empty piece, no or two <unk>).
SpmModel parse_spm_model(const std::string& bytes, const std::string& where);

}  // namespace fedsplit::tok
