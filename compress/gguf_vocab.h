// Tokenizers in GGUF metadata, as llama.cpp's converter writes them (tokenizer.ggml.*).
//
// SentencePiece (.model): model "llama"; tokens (the pieces), scores (f32), token_type (i32: normal 1,
// unknown 2, control 3, user-defined 4, unused 5, byte 6, SentencePiece's own codes); unknown, bos
// and eos token ids (u32) from the model's <unk>/<s>/</s> pieces; add_bos_token true, add_eos_token false.
// HF byte-level BPE (tokenizer.json): model "gpt2"; tokens in id order, token_type (added special
// tokens control 3, other added tokens user-defined 4, the rest normal 1), merges ("a b" strings, in
// rank order); bos/eos ids as fedsplit's tokenizer finds them (tokenizer_config.json or well-known
// names); add_bos_token false. tokenizer.ggml.pre is left out (llama.cpp then uses its default split).
// A tokenizer with fewer ids than the model's embedding rows is padded with "[PAD<id>]" tokens of type
// unused (5), as the converter pads; one with more ids than rows is refused.
#pragma once
#include <cstdint>
#include <string>

#include "compress/gguf.h"

namespace fedsplit {

/// Sets tokenizer.ggml.* in `meta` for the tokenizer at `path` (a .model, a tokenizer.json, or a
/// directory holding one, as load_tokenizer takes). IoError/FormatError from reading it; ConfigError
/// when it has more ids than `model_vocab_size`.
void set_tokenizer_metadata(GgufMetadata& meta, const std::string& path, int64_t model_vocab_size);

/// The tokenizer file a model at `model_path` comes with: tokenizer.json / tokenizer.model / a single
/// *.model in its directory (a checkpoint.h5's folder for a file); "" when there is none.
std::string find_model_tokenizer(const std::string& model_path);

}  // namespace fedsplit
