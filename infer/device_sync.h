// Keeping the host off the device's queue. On CUDA, a LibTorch copy between pageable host memory
// and the device waits for all the work queued on the stream first, so a stage whose host copied
// an input or a header that way could never queue its next step while the device ran the current
// one. These helpers copy through pinned memory in stream order, wait for one copy alone, and
// time what the device spends on a stage's steps. On the CPU they add nothing.
#pragma once
#include <torch/types.h>

#include <memory>

namespace fedsplit {

/// `host` (a CPU tensor) on `device`, copied in stream order without the host waiting for the
/// device; `host` itself when `device` is the CPU.
torch::Tensor to_device_async(const torch::Tensor& host, const torch::Device& device);

/// A copy of `source` in host memory, queued behind the work that makes it: wait() returns the
/// copy once it is done, without waiting for what the device queued later. On the CPU, `source`.
class HostCopy {
 public:
  explicit HostCopy(const torch::Tensor& source);
  ~HostCopy();
  HostCopy(HostCopy&&) noexcept;
  HostCopy& operator=(HostCopy&&) noexcept;
  torch::Tensor wait();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Device time of the work queued between start() and stop() on the current stream, summed over
/// many spans (CUDA events). measures() is false on the CPU and in builds without CUDA, where the
/// host's clock already says how long the work took.
class DeviceBusyClock {
 public:
  explicit DeviceBusyClock(const torch::Device& device);
  ~DeviceBusyClock();
  DeviceBusyClock(const DeviceBusyClock&) = delete;
  DeviceBusyClock& operator=(const DeviceBusyClock&) = delete;
  bool measures() const;
  void start();
  void stop();
  /// The spans' total, once every one has run.
  double seconds();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedsplit
