// The pipeline of an export's stages: rank 0 holds stage 0 (the embedding and the first blocks)
// and drives; rank s holds stage s; the last rank's head answers rank 0, over a second world of
// the same ranks (its own NCCL communicators). Activations travel stage to stage over c10d
// point-to-point (World::isend / recv), each as one fp32 packet:
//
//   header   kind (run | heartbeat | stop | hello), slot, position, tokens T, rows wanted (floats,
//            exact below 2^24), then the payload's row when it has one (a decode step: one message
//            a hop)
//   payload  [T, hidden] between stages; [rows, vocab] logits from the last to rank 0; with more
//            than one row it follows the packet as a message of its own
//
// Every stage keeps one KV cache per slot, so up to `slots` sequences are in flight at once and the
// stages work on different ones at the same time. Every message keeps its order on its link, so
// results come back in the order they were submitted. A hello goes once around the ring before
// the first request (so that NCCL's communicators are made at start-up); heartbeats keep idle
// stages from timing out while rank 0 waits for input; every receive is bounded by the World's
// timeout. On CUDA no rank's host waits for its GPU (infer/device_sync.h): it queues each step
// while the GPU runs the one before.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "infer/causal_lm.h"
#include "infer/gguf_stage.h"

namespace fedsplit {

class World;

/// One batch of tokens of one sequence, submitted by rank 0.
struct StageRequest {
  int64_t slot = 0;
  int64_t position = 0;          ///< where its tokens start in the slot's cache
  std::vector<int64_t> tokens;
  bool all_rows = false;         ///< logits of every token (else only the last one's)
};

struct StageResult {
  int64_t slot = 0;
  torch::Tensor logits;  ///< [rows, vocab] fp32 on the CPU
};

/// How rank 0 reaches the stages.
class Pipeline {
 public:
  virtual ~Pipeline() = default;
  /// Runs the first stage on the request and hands it on (returns without waiting for the rest).
  virtual void submit(const StageRequest& request) = 0;
  /// The next result, in submission order (blocks; CommError after the timeout).
  virtual StageResult receive() = 0;
  /// Tells idle stages that rank 0 is alive.
  virtual void heartbeat() = 0;
  /// Ends the other ranks' loops.
  virtual void stop() = 0;
  virtual const DecoderConfig& config() const = 0;
  virtual int64_t context() const = 0;
  virtual int64_t slots() const = 0;
};

/// Every stage in this process, one after the other (a world of one).
std::unique_ptr<Pipeline> local_pipeline(std::vector<std::unique_ptr<GgufStage>> stages);

/// Rank 0 of `world`, holding stage 0; ranks 1.. run serve_stage.
std::unique_ptr<Pipeline> distributed_pipeline(std::unique_ptr<GgufStage> first, std::shared_ptr<World> world);

/// Rank s > 0: runs stage s on what rank s-1 sends until rank 0 stops the pipeline.
void serve_stage(GgufStage& stage, World& world);

/// A pipeline as a CausalLm of one sequence (slot 0): generation and speculative decoding run on
/// it as on one process.
class PipelineLm : public CausalLm {
 public:
  explicit PipelineLm(Pipeline& pipeline) : pipeline_(pipeline) {}
  torch::Tensor forward(const std::vector<int64_t>& tokens) override;
  torch::Tensor forward_last(const std::vector<int64_t>& tokens) override;
  void truncate(int64_t position) override;
  int64_t position() const override { return position_; }
  int64_t context() const override { return pipeline_.context(); }
  const DecoderConfig& config() const override { return pipeline_.config(); }

 private:
  torch::Tensor run(const std::vector<int64_t>& tokens, bool all_rows);

  Pipeline& pipeline_;
  int64_t position_ = 0;
};

/// DataError unless every id is in the vocabulary and position + tokens fits the context.
void check_tokens(const std::vector<int64_t>& tokens, int64_t position, const DecoderConfig& config, int64_t context);

}  // namespace fedsplit
