#include "infer/pipeline.h"

#include <torch/torch.h>

#include <deque>

#include "core/comm/world.h"
#include "core/util/error.h"

namespace fedsplit {
namespace {

enum Kind : int64_t { kRun = 0, kHeartbeat = 1, kStop = 2 };
constexpr int kForwardTag = 0;  // stage s -> s+1
constexpr int kResultTag = 1;   // last stage -> rank 0

torch::Tensor header(int64_t kind, int64_t slot = 0, int64_t position = 0, int64_t tokens = 0, int64_t rows = 0) {
  return torch::tensor(std::vector<int64_t>{kind, slot, position, tokens, rows}, torch::kLong);
}

// Sends that have started, waited for in order once there are more than a ring of full slots can
// hold (so memory stays bounded and no rank waits on a send its peer cannot yet receive).
class SendQueue {
 public:
  SendQueue(World& world, int64_t slots) : world_(world), limit_(static_cast<size_t>(2 * slots + 8)) {}
  void send(const torch::Tensor& tensor, int dst, int tag) {
    pending_.push_back(world_.isend(tensor, dst, tag));
    while (pending_.size() > limit_) {
      pending_.front().wait();
      pending_.pop_front();
    }
  }
  void drain() {
    for (auto& p : pending_) p.wait();
    pending_.clear();
  }

 private:
  World& world_;
  size_t limit_;
  std::deque<World::PendingSend> pending_;
};

class LocalPipeline final : public Pipeline {
 public:
  explicit LocalPipeline(std::vector<std::unique_ptr<GgufStage>> stages) : stages_(std::move(stages)) {}
  void submit(const StageRequest& r) override {
    check_tokens(r.tokens, r.position, config(), context());
    torch::NoGradGuard no_grad;
    torch::Tensor h = stages_.front()->embed(r.tokens);
    for (auto& stage : stages_) h = stage->run_layers(r.slot, h.to(stage->device()), r.position);
    if (!r.all_rows) h = h.slice(0, h.size(0) - 1);
    results_.push_back({r.slot, stages_.back()->head(h).to(torch::kCPU)});
  }
  StageResult receive() override {
    if (results_.empty()) throw ConfigError("receive() with nothing submitted");
    StageResult out = std::move(results_.front());
    results_.pop_front();
    return out;
  }
  void heartbeat() override {}
  void stop() override {}
  const DecoderConfig& config() const override { return stages_.front()->config(); }
  int64_t context() const override { return stages_.front()->context(); }
  int64_t slots() const override { return stages_.front()->slots(); }

 private:
  std::vector<std::unique_ptr<GgufStage>> stages_;
  std::deque<StageResult> results_;
};

class DistributedPipeline final : public Pipeline {
 public:
  DistributedPipeline(std::unique_ptr<GgufStage> first, std::shared_ptr<World> world)
      : first_(std::move(first)), world_(std::move(world)), sends_(*world_, first_->slots()) {}
  ~DistributedPipeline() override {
    try {
      stop();
    } catch (...) {  // the error that unwinds us is the one to report
    }
  }
  void submit(const StageRequest& r) override {
    check_tokens(r.tokens, r.position, config(), context());
    torch::NoGradGuard no_grad;
    const auto h = first_->run_layers(r.slot, first_->embed(r.tokens), r.position);
    const auto T = static_cast<int64_t>(r.tokens.size());
    sends_.send(header(kRun, r.slot, r.position, T, r.all_rows ? T : 1), 1, kForwardTag);
    sends_.send(h, 1, kForwardTag);
  }
  StageResult receive() override {
    auto head = header(kRun);
    const int last = world_->size() - 1;
    world_->recv(head, last, kResultTag);
    const auto* v = head.data_ptr<int64_t>();
    StageResult out{v[1], torch::empty({v[4], config().vocab_size}, torch::kFloat)};
    world_->recv(out.logits, last, kResultTag);
    return out;
  }
  void heartbeat() override { sends_.send(header(kHeartbeat), 1, kForwardTag); }
  void stop() override {
    if (stopped_) return;
    stopped_ = true;
    sends_.send(header(kStop), 1, kForwardTag);
    sends_.drain();
  }
  const DecoderConfig& config() const override { return first_->config(); }
  int64_t context() const override { return first_->context(); }
  int64_t slots() const override { return first_->slots(); }

 private:
  std::unique_ptr<GgufStage> first_;
  std::shared_ptr<World> world_;
  SendQueue sends_;
  bool stopped_ = false;
};

}  // namespace

void check_tokens(const std::vector<int64_t>& tokens, int64_t position, const DecoderConfig& config, int64_t context) {
  if (tokens.empty()) throw DataError("no tokens to run");
  const int64_t end = position + static_cast<int64_t>(tokens.size());
  if (end > context)
    throw DataError("the sequence would reach " + std::to_string(end) + " tokens, more than the context of " +
                    std::to_string(context) + ": shorten the prompt or the generation");
  for (const int64_t id : tokens)
    if (id < 0 || id >= config.vocab_size)
      throw DataError("token id " + std::to_string(id) + " is outside the vocabulary of " +
                      std::to_string(config.vocab_size));
}

std::unique_ptr<Pipeline> local_pipeline(std::vector<std::unique_ptr<GgufStage>> stages) {
  if (stages.empty()) throw ConfigError("a pipeline needs at least one stage");
  return std::make_unique<LocalPipeline>(std::move(stages));
}

std::unique_ptr<Pipeline> distributed_pipeline(std::unique_ptr<GgufStage> first, std::shared_ptr<World> world) {
  if (world->rank() != 0 || world->size() < 2) throw ConfigError("the pipeline's driver is rank 0 of several");
  return std::make_unique<DistributedPipeline>(std::move(first), std::move(world));
}

void serve_stage(GgufStage& stage, World& world) {
  const int rank = world.rank();
  const bool last = rank == world.size() - 1;
  const int next = last ? 0 : rank + 1;
  SendQueue sends(world, stage.slots());
  torch::NoGradGuard no_grad;
  for (;;) {
    auto head = header(kRun);
    world.recv(head, rank - 1, kForwardTag);
    const auto* v = head.data_ptr<int64_t>();
    const int64_t kind = v[0], slot = v[1], position = v[2], tokens = v[3], rows = v[4];
    if (kind == kStop || kind == kHeartbeat) {
      if (!last) sends.send(head, next, kForwardTag);
      if (kind == kStop) break;
      continue;
    }
    if (kind != kRun || tokens < 1 || rows < 1 || rows > tokens)
      throw CommError("rank " + std::to_string(rank) + " received a malformed pipeline header from rank " +
                      std::to_string(rank - 1) + ": every rank must run the same fedsplit");
    auto hidden = torch::empty({tokens, stage.config().hidden_size}, torch::kFloat);
    world.recv(hidden, rank - 1, kForwardTag);
    auto out = stage.run_layers(slot, hidden.to(stage.device()), position);
    if (last) {
      out = stage.head(out.slice(0, tokens - rows));
      sends.send(head, next, kResultTag);
      sends.send(out, next, kResultTag);
    } else {
      sends.send(head, next, kForwardTag);
      sends.send(out, next, kForwardTag);
    }
  }
  sends.drain();
}

torch::Tensor PipelineLm::forward(const std::vector<int64_t>& tokens) {
  if (tokens.empty()) return torch::empty({0, config().vocab_size});
  pipeline_.submit({0, position_, tokens, true});
  auto result = pipeline_.receive();
  position_ += static_cast<int64_t>(tokens.size());
  return result.logits;
}

void PipelineLm::truncate(int64_t position) {
  if (position < 0 || position > position_)
    throw ConfigError("cannot truncate a cache of " + std::to_string(position_) + " positions to " +
                      std::to_string(position));
  position_ = position;
}

}  // namespace fedsplit
