#include "infer/cuda_graph.h"

#include "core/util/error.h"

#if defined(FEDSPLIT_TORCH_CUDA)
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/version.h>
#endif

namespace fedsplit {

#if defined(FEDSPLIT_TORCH_CUDA)

struct CapturedGraph::Impl {
  at::cuda::CUDAGraph graph;
};

namespace {
// `waiter` runs what follows only after everything queued on `first` so far.
void wait_for(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& first) {
  at::cuda::CUDAEvent event;
  event.record(first);
  event.block(waiter);
}
}  // namespace

bool CapturedGraph::available() { return true; }

CapturedGraph::CapturedGraph(const std::function<void()>& body, torch::Device device)
    : impl_(std::make_unique<Impl>()) {
  const c10::cuda::CUDAGuard device_guard(device);
  const auto current = c10::cuda::getCurrentCUDAStream(device.index());
  // Capture needs a stream other than the default one.
  const auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
  wait_for(side, current);
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    body();
    body();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
    // Thread-local: other threads (NCCL's watchdog, a sender) may touch CUDA while this one captures.
    impl_->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
#else
    impl_->graph.capture_begin();
#endif
    body();
    impl_->graph.capture_end();
  }
  wait_for(current, side);
}

void CapturedGraph::replay() { impl_->graph.replay(); }

#else

struct CapturedGraph::Impl {};

bool CapturedGraph::available() { return false; }

CapturedGraph::CapturedGraph(const std::function<void()>&, torch::Device) {
  throw ConfigError("this build of fedsplit has no CUDA graphs (its LibTorch was built without CUDA)");
}

void CapturedGraph::replay() {}

#endif

CapturedGraph::~CapturedGraph() = default;

}  // namespace fedsplit
