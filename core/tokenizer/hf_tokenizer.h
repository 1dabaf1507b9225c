// HF byte-level BPE read from a tokenizer.json (as the `tokenizers` library saves it): the GPT-2,
// Llama-3 and Qwen2 families. Encoding follows the library: added tokens are cut out of the raw
// text, the rest is normalized, pre-tokenized into pieces and each piece is BPE-encoded; the
// post_processor is ignored (callers add BOS/EOS). Decoding maps tokens back to bytes and leaves
// out special tokens (as the library's decode does by default); bytes that are not valid UTF-8
// are returned as they are.
//
// BOS/EOS come from tokenizer_config.json next to the file (bos_token / eos_token) when it exists,
// else from well-known token names: BOS <|begin_of_text|>, <s>, <|startoftext|>, <bos>;
// EOS <|end_of_text|>, </s>, <|endoftext|>, <eos>.
#pragma once
#include <memory>
#include <string>

#include "core/tokenizer/tokenizer.h"

namespace fedsplit::tok {

/// Throws IoError (unreadable), FormatError (not JSON, inconsistent) or UnsupportedTokenizer
/// (a kind other than byte-level BPE), each naming `path`.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path);

}  // namespace fedsplit::tok
