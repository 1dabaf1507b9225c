// Runs a llama or qwen2 GGUF model (fedsplit's export or llama.cpp's layout) on the CPU with a KV
// cache, computing with the file's own weights: Q8_0 and Q4_0 projections through
// infer/quant_kernels (never dequantized as a whole), F32 and F16 ones as fp32 matrices.
//
// The q and k rows of a "llama" file are permuted for llama.cpp's RoPE (adjacent pairs rotate
// together, see compress/gguf_llama.h); the runner rotates them so, which gives the same scores as
// HF's half rotation on the original rows, since q and k are permuted alike. "qwen2" files keep HF's
// order and rotate halves.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace fedsplit {

class GgufRunner {
 public:
  /// Loads the model of `path` (one .gguf holding every block). `threads` CPU threads for the
  /// products; `context` positions in the KV cache (0 = the model's max_position).
  GgufRunner(const std::string& path, int threads, int64_t context = 0);
  ~GgufRunner();
  GgufRunner(const GgufRunner&) = delete;
  GgufRunner& operator=(const GgufRunner&) = delete;

  /// Reads `tokens` at positions position() .. position()+T-1 (appending their keys and values to
  /// the cache) and returns the logits of every one of them, [T, vocab] fp32. DataError when the
  /// cache would overflow (naming the context size).
  torch::Tensor forward(const std::vector<int64_t>& tokens);
  /// Empties the cache: the next forward starts at position 0.
  void reset();
  int64_t position() const;
  int64_t context() const;
  const DecoderConfig& config() const;
  /// "llama" or "qwen2".
  const std::string& architecture() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedsplit
