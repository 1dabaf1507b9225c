// The error for a well-formed tokenizer file of a kind this project does not read (a WordPiece
// model, a Metaspace pre-tokenizer, ...), as opposed to a corrupt one. load_tokenizer uses the
// difference to fall back to a SentencePiece model that sits in the same directory.
#pragma once
#include "core/util/error.h"

namespace fedsplit::tok {

struct UnsupportedTokenizer : FormatError {
  using FormatError::FormatError;
};

}  // namespace fedsplit::tok
