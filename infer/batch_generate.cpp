#include "infer/batch_generate.h"

#include <algorithm>
#include <chrono>

#include "core/util/error.h"

namespace fedsplit {

using Clock = std::chrono::steady_clock;

namespace {
double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
}  // namespace

struct BatchGenerator::Sequence {
  BatchRequest request;
  Sampler sampler;
  std::vector<int64_t> history;  // prompt, then the new tokens
  int64_t position = 0;          // tokens already in the slot's cache
  Generation out;
  Clock::time_point started, prompt_done;
  explicit Sequence(BatchRequest r) : request(std::move(r)), sampler(request.options.sampling), history(request.prompt) {}
};

BatchGenerator::BatchGenerator(Pipeline& pipeline) : pipeline_(pipeline) {
  for (int64_t s = pipeline.slots() - 1; s >= 0; --s) free_slots_.push_back(s);
}

BatchGenerator::~BatchGenerator() = default;

void BatchGenerator::add(BatchRequest request) {
  try {
    check_sampling_options(request.options.sampling);
    check_generation_fits(request.prompt, request.options.max_tokens, pipeline_.context());
    check_tokens(request.prompt, 0, pipeline_.config(), pipeline_.context());
  } catch (const Error& e) {
    refused_.push_back({request.id, {}, e.what()});
    return;
  }
  queued_.push_back(std::move(request));
}

bool BatchGenerator::idle() const { return queued_.empty() && active_.empty() && refused_.empty(); }

std::vector<BatchResult> BatchGenerator::step() {
  std::vector<BatchResult> done = std::move(refused_);
  refused_.clear();
  while (!queued_.empty() && !free_slots_.empty()) {
    const int64_t slot = free_slots_.back();
    free_slots_.pop_back();
    Sequence& s = active_.emplace(slot, Sequence(std::move(queued_.front()))).first->second;
    queued_.pop_front();
    s.started = Clock::now();
    s.out.prompt_tokens = static_cast<int64_t>(s.request.prompt.size());
    pipeline_.submit({slot, 0, s.request.prompt, false});
  }
  if (active_.empty()) return done;

  StageResult result = pipeline_.receive();
  const auto it = active_.find(result.slot);
  if (it == active_.end())
    throw CommError("the pipeline answered slot " + std::to_string(result.slot) + ", which has no sequence");
  Sequence& s = it->second;
  const auto now = Clock::now();
  if (s.position == 0) s.prompt_done = now, s.out.prompt_seconds = seconds_between(s.started, now);
  s.position = static_cast<int64_t>(s.history.size());
  const auto& options = s.request.options;
  const auto& eos = pipeline_.config().eos_token_ids;
  const auto logits = result.logits[-1].contiguous();
  bool finished = static_cast<int64_t>(s.out.tokens.size()) >= options.max_tokens;
  if (!finished) {
    const int64_t next = s.sampler.next(logits.data_ptr<float>(), logits.size(0), s.history);
    if (options.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) {
      finished = true;
    } else {
      s.out.tokens.push_back(next);
      s.history.push_back(next);
      finished = static_cast<int64_t>(s.out.tokens.size()) >= options.max_tokens;
      if (!finished) pipeline_.submit({result.slot, s.position, {next}, false});
    }
  }
  if (finished) {
    s.out.decode_seconds = seconds_between(s.prompt_done, now);
    done.push_back({s.request.id, std::move(s.out), ""});
    free_slots_.push_back(result.slot);
    active_.erase(it);
  }
  return done;
}

std::vector<BatchResult> BatchGenerator::run_all() {
  std::vector<BatchResult> all;
  while (!idle())
    for (auto& r : step()) all.push_back(std::move(r));
  return all;
}

}  // namespace fedsplit
