#include "infer/pipeline_session.h"

#include <torch/cuda.h>

#include <iostream>
#include <sstream>

#include "compress/gguf_manifest.h"
#include "core/util/error.h"
#include "core/util/memory.h"
#include "infer/pipeline_shards.h"

namespace fedsplit {
namespace {

torch::Device device_for_rank(const std::string& device, int rank) {
  if (device == "cpu") return torch::kCPU;
  if (device != "cuda") throw ConfigError("--device " + device + " is unknown: use cpu or cuda");
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (count == 0) throw ConfigError("--device cuda, but this machine has no CUDA device: use --device cpu");
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(rank % count));
}

int64_t stage_weight_bytes(const GgufStage& stage) {
  int64_t bytes = stage.embed_weight_bytes() + stage.head_weight_bytes();
  for (int64_t l = stage.layer_begin(); l < stage.layer_end(); ++l) bytes += stage.layer_weight_bytes(l);
  return bytes;
}

std::string describe(const GgufStage& stage, int rank) {
  std::ostringstream line;
  line << "rank " << rank << ": stage " << stage.identity().stage << " of " << stage.identity().stage_count
       << ", blocks [" << stage.layer_begin() << ", " << stage.layer_end() << "), weights "
       << stage_weight_bytes(stage) / (1 << 20) << " MB, peak resident "
       << peak_host_memory_bytes() / (1 << 20) << " MB";
  return line.str();
}

// Every rank's outcome ("" = ready) and export id reach rank 0, which answers all with the first
// problem ("" = go).
std::string agree(World& world, const std::string& status, const std::string& export_id) {
  std::string verdict;
  if (world.rank() == 0) {
    verdict = status.empty() ? "" : "rank 0: " + status;
    for (int r = 1; r < world.size(); ++r) {
      const std::string theirs = world.recv_bytes(r);
      const std::string their_id = world.recv_bytes(r);
      if (!verdict.empty()) continue;
      if (!theirs.empty()) verdict = "rank " + std::to_string(r) + ": " + theirs;
      else if (their_id != export_id)
        verdict = "rank " + std::to_string(r) + " read a manifest of export " + their_id + ", rank 0 one of export " +
                  export_id + ": give every rank the same export";
    }
  } else {
    world.send_bytes(status, 0);
    world.send_bytes(export_id, 0);
  }
  world.broadcast_bytes(verdict, 0);
  return verdict;
}

}  // namespace

std::unique_ptr<Pipeline> open_pipeline(const std::string& manifest_path, const PipelineOptions& options,
                                         const std::shared_ptr<World>& world) {
  const GgufManifest manifest = load_manifest(manifest_path);
  check_rank_count(manifest, manifest_path, world->size());
  StageOptions stage_options = options.stage;
  stage_options.device = device_for_rank(options.device, world->rank());
  if (world->size() == 1) {
    std::vector<std::unique_ptr<GgufStage>> stages;
    for (size_t s = 0; s < manifest.stages.size(); ++s)
      stages.push_back(open_manifest_stage(manifest, manifest_path, static_cast<int64_t>(s), stage_options,
                                           options.verify_hash));
    return local_pipeline(std::move(stages));
  }
  std::unique_ptr<GgufStage> stage;
  std::string status;
  try {
    stage = open_manifest_stage(manifest, manifest_path, world->rank(), stage_options, options.verify_hash);
  } catch (const Error& e) {
    status = e.what();
  }
  const std::string verdict = agree(*world, status, manifest.export_id);
  if (!verdict.empty()) throw ConfigError(verdict);
  std::cerr << describe(*stage, world->rank()) << "\n";
  if (world->rank() == 0) return distributed_pipeline(std::move(stage), world);
  serve_stage(*stage, *world);
  return nullptr;
}

}  // namespace fedsplit
