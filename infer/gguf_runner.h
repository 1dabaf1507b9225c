// A whole llama or qwen2 GGUF model (one file holding every block: fedsplit's one-stage export or
// llama.cpp's) as a CausalLm with one sequence's KV cache. See infer/gguf_stage.h for how it
// computes.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "infer/causal_lm.h"
#include "infer/gguf_stage.h"

namespace fedsplit {

class GgufRunner : public CausalLm {
 public:
  /// Loads the model of `path`. `threads` CPU threads for the products; `context` positions in the
  /// KV cache (0 = the model's max_position); `device` where it computes. ConfigError, pointing
  /// to the manifest, for one stage of a pipeline export.
  GgufRunner(const std::string& path, int threads, int64_t context = 0, torch::Device device = torch::kCPU);
  /// The same with every stage option (options.slots is 1: a runner holds one sequence).
  GgufRunner(const std::string& path, StageOptions options);
  ~GgufRunner() override;

  torch::Tensor forward(const std::vector<int64_t>& tokens) override;
  torch::Tensor forward_last(const std::vector<int64_t>& tokens) override;
  void truncate(int64_t position) override;
  int64_t position() const override { return position_; }
  int64_t context() const override;
  const DecoderConfig& config() const override;
  /// "llama" or "qwen2".
  const std::string& architecture() const;

 private:
  torch::Tensor run(const std::vector<int64_t>& tokens, bool all_rows);

  std::unique_ptr<GgufStage> stage_;
  int64_t position_ = 0;
};

}  // namespace fedsplit
