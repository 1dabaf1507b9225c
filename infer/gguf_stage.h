// One pipeline stage of a llama or qwen2 GGUF model: the blocks [layer_begin, layer_end) of a stage
// file that `fedsplit export gguf` wrote (or a whole-model file, one stage holding every block),
// with the token embedding if it is the first stage and the final norm and head if it is the last.
// Keys and values are cached per slot (one sequence each), so several sequences can be in flight.
//
// On the CPU, Q8_0 and Q4_0 projections go through infer/quant_kernels (never dequantized as a
// whole) and F32/F16 ones are fp32 matrices. On CUDA every weight is dequantized once into an
// fp32 tensor on the device and the stage runs through LibTorch; a slot's one-token step is
// captured as a CUDA graph at load and replayed (position read from device memory, attention over
// the whole cache with the positions after it masked), so a step costs one launch, not one per op.
//
// The q and k rows of a "llama" file are permuted for llama.cpp's RoPE (adjacent pairs rotate
// together, see compress/gguf_llama.h); the stage rotates them so, which gives the same scores as
// HF's half rotation on the original rows, since q and k are permuted alike. "qwen2" files keep
// HF's order and rotate halves.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace fedsplit {

struct StageOptions {
  int threads = 1;                     ///< CPU threads for the products
  int64_t context = 0;                 ///< positions per slot's cache (0 = the model's max_position)
  int64_t slots = 1;                   ///< sequences whose caches it keeps at once
  torch::Device device = torch::kCPU;  ///< where it computes
  int64_t vocab_size = 0;              ///< for a middle stage, which holds neither embedding nor head
                                       ///< (0: from the file's tensors or tokenizer)
  bool cuda_graphs = true;             ///< on CUDA, replay each slot's one-token step as a captured
                                       ///< graph (infer/cuda_graph.h) where the build has them
};

/// What the file says it is: fedsplit.* metadata of a pipeline export (one-stage defaults for a
/// file without them, such as llama.cpp's).
struct StageIdentity {
  std::string export_id;     ///< "" when the file has none
  int64_t stage = 0;
  int64_t stage_count = 1;
  int64_t layer_begin = 0;
  int64_t layer_end = 0;
};

class GgufStage {
 public:
  /// Loads `path`. FormatError / ConfigError naming the file for a missing tensor, an unsupported
  /// type or architecture, or metadata that contradicts its tensors.
  GgufStage(const std::string& path, const StageOptions& options);
  ~GgufStage();
  GgufStage(const GgufStage&) = delete;
  GgufStage& operator=(const GgufStage&) = delete;

  /// The hidden states of `tokens`, [T, hidden] on the stage's device. First stage only; DataError
  /// for an id outside the vocabulary.
  torch::Tensor embed(const std::vector<int64_t>& tokens) const;
  /// Block `layer` (a model-wide index in [layer_begin, layer_end)) over h [T, hidden] at positions
  /// position .. position+T-1 of slot `slot`, whose cache must already hold 0 .. position-1
  /// (position + T <= context).
  torch::Tensor run_layer(int64_t layer, int64_t slot, const torch::Tensor& h, int64_t position);
  /// Every block of the stage, in order.
  torch::Tensor run_layers(int64_t slot, torch::Tensor h, int64_t position);
  /// Final norm and head: logits [T, vocab] fp32 on the stage's device. Last stage only.
  torch::Tensor head(const torch::Tensor& h) const;

  const StageIdentity& identity() const;
  bool first() const;  ///< holds the token embedding
  bool last() const;   ///< holds the final norm and head
  int64_t layer_begin() const;
  int64_t layer_end() const;
  int64_t context() const;
  int64_t slots() const;
  torch::Device device() const;
  const DecoderConfig& config() const;
  const std::string& architecture() const;  ///< "llama" or "qwen2"

  /// Bytes of the weights as stored in the file (what the planner places).
  int64_t layer_weight_bytes(int64_t layer) const;
  int64_t embed_weight_bytes() const;  ///< 0 unless first()
  int64_t head_weight_bytes() const;   ///< final norm and head; 0 unless last()
  /// Cache bytes one position of one slot takes in one block (keys and values, fp32).
  int64_t kv_bytes_per_token() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedsplit
