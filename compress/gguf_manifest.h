// manifest.json of a GGUF export directory: what `fedsplit export gguf` wrote, for the inference
// engine's shard loader and for import.
//
//   {
//     "format": "fedsplit-gguf-export", "version": 1,
//     "export_id": "<32 hex digits, random, also in every shard as fedsplit.export_id>",
//     "architecture": "llama" | "qwen2",
//     "quant": "f32" | "f16" | "q8_0" | "q4_0",
//     "quant_record": null | {"method": "gptq", "bits": 4, "group_size": 32},  // codes written as recorded
//     "tokenizer": true | false,          // whether the shards carry tokenizer.ggml.*
//     "config": { ...the model's HF config.json... },
//     "stages": [ {"stage": 0, "file": "model.gguf", "layers": [0, 2], "device": "",
//                  "bytes": 123456, "blake2b": "<64 hex digits: BLAKE2b-256 of the file>"}, ... ]
//   }
// "layers" is [begin, end), end exclusive. A one-stage export is model.gguf; N stages are
// stage-0.gguf .. stage-<N-1>.gguf. Stage 0 holds token_embd, the last stage output_norm and output.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace fedsplit {

struct ManifestStage {
  int64_t stage = 0;         ///< index, 0 first
  std::string file;          ///< file name inside the export directory
  int64_t layer_begin = 0;   ///< first layer it holds
  int64_t layer_end = 0;     ///< one past its last layer
  std::string device;        ///< the plan's device for it ("" = unspecified)
  uint64_t bytes = 0;        ///< file size
  std::string blake2b;       ///< BLAKE2b-256 of the file, hex
};

struct GgufManifest {
  std::string export_id;      ///< random id shared by the shards of one export
  std::string architecture;   ///< general.architecture
  std::string quant;          ///< the --quant it was written with
  nlohmann::json quant_record;  ///< null, or method/bits/group_size of the record whose codes were written
  bool tokenizer = false;     ///< the shards carry tokenizer metadata
  nlohmann::json config;      ///< HF config.json of the model
  std::vector<ManifestStage> stages;  ///< in pipeline order
};

constexpr const char* kManifestFormat = "fedsplit-gguf-export";

/// A fresh export id: 16 random bytes (libsodium), hex.
std::string new_export_id();

/// BLAKE2b-256 of a file's bytes, hex (libsodium's crypto_generichash); IoError if unreadable.
std::string blake2b_file(const std::string& path);

/// Writes `manifest` to `path` atomically.
void save_manifest(const std::string& path, const GgufManifest& manifest);

/// Reads a manifest; FormatError naming the file and key for anything malformed.
GgufManifest load_manifest(const std::string& path);

}  // namespace fedsplit
