// Pipeline stages of an exported model: which contiguous layers each GGUF shard holds.
//
// Plan file (JSON), written by hand or by the inference-engine planner:
//   {"stages": [{"layers": [0, 12], "device": "cuda:0"}, {"layers": [12, 24]}]}
// "layers" is [begin, end): layer indices, end exclusive. The stages must cover 0 .. num_layers
// without gaps or overlaps, in order, each with at least one layer. "device" is optional free text
// (kept in the manifest for the engine). Other keys are refused, so that a typo does not pass silently.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fedsplit {

struct StageRange {
  int64_t layer_begin = 0;  ///< first layer of the stage
  int64_t layer_end = 0;    ///< one past its last layer
  std::string device;       ///< where the engine should run it ("" = unspecified)
};

/// `stages` contiguous ranges over `num_layers` layers whose sizes differ by at most one (the first
/// ones take the extra layers). ConfigError when stages < 1 or > num_layers.
std::vector<StageRange> balanced_stages(int64_t num_layers, int64_t stages);

/// Parses a plan's text (format above) for a model of `num_layers` layers; ConfigError naming
/// `where` (the file) and what is wrong: not JSON, a missing or extra key, a gap, overlap or range
/// outside the model.
std::vector<StageRange> parse_stage_plan(const std::string& text, int64_t num_layers, const std::string& where);

/// Reads and parses a plan file (IoError when unreadable).
std::vector<StageRange> load_stage_plan(const std::string& path, int64_t num_layers);

}  // namespace fedsplit
