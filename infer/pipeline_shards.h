// Opening one stage of a pipeline export: the manifest says which file, which blocks and which
// export every stage belongs to, and each check here turns a wrong shard set into one clear line
// before any rank waits on another.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "compress/gguf_manifest.h"
#include "infer/gguf_stage.h"

namespace fedsplit {

/// ConfigError unless `ranks` processes can run `manifest` (one rank per stage), naming the
/// manifest and the mpirun command that fits.
void check_rank_count(const GgufManifest& manifest, const std::string& manifest_path, int ranks);

/// Loads stage `stage` of the export described by `manifest_path`: its file beside the manifest
/// must exist and have the recorded size and BLAKE2b (skipped when !verify_hash), and the file's
/// own fedsplit.* metadata must name the same export, stage and blocks. DataError / FormatError
/// naming the file and what to do otherwise.
std::unique_ptr<GgufStage> open_manifest_stage(const GgufManifest& manifest, const std::string& manifest_path,
                                               int64_t stage, StageOptions options, bool verify_hash = true);

/// Whether `path` names a manifest (a .json file) rather than a model file.
bool is_manifest_path(const std::string& path);

}  // namespace fedsplit
