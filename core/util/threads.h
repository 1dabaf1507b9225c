// CPU thread count for LibTorch, set explicitly: Debian's LibTorch defaults to one intra-op thread.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <thread>

namespace fedsplit {

/// Uses `threads` intra-op threads, or every core when `threads` is 0.
inline void set_cpu_threads(int64_t threads) {
  torch::set_num_threads(threads > 0 ? static_cast<int>(threads)
                                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace fedsplit
