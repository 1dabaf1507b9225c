// Training checkpoints in HDF5: everything needed to continue a run bitwise (on CPU) as if it had
// never stopped.
//
// Format (fedsplit checkpoint, version 1):
//   /                      attrs: format = "fedsplit-checkpoint", version = 1,
//                                 step (optimizer steps completed), data_epoch, data_index
//                                 (position of the next batch), recipe (resolved INI text),
//                                 model_config (HF config.json text), extra (JSON text)
//   /model/<param name>    every trainable parameter, fp32 (or its stored dtype); a PEFT run's
//                          checkpoint holds only the adapter (extra names "adapter", "base_model")
//   /optimizer             attr steps; /optimizer/<param name>/{exp_avg, exp_avg_sq}
//   /rng/cpu               uint8 state of the default CPU generator
//   /rng/cuda              uint8 state of the current CUDA generator (when CUDA is used)
// The file is written to a temporary name and renamed, so a checkpoint is whole or absent.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace fedsplit {

class AdamW;

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct CheckpointMeta {
  int64_t step = 0;           ///< optimizer steps completed
  int64_t data_epoch = 0;     ///< epoch of the next training batch
  int64_t data_index = 0;     ///< index within that epoch of the next batch
  std::string recipe;         ///< resolved recipe (INI) of the run that wrote it
  std::string model_config;   ///< HF config.json text of the model
  std::string extra = "{}";   ///< caller-defined JSON (e.g. best validation loss)
};

/// Writes a checkpoint atomically. `optimizer` may be null (model only).
void save_checkpoint(const std::string& path, const NamedTensors& params, const AdamW* optimizer,
                     const CheckpointMeta& meta, bool with_cuda_rng = false);

/// Reads a checkpoint's metadata only.
CheckpointMeta read_checkpoint_meta(const std::string& path);

/// Copies the checkpoint's tensors into `params` (names and shapes must match exactly), the
/// optimizer state into `optimizer` (if not null) and restores the RNG states. Throws
/// FormatError naming the file and tensor on any mismatch.
CheckpointMeta load_checkpoint(const std::string& path, const NamedTensors& params, AdamW* optimizer,
                               bool restore_rng = true);

}  // namespace fedsplit
