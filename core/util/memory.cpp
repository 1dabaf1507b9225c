#include "core/util/memory.h"

#include <sys/resource.h>

#include "core/util/compat.h"

#if FEDSPLIT_TORCH_AT_LEAST(2, 1) && __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#define FEDSPLIT_CUDA_MEMORY_STATS 1
#endif

namespace fedsplit {

int64_t peak_host_memory_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

int64_t peak_cuda_memory_bytes() {
#ifdef FEDSPLIT_CUDA_MEMORY_STATS
  if (c10::cuda::device_count() == 0) return -1;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  return stats.allocated_bytes[0].peak;  // [0]: the aggregate over small and large pools
#else
  return -1;
#endif
}

}  // namespace fedsplit
