// GGUF back into a Decoder: a llama/qwen2 GGUF file (ours or llama.cpp's converter's, types F32, F16,
// Q8_0, Q4_0), or an export's manifest.json with its stage shards. Weights are dequantized to fp32
// and q/k rows un-permuted (compress/gguf_llama.h); the config comes from the metadata. The tokenizer
// is not rebuilt (the GGUF vocabulary is not turned back into a tokenizer file).
#pragma once
#include <string>
#include <vector>

#include "compress/gguf.h"
#include "core/model/decoder.h"

namespace fedsplit {

/// True when `path` names a GGUF model: a *.gguf file, a manifest.json, or a directory holding a
/// manifest.json of an export.
bool is_gguf_model_path(const std::string& path);

/// An fp32 Decoder (eval mode) from the tensors of `shards` (one file, or the shards of one export
/// in any order). FormatError naming `where` and the tensor for a missing, duplicate, unexpected or
/// misshapen tensor; ConfigError for an architecture fedsplit does not run.
Decoder decoder_from_gguf(const std::vector<GgufFile>& shards, const std::string& where);

/// Loads a *.gguf file, a manifest.json or an export directory. Each shard of a manifest is checked
/// against its recorded size, BLAKE2b and export id (FormatError naming the file otherwise); a single
/// shard of a multi-stage export is refused (pass its manifest.json).
Decoder import_gguf(const std::string& path);

}  // namespace fedsplit
