// SentencePiece models (.model files, as written by spm_train or train_sentencepiece), read and run
// natively: libsentencepiece carries its own protobuf, which crashes any process that also loads
// LibTorch's. Encoding follows libsentencepiece step for step (normalize, segment, byte fallback
// for unknown characters, runs of <unk> fused) so ids match it exactly; BPE and unigram models
// are supported.
#pragma once
#include <memory>
#include <string>

#include "core/tokenizer/tokenizer.h"

namespace fedsplit::tok {

/// Throws IoError (unreadable) or FormatError (not a SentencePiece model, or a word/char model),
/// naming `path`.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path);

}  // namespace fedsplit::tok
