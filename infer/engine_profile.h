// Per-layer costs of a GGUF model in the inference engine (infer/gguf_stage.h), measured on this
// machine: the input of the inference partition planner (infer/infer_planner.h).
//
// Each block is timed on one decode step (T = 1) with the cache already holding `position` tokens,
// so attention reads a realistic amount of cache; the embedding and the head alike. Every cost is
// the median over `repetitions` steps (after one untimed step), which resists the odd slow step on
// a shared machine. Weight bytes are the tensors as stored in the file; the KV cache size is the
// engine's (fp32 keys and values per position per sequence).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "infer/infer_devices.h"
#include "infer/infer_planner.h"

namespace fedsplit {

struct EngineProfileOptions {
  int threads = 1;             ///< CPU threads of the engine while timing
  int64_t position = 128;      ///< cache position of the timed steps (lowered to fit the model's max_position)
  int64_t repetitions = 5;     ///< timed decode steps; each cost is their median
};

struct EngineProfile {
  std::string model;                   ///< the GGUF file
  std::string architecture;            ///< "llama" or "qwen2"
  int64_t hidden_size = 0;
  int64_t max_position = 0;            ///< the model's longest context
  int64_t position = 0;                ///< where the steps were timed
  int threads = 1;
  std::vector<InferLayerCost> layers;  ///< per block
  double embed_seconds = 0;
  double head_seconds = 0;
  int64_t embed_weight_bytes = 0;
  int64_t head_weight_bytes = 0;
  int64_t head_copy_bytes = 0;         ///< tied embeddings: the head's own copy in a later stage
                                       ///< (estimated as the embedding's bytes; export writes it
                                       ///< as Q8_0 where the model is Q4_0, so a little more there)
  int64_t activation_bytes = 0;        ///< one token's hidden state between stages (fp32)

  /// The per-layer table `plan infer` prints (ms per token, weights MB, cache KB per token).
  std::string table() const;
};

/// Loads the model (every block, one slot) and times it as described above. The errors of
/// GgufStage (FormatError / ConfigError naming the file); ConfigError for repetitions < 1 or a
/// negative position.
EngineProfile profile_engine(const std::string& gguf_path, const EngineProfileOptions& options);

/// The planning problem of `profile` over `devices`: `context` positions cached per sequence
/// (0 = the model's max_position, as the engine does), `sequences` caches per device.
InferProblem infer_problem(const EngineProfile& profile, const InferDevicesFile& devices, InferObjective objective,
                           int64_t context, int64_t sequences);

}  // namespace fedsplit
