// What the post-training compression jobs (run.mode = quantize | prune) share: the run directory,
// the trained model to compress (model.init), its tokenizer and data, calibration batches from the
// training split, held-out evaluation, and the result saved as a HF model directory.
#pragma once
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "core/data/dataset.h"
#include "core/model/decoder.h"
#include "train/lm_job.h"

namespace fedsplit {

class Tokenizer;

/// An opened compression run.
struct CompressRun {
  std::shared_ptr<Tokenizer> tokenizer;
  std::unique_ptr<TokenDataset> data;
  Decoder model{nullptr};           ///< model.init, on `device`, in eval mode
  torch::Device device = torch::kCPU;
};

/// Starts as the train job does (start_lm_job: run directory, tokenizer, data split unless
/// `open_data` is false) and loads model.init (required: ConfigError naming `mode` otherwise).
CompressRun open_compress_run(const LmJobOptions& options, const std::string& recipe_ini, bool resume,
                              const std::string& mode, bool open_data = true);

/// `batches` token-id batches [B, T] from the training split (none from the held-out split), on the CPU.
std::vector<torch::Tensor> calibration_batches(TokenDataset& data, int64_t batches);

/// Mean held-out token loss of `model` over train.eval_batches batches.
double held_out_loss(Decoder& model, const CompressRun& run, const TrainOptions& train);

/// Saves `model` (moved to the CPU) and the tokenizer to <run_dir>/model in HF format; returns that path.
std::string save_compressed_model(Decoder& model, const Tokenizer& tokenizer, const std::string& run_dir);

}  // namespace fedsplit
