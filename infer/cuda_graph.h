// A piece of GPU work captured once as a CUDA graph and replayed: one launch instead of one per
// LibTorch op. The engine's CUDA decode step is dozens of small ops per block, each costing more
// to launch (about 10 us) than to run, so replaying the step as a graph is what makes a stage's
// time its GPU time.
//
// Replays rerun the captured kernels on the same memory: the body must read its inputs from
// tensors it keeps (written before each replay) and write its outputs to tensors it keeps. Builds
// whose LibTorch lacks CUDA have no graphs (available() is false).
#pragma once
#include <torch/types.h>

#include <functional>
#include <memory>

namespace fedsplit {

class CapturedGraph {
 public:
  /// Whether this build can capture CUDA graphs.
  static bool available();
  /// Runs `body` twice on a side stream of `device` (allocations and library handles settle), then
  /// captures it. Throws what capture throws (an op that cannot be captured, for instance).
  CapturedGraph(const std::function<void()>& body, torch::Device device);
  ~CapturedGraph();
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  /// Launches the captured work on the device's current stream.
  void replay();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedsplit
