// Counts the bytes of CPU tensor memory alive while it is installed, to measure what a stage's forward
// keeps for backward. It replaces LibTorch's CPU allocator for its lifetime (allocations go through
// c10::alloc_cpu as the default one's do) and restores the previous one; memory allocated under it may
// be freed at any later time. One at a time per process; not for use while other threads profile.
#pragma once
#include <cstdint>

namespace c10 {
struct Allocator;
}

namespace fedsplit {

class AllocationCounter {
 public:
  AllocationCounter();
  ~AllocationCounter();
  AllocationCounter(const AllocationCounter&) = delete;
  AllocationCounter& operator=(const AllocationCounter&) = delete;

  /// Bytes allocated through the counter and not freed yet (including those allocated by an earlier
  /// counter: the count is process-wide).
  int64_t live_bytes() const;

 private:
  c10::Allocator* previous_;
};

}  // namespace fedsplit
