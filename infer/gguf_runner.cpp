#include "infer/gguf_runner.h"

#include <torch/torch.h>

#include "core/util/error.h"
#include "infer/gguf_stage.h"

namespace fedsplit {

namespace {
StageOptions runner_options(int threads, int64_t context, torch::Device device) {
  StageOptions options;
  options.threads = threads;
  options.context = context;
  options.device = device;
  return options;
}
}  // namespace

GgufRunner::GgufRunner(const std::string& path, int threads, int64_t context, torch::Device device)
    : GgufRunner(path, runner_options(threads, context, device)) {}

GgufRunner::GgufRunner(const std::string& path, StageOptions options) {
  options.slots = 1;
  stage_ = std::make_unique<GgufStage>(path, options);
  if (stage_->identity().stage_count > 1)
    throw ConfigError(path + " is one stage of a pipeline export: run the export's manifest.json across its stages");
}

GgufRunner::~GgufRunner() = default;

torch::Tensor GgufRunner::forward(const std::vector<int64_t>& tokens) { return run(tokens, true); }
torch::Tensor GgufRunner::forward_last(const std::vector<int64_t>& tokens) { return run(tokens, false); }

torch::Tensor GgufRunner::run(const std::vector<int64_t>& tokens, bool all_rows) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T == 0) return torch::empty({0, config().vocab_size});
  torch::NoGradGuard no_grad;
  // The stage refuses ids outside the vocabulary and positions beyond its context.
  const auto h = stage_->run_layers(0, stage_->embed(tokens), position_);
  position_ += T;
  return stage_->head(all_rows ? h : h.slice(0, T - 1)).to(torch::kCPU);
}

void GgufRunner::truncate(int64_t position) {
  if (position < 0 || position > position_)
    throw ConfigError("cannot truncate a cache of " + std::to_string(position_) + " positions to " +
                      std::to_string(position));
  position_ = position;
}

int64_t GgufRunner::context() const { return stage_->context(); }
const DecoderConfig& GgufRunner::config() const { return stage_->config(); }
const std::string& GgufRunner::architecture() const { return stage_->architecture(); }

}  // namespace fedsplit
