#include "infer/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fedsplit {
namespace {

using Body = std::function<void(int64_t, int64_t)>;

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long an idle worker polls for the next region before sleeping: long enough to cover the
// serial ops between the products of one decode step, short enough not to burn a core for long.
constexpr auto kSpin = std::chrono::microseconds(200);
constexpr int kPauseSpins = 256;
// Never more pool threads than this, whatever callers ask for.
constexpr int kMaxWorkers = 63;
// Chunks are handed out one at a time, so a thread that falls behind (another process took its
// core) leaves the rest to the others.
constexpr int kChunksPerThread = 4;

int64_t chunk_begin(int64_t c, int64_t n, int64_t chunks) { return c * n / chunks; }

class Pool {
 public:
  void run(int threads, int64_t n, const Body& body) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    const int64_t chunks = std::min<int64_t>(int64_t{kChunksPerThread} * std::min(threads, kMaxWorkers + 1), n);
    if (!busy.owns_lock() || chunks <= 1) {  // nested or concurrent region: the same chunks inline
      for (int64_t c = 0; c < chunks; ++c) body(chunk_begin(c, n, chunks), chunk_begin(c + 1, n, chunks));
      return;
    }
    const int helpers =
        grow(static_cast<int>(std::min<int64_t>(std::min(threads, kMaxWorkers + 1), chunks)) - 1);

    body_ = &body;
    n_ = n;
    chunks_ = chunks;
    next_chunk_.store(0, std::memory_order_relaxed);
    helpers_left_.store(helpers, std::memory_order_relaxed);
    error_ = nullptr;
    const uint64_t posted = ++job_counter_ << 2 | kPosted;
    for (int i = 0; i < helpers; ++i) slots_[i]->state.store(posted, std::memory_order_seq_cst);
    // Pairs with the worker's sleepers_ increment (both seq_cst): either it sees the new job or we
    // see it asleep and wake it.
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(sleep_mutex_); }
      wake_.notify_all();
    }

    take_chunks();
    // A helper that has not claimed the region yet (asleep, or descheduled on a busy machine) is
    // told not to join, so the caller never waits for a thread that did no work.
    for (int i = 0; i < helpers; ++i) {
      uint64_t expected = posted;
      if (slots_[i]->state.compare_exchange_strong(expected, (posted & ~kStateMask) | kCancelled))
        helpers_left_.fetch_sub(1, std::memory_order_relaxed);
    }
    // The helpers that joined must be done with body_ and the job fields before the next region.
    for (int spins = 0; helpers_left_.load(std::memory_order_acquire) > 0; ++spins) {
      if (spins < 4096) cpu_relax();
      else std::this_thread::yield();
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // A worker's slot holds (region number << 2) | state for the latest region it was asked to join.
  static constexpr uint64_t kPosted = 0, kClaimed = 1, kCancelled = 2, kStateMask = 3;
  struct alignas(64) Slot {
    std::atomic<uint64_t> state{0};
  };

  // Starts workers until there are `helpers`; returns how many there are (fewer if the system
  // refuses threads: the region then simply runs on fewer).
  int grow(int helpers) {
    while (static_cast<int>(workers_.size()) < helpers) {
      slots_.push_back(std::make_unique<Slot>());
      Slot* slot = slots_.back().get();
      try {
        workers_.emplace_back([this, slot] { worker_loop(*slot); });
      } catch (...) {  // no thread (or no memory for one): keep slots_ and workers_ in step
        slots_.pop_back();
        break;
      }
      workers_.back().detach();  // the pool lives for the whole process
    }
    return std::min(helpers, static_cast<int>(workers_.size()));
  }

  void take_chunks() {
    for (;;) {
      const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks_) return;
      try {
        (*body_)(chunk_begin(c, n_, chunks_), chunk_begin(c + 1, n_, chunks_));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  void worker_loop(Slot& slot) {
    uint64_t seen = 0;  // the last region number this worker looked at
    for (;;) {
      uint64_t state = slot.state.load(std::memory_order_acquire);
      const auto spin_until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 0; state >> 2 == seen; ++i) {
        // Past the first few microseconds, yield between polls: on an idle machine that costs little,
        // and on a busy one the core goes to whoever needs it instead of to our polling.
        if (i < kPauseSpins) cpu_relax();
        else std::this_thread::yield();
        state = slot.state.load(std::memory_order_acquire);
        if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
      }
      if (state >> 2 == seen) {
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return (state = slot.state.load(std::memory_order_seq_cst)) >> 2 != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = state >> 2;
      // Claim the region unless the caller already finished it and cancelled us.
      if ((state & kStateMask) != kPosted ||
          !slot.state.compare_exchange_strong(state, (state & ~kStateMask) | kClaimed, std::memory_order_acq_rel))
        continue;
      take_chunks();
      helpers_left_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::mutex busy_;  // held by the region that owns the pool
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::thread> workers_;
  uint64_t job_counter_ = 0;

  // The current region, written by its caller before it posts the job.
  const Body* body_ = nullptr;
  int64_t n_ = 0;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int> helpers_left_{0};
  std::mutex error_mutex_;
  std::exception_ptr error_;

  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<int> sleepers_{0};
};

// Never destroyed: detached workers may still be asleep in it when the process exits.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

}  // namespace

void parallel_for(int threads, int64_t n, const Body& body) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) {
    body(0, n);
    return;
  }
  pool().run(threads, n, body);
}

}  // namespace fedsplit
