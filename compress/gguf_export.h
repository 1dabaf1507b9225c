// A Decoder (+ tokenizer) exported to GGUF for llama.cpp and for fedsplit's inference engine: one
// model.gguf, or one shard per pipeline stage, beside a manifest.json (compress/gguf_manifest.h).
//
// Tensor types by --quant (names and layout: compress/gguf_llama.h):
//   f32:  every tensor F32.
//   f16:  2-D weights F16; norms and biases (1-D) F32.
//   q8_0: 2-D weights Q8_0 (token_embd and output too, as llama.cpp's converter does); 1-D F32.
//   q4_0: 2-D weights Q4_0, except output.weight, which is Q8_0 (llama.cpp's quantizer keeps the head
//         at higher precision; Q6_K, its choice, has no codec here); 1-D F32.
// A 2-D weight whose rows are not a whole number of 32-value blocks falls back to F16.
//
// Quantization record (compress/quant_record.h): with q8_0/q4_0, every weight the record lists is
// written with exactly its recorded codes when the record's group_size is 32 and its bits match
// (8 -> q8_0, 4 -> q4_0): block d = fp16(scale), Q8_0 qs = code, Q4_0 nibble = code + 8 (RoPE
// permutation applied to the rows of codes and scales alike). A record of other bits or group size is
// refused with the --quant to use; weights it does not list get ggml's reference RTN. With f32/f16
// the record is not needed (the weights already hold the dequantized values).
//
// Shards: each carries the full model metadata, the tokenizer and fedsplit.export_id (string),
// fedsplit.stage, fedsplit.stage_count, fedsplit.layer_begin, fedsplit.layer_end (u32), block tensors
// under their global blk.N names; stage 0 holds token_embd.weight, the last output_norm.weight and
// output.weight. A tied head in a multi-stage export is written to the last stage as output.weight
// (with fedsplit.tie_embeddings = true, so that import ties it again).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "compress/gguf.h"
#include "compress/gguf_manifest.h"
#include "compress/quant_record.h"
#include "compress/stage_plan.h"
#include "core/model/decoder.h"

namespace fedsplit {

enum class GgufQuant { f32, f16, q8_0, q4_0 };

/// "f32", "f16", "q8_0", "q4_0".
const char* to_string(GgufQuant quant);

/// Parses the names above; ConfigError naming `where` (e.g. "--quant") otherwise.
GgufQuant parse_gguf_quant(const std::string& name, const std::string& where);

struct GgufExportOptions {
  /// Tensor encoding (see the table above).
  GgufQuant quant = GgufQuant::f16;
  /// general.name.
  std::string name = "fedsplit";
  /// Tokenizer file or directory to embed ("" = none: llama.cpp refuses such a file, "key not found in
  /// model: tokenizer.ggml.model"; fedsplit's import and engine do not need it).
  std::string tokenizer;
  /// Pipeline stages; empty = one stage holding every layer.
  std::vector<StageRange> stages;
  /// The quantization record of the model, if it has one.
  std::optional<QuantRecord> record;
  /// Where the record came from (for messages).
  std::string record_source;
};

/// The ggml type a tensor is written as (see the table above) when no record applies.
GgmlType gguf_type_for(const std::string& gguf_name, int64_t dims, int64_t cols, GgufQuant quant);

/// The GGUF image of stage `stage` of `options.stages` (or the whole model when there are none);
/// tensors are encoded when the file is written. `export_id` goes into fedsplit.export_id.
/// ConfigError for a model llama.cpp cannot run or a record that does not fit the quant.
GgufFile build_gguf(const Decoder& model, const GgufExportOptions& options, size_t stage, const std::string& export_id);

/// Writes the export into `out_dir` (created): model.gguf or stage-<i>.gguf, then manifest.json,
/// each atomically. Returns the manifest written.
GgufManifest export_gguf(const Decoder& model, const GgufExportOptions& options, const std::string& out_dir);

/// Encodes `codes` (int8 [rows, cols], on a grid with `scales` [rows, cols / 32]) as Q8_0 or Q4_0
/// blocks: d = fp16(scale); Q8_0 qs = code; Q4_0 nibble = code + 8. DataError for codes outside the
/// type's range.
std::vector<uint8_t> encode_recorded_blocks(const at::Tensor& codes, const at::Tensor& scales, GgmlType type,
                                            const std::string& name);

}  // namespace fedsplit
