// Generation for many sequences at once through a Pipeline: up to pipeline.slots() sequences are in
// flight, each in its own cache slot, so that while one waits for its logits the stages work on the
// others. Each sequence goes as in generate(): its prompt in one pass, then one token at a time.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "infer/generate.h"
#include "infer/pipeline.h"
#include "infer/sampling.h"

namespace fedsplit {

struct BatchRequest {
  int64_t id = 0;               ///< the caller's handle, returned with the result
  std::vector<int64_t> prompt;  ///< token ids (non-empty)
  GenerateOptions options;
};

struct BatchResult {
  int64_t id = 0;
  Generation generation;
  std::string error;  ///< non-empty when the request was refused (too long, bad id): the others go on
};

class BatchGenerator {
 public:
  explicit BatchGenerator(Pipeline& pipeline);
  ~BatchGenerator();
  /// Queues a request. A request that cannot run (empty, longer than the context) is answered by
  /// the next step() with its error.
  void add(BatchRequest request);
  /// Nothing queued, in flight or answered but not yet returned.
  bool idle() const;
  /// Starts queued requests on free slots, waits for one result (if any is in flight) and returns the
  /// requests that finished.
  std::vector<BatchResult> step();
  /// Runs every queued request to the end; results in the order they finished.
  std::vector<BatchResult> run_all();

 private:
  struct Sequence;
  Pipeline& pipeline_;
  std::deque<BatchRequest> queued_;
  std::vector<BatchResult> refused_;
  std::map<int64_t, Sequence> active_;  // by slot
  std::vector<int64_t> free_slots_;
};

}  // namespace fedsplit
