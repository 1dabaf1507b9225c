#include "split/allocation_counter.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "core/util/compat.h"
#include "core/util/error.h"

namespace fedsplit {

namespace {

// LibTorch 2.3 made Allocator::allocate non-const.
#if FEDSPLIT_TORCH_AT_LEAST(2, 3)
#define FEDSPLIT_ALLOCATE_CONST
#else
#define FEDSPLIT_ALLOCATE_CONST const
#endif

// The data pointer is its own context (so raw_allocate works); sizes are looked up by pointer.
class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) FEDSPLIT_ALLOCATE_CONST override {
    void* data = c10::alloc_cpu(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[data] = n;
    }
    live_ += static_cast<int64_t>(n);
    return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  // LibTorch 2.x declares this pure virtual; 1.13 does not have it.
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }

  int64_t live() const { return live_.load(); }

  static CountingAllocator& instance() {
    static CountingAllocator* allocator = new CountingAllocator();  // never destroyed: frees may come late
    return *allocator;
  }

 private:
  static void release(void* data) {
    CountingAllocator& self = instance();
    size_t n = 0;
    {
      std::lock_guard<std::mutex> lock(self.mutex_);
      auto it = self.sizes_.find(data);
      if (it != self.sizes_.end()) {
        n = it->second;
        self.sizes_.erase(it);
      }
    }
    self.live_ -= static_cast<int64_t>(n);
    c10::free_cpu(data);
  }

  mutable std::mutex mutex_;
  mutable std::unordered_map<void*, size_t> sizes_;
  mutable std::atomic<int64_t> live_{0};
};

bool installed = false;

}  // namespace

AllocationCounter::AllocationCounter() : previous_(c10::GetCPUAllocator()) {
  if (installed) throw Error("AllocationCounter: one is installed already");
  installed = true;
  c10::SetCPUAllocator(&CountingAllocator::instance(), /*priority=*/0);
  if (c10::GetCPUAllocator() != &CountingAllocator::instance()) {
    installed = false;
    throw Error("AllocationCounter: LibTorch kept a higher-priority CPU allocator; memory cannot be measured");
  }
}

AllocationCounter::~AllocationCounter() {
  c10::SetCPUAllocator(previous_, /*priority=*/0);
  installed = false;
}

int64_t AllocationCounter::live_bytes() const { return CountingAllocator::instance().live(); }

}  // namespace fedsplit
