// A Chrome trace of the CPU ops and CUDA kernels run while this object lives (LibTorch 2.x's
// Kineto profiler); a no-op that says so on LibTorch 1.13.
#pragma once
#include <iostream>
#include <string>

#include "core/util/compat.h"

#if FEDSPLIT_TORCH_AT_LEAST(2, 0)
#include <torch/csrc/autograd/profiler_kineto.h>
#endif

namespace fedsplit {

class KernelProfile {
 public:
  explicit KernelProfile(std::string path) : path_(std::move(path)) {
#if FEDSPLIT_TORCH_AT_LEAST(2, 0)
    using namespace torch::profiler::impl;
    const ProfilerConfig config(ProfilerState::KINETO);
    const std::set<ActivityType> activities{ActivityType::CPU, ActivityType::CUDA};
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
#else
    std::cerr << "--profile needs LibTorch 2.x; no trace written\n";
#endif
  }
  ~KernelProfile() {
#if FEDSPLIT_TORCH_AT_LEAST(2, 0)
    torch::autograd::profiler::disableProfiler()->save(path_);
#endif
  }
  KernelProfile(const KernelProfile&) = delete;
  KernelProfile& operator=(const KernelProfile&) = delete;

 private:
  std::string path_;
};

}  // namespace fedsplit
