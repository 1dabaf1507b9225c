// Opening an export's pipeline across the ranks of an mpirun job: rank s loads stage s only (its
// memory is about its shard), every rank checks its shard against the manifest, and the ranks agree
// before anything runs, so that one bad shard ends every rank with the same one-line error instead
// of leaving the others waiting. A world of one runs every stage in its own process.
#pragma once
#include <memory>
#include <string>

#include "core/comm/world.h"
#include "infer/pipeline.h"

namespace fedsplit {

struct PipelineOptions {
  StageOptions stage;         ///< threads, context, slots (sequences in flight); device is per rank
  std::string device = "cpu"; ///< cpu, or cuda: rank r uses CUDA device r modulo the devices it sees
  bool verify_hash = true;    ///< check each shard's BLAKE2b against the manifest
};

/// Opens the pipeline of `manifest_path` in `world` (its size 1 or the number of stages). On rank
/// 0 returns the pipeline to drive (stop() it when done); on the other ranks serves its stage until
/// rank 0 stops, then returns nullptr. Errors on any rank reach every rank as a one-line error
/// naming the rank.
std::unique_ptr<Pipeline> open_pipeline(const std::string& manifest_path, const PipelineOptions& options,
                                         const std::shared_ptr<World>& world);

}  // namespace fedsplit
