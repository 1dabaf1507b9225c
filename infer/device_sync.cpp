#include "infer/device_sync.h"

#include <deque>
#include <optional>

#if defined(FEDSPLIT_TORCH_CUDA)
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fedsplit {

torch::Tensor to_device_async(const torch::Tensor& host, const torch::Device& device) {
  if (device.is_cpu()) return host;
  // LibTorch's pinned allocator keeps the block until the queued copy has read it.
  return host.contiguous().pin_memory().to(device, /*non_blocking=*/true);
}

struct HostCopy::Impl {
  torch::Tensor host;
#if defined(FEDSPLIT_TORCH_CUDA)
  std::optional<at::cuda::CUDAEvent> done;  // recorded behind the copy
#endif
};

HostCopy::HostCopy(const torch::Tensor& source) : impl_(std::make_unique<Impl>()) {
  if (source.device().is_cpu()) {
    impl_->host = source;
    return;
  }
#if defined(FEDSPLIT_TORCH_CUDA)
  impl_->host = torch::empty(source.sizes(), source.options().device(torch::kCPU).pinned_memory(true));
  impl_->host.copy_(source.contiguous(), /*non_blocking=*/true);
  impl_->done.emplace();
  impl_->done->record(c10::cuda::getCurrentCUDAStream(source.device().index()));
#else
  impl_->host = source.to(torch::kCPU);
#endif
}

HostCopy::~HostCopy() = default;
HostCopy::HostCopy(HostCopy&&) noexcept = default;
HostCopy& HostCopy::operator=(HostCopy&&) noexcept = default;

torch::Tensor HostCopy::wait() {
#if defined(FEDSPLIT_TORCH_CUDA)
  if (impl_->done) {
    impl_->done->synchronize();
    impl_->done.reset();
  }
#endif
  return impl_->host;
}

struct DeviceBusyClock::Impl {
  torch::Device device = torch::kCPU;
  double total = 0;
#if defined(FEDSPLIT_TORCH_CUDA)
  struct Span {
    at::cuda::CUDAEvent start{cudaEventDefault}, stop{cudaEventDefault};  // timing events
  };
  std::deque<Span> spans;  // recorded, not yet added to `total`

  // Adds the oldest spans to `total` until `keep` are left (those long past have run by now).
  void settle(size_t keep) {
    while (spans.size() > keep) {
      Span& s = spans.front();
      if (s.stop.isCreated()) {  // else a step that threw before its end
        s.stop.synchronize();
        total += s.start.elapsed_time(s.stop) / 1000.0;
      }
      spans.pop_front();
    }
  }
  c10::cuda::CUDAStream stream() const { return c10::cuda::getCurrentCUDAStream(device.index()); }
#endif
};

DeviceBusyClock::DeviceBusyClock(const torch::Device& device) : impl_(std::make_unique<Impl>()) {
  impl_->device = device;
}

DeviceBusyClock::~DeviceBusyClock() = default;

bool DeviceBusyClock::measures() const {
#if defined(FEDSPLIT_TORCH_CUDA)
  return impl_->device.is_cuda();
#else
  return false;
#endif
}

void DeviceBusyClock::start() {
#if defined(FEDSPLIT_TORCH_CUDA)
  if (!measures()) return;
  impl_->spans.emplace_back();
  impl_->spans.back().start.record(impl_->stream());
#endif
}

void DeviceBusyClock::stop() {
#if defined(FEDSPLIT_TORCH_CUDA)
  if (!measures() || impl_->spans.empty()) return;
  impl_->spans.back().stop.record(impl_->stream());
  impl_->settle(256);
#endif
}

double DeviceBusyClock::seconds() {
#if defined(FEDSPLIT_TORCH_CUDA)
  impl_->settle(0);
#endif
  return impl_->total;
}

}  // namespace fedsplit
