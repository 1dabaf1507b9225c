#include "infer/pipeline_shards.h"

#include <filesystem>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {

void check_rank_count(const GgufManifest& manifest, const std::string& manifest_path, int ranks) {
  const auto stages = static_cast<int64_t>(manifest.stages.size());
  if (ranks != 1 && ranks != stages)
    throw ConfigError(manifest_path + " has " + std::to_string(stages) + " stages but " + std::to_string(ranks) +
                      " ranks were started: run mpirun -np " + std::to_string(stages) +
                      " (one rank per stage), or one process that runs every stage");
}

std::unique_ptr<GgufStage> open_manifest_stage(const GgufManifest& manifest, const std::string& manifest_path,
                                               int64_t stage, StageOptions options, bool verify_hash) {
  if (stage < 0 || stage >= static_cast<int64_t>(manifest.stages.size()))
    throw ConfigError(manifest_path + " has no stage " + std::to_string(stage));
  const ManifestStage& entry = manifest.stages[static_cast<size_t>(stage)];
  if (entry.stage != stage)
    throw FormatError(manifest_path + ": entry " + std::to_string(stage) + " of \"stages\" is labelled stage " +
                      std::to_string(entry.stage) + ": the manifest is damaged; export again");
  const std::string path = (std::filesystem::path(manifest_path).parent_path() / entry.file).string();
  if (!path_exists(path))
    throw IoError(path + " (stage " + std::to_string(stage) + " of " + manifest_path +
                  ") is missing: copy every stage file of the export beside its manifest");
  const auto size = static_cast<uint64_t>(std::filesystem::file_size(path));
  if (size != entry.bytes)
    throw DataError(path + " has " + std::to_string(size) + " bytes but " + manifest_path + " records " +
                    std::to_string(entry.bytes) + ": the file is truncated or from another export; copy it again");
  if (verify_hash && blake2b_file(path) != entry.blake2b)
    throw DataError(path + " does not match the BLAKE2b that " + manifest_path +
                    " records: the file is damaged or from another export; copy it again");
  if (options.vocab_size == 0 && manifest.config.contains("vocab_size"))
    options.vocab_size = manifest.config.at("vocab_size").get<int64_t>();
  auto loaded = std::make_unique<GgufStage>(path, options);
  const StageIdentity& id = loaded->identity();
  if (id.export_id != manifest.export_id)
    throw DataError(path + " belongs to export " + (id.export_id.empty() ? "(none)" : id.export_id) + ", not " +
                    manifest.export_id + " of " + manifest_path + ": stage files from different exports are mixed");
  if (id.stage != stage || id.stage_count != static_cast<int64_t>(manifest.stages.size()) ||
      id.layer_begin != entry.layer_begin || id.layer_end != entry.layer_end)
    throw DataError(path + " says it is stage " + std::to_string(id.stage) + " of " + std::to_string(id.stage_count) +
                    " with blocks [" + std::to_string(id.layer_begin) + ", " + std::to_string(id.layer_end) + "), but " +
                    manifest_path + " lists stage " + std::to_string(stage) + " of " +
                    std::to_string(manifest.stages.size()) + " with blocks [" + std::to_string(entry.layer_begin) +
                    ", " + std::to_string(entry.layer_end) + "): export again");
  return loaded;
}

bool is_manifest_path(const std::string& path) {
  return has_suffix(path, ".json");
}

}  // namespace fedsplit
