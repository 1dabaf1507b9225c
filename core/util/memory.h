// Peak memory figures for run summaries and benchmarks.
#pragma once
#include <cstdint>

namespace fedsplit {

/// The process's peak resident set size in bytes (getrusage's ru_maxrss): host memory, every
/// allocation of the process counted, since it started.
int64_t peak_host_memory_bytes();

/// Peak bytes held by tensors on the current CUDA device since the process started (PyTorch's
/// max_memory_allocated), or -1 where this build has no CUDA.
int64_t peak_cuda_memory_bytes();

}  // namespace fedsplit
