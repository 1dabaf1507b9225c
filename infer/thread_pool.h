// A persistent process-wide worker pool for the CPU inference engine. A decode step runs dozens of
// tiny parallel regions (one per matrix product or attention call), so starting threads per call
// costs more than it saves; the workers here are created once, spin briefly after each region (the
// next one usually follows within microseconds) and then sleep on a condition variable.
//
// Torch-free.
#pragma once
#include <cstdint>
#include <functional>

namespace fedsplit {

/// Calls body(begin, end) on the consecutive chunks of [0, n), split into k = min(4 * threads, n)
/// chunks of near-equal size (chunk c is [c * n / k, (c + 1) * n / k)), handed out one at a time to
/// `threads` threads; the chunks depend only on `threads` and `n`, never on which thread runs them.
/// The calling thread runs chunks too and returns when all are done; a worker that has not picked
/// the region up by then (asleep, or its core taken by another process) is left out of it.
/// threads <= 1 (or n <= 1) runs body(0, n) inline. One region uses the
/// pool at a time: a call made while another thread's region holds it (or from inside a body) runs
/// its chunks inline, in order, so results stay the same. The first exception thrown by a chunk is
/// rethrown after all chunks finish.
void parallel_for(int threads, int64_t n, const std::function<void(int64_t begin, int64_t end)>& body);

}  // namespace fedsplit
