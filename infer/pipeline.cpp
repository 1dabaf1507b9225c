#include "infer/pipeline.h"

#include <torch/torch.h>

#include <chrono>
#include <deque>
#include <iostream>

#include "core/comm/world.h"
#include "core/util/error.h"
#include "infer/device_sync.h"

namespace fedsplit {
namespace {

// kHello goes once through every link before the first request (rank 0 -> ... -> last -> rank 0),
// so that NCCL makes its communicators then, not inside the first request's time.
enum Kind : int64_t { kRun = 0, kHeartbeat = 1, kStop = 2, kHello = 3 };
constexpr int kForwardTag = 0;  // stage s -> s+1
constexpr int kResultTag = 1;   // last stage -> rank 0, over the results world
constexpr int64_t kHeaderFloats = 5;
constexpr int64_t kExactInFloat = int64_t(1) << 24;  // every integer up to here is exact as a float

struct Header {
  int64_t kind = kRun, slot = 0, position = 0, tokens = 0, rows = 0;
};

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
  std::deque<World::Pending> pending_;
};

// Where a rank's time goes, reported when it stops: the host's phases and, on CUDA, where the host
// only queues the work, the device's time on the steps.
struct StagePhases {
  using Clock = std::chrono::steady_clock;
  explicit StagePhases(const torch::Device& device) : device_busy(device) {}
  double waiting = 0, computing = 0, handing_on = 0;
  double driving = 0;  // rank 0: between its calls (sampling, reading requests)
  int64_t steps = 0;
  Clock::time_point mark = Clock::now();
  DeviceBusyClock device_busy;
  // Starts counting afresh (once the links are up, so that loading and joining are not reported).
  void restart() {
    waiting = computing = handing_on = driving = 0;
    mark = Clock::now();
  }
  // Adds the time since the last lap to `phase`.
  void lap(double& phase) {
    const auto now = Clock::now();
    phase += std::chrono::duration<double>(now - mark).count();
    mark = now;
  }
  void report(int rank, const char* waiting_for) {
    std::cerr << "stage " << rank << ": " << steps << " steps; " << waiting << " s " << waiting_for << ", " << computing
              << " s computing, " << handing_on << " s handing on";
    if (rank == 0) std::cerr << ", " << driving << " s driving";
    if (device_busy.measures()) std::cerr << "; the GPU was busy " << device_busy.seconds() << " s of them";
    std::cerr << "\n";
  }
};

// A message is a packet of kHeaderFloats + width floats: the header, then the payload's row when
// it has exactly one (a decode step: one message per hop); a longer payload [rows, width] follows
// as a message of its own. Header values are floats, exact below 2^24.
void send_packet(SendQueue& sends, int dst, int tag, const Header& h, const torch::Tensor& payload, int64_t width) {
  for (const int64_t v : {h.slot, h.position, h.tokens, h.rows})
    if (v < 0 || v >= kExactInFloat) throw ConfigError("pipeline header value " + std::to_string(v) + " is out of range");
  const auto options = payload.defined() ? payload.options() : torch::TensorOptions(torch::kFloat);
  auto packet = torch::zeros({kHeaderFloats + width}, options);
  const auto header = torch::tensor({float(h.kind), float(h.slot), float(h.position), float(h.tokens), float(h.rows)});
  packet.slice(0, 0, kHeaderFloats).copy_(to_device_async(header, packet.device()));
  const int64_t rows = payload.defined() ? payload.size(0) : 0;
  if (rows == 1) packet.slice(0, kHeaderFloats).copy_(payload.reshape({-1}));
  sends.send(packet, dst, tag);
  if (rows > 1) sends.send(payload, dst, tag);
}

CommError malformed(const World& world, int src) {
  return CommError("rank " + std::to_string(world.rank()) + " received a malformed pipeline message from rank " +
                   std::to_string(src) + ": every rank must run the same fedsplit");
}

// The header of a received packet; CommError for a run message whose counts make no sense.
Header read_header(const torch::Tensor& packet, const World& world, int src) {
  const float* v = packet.data_ptr<float>();
  const Header h{int64_t(v[0]), int64_t(v[1]), int64_t(v[2]), int64_t(v[3]), int64_t(v[4])};
  if (h.kind < kRun || h.kind > kHello) throw malformed(world, src);
  if (h.kind == kRun && (h.tokens < 1 || h.rows < 1 || h.rows > h.tokens)) throw malformed(world, src);
  return h;
}

// The header and payload [payload_rows, width] (payload_rows from the header: rows for results,
// tokens between stages; undefined without one).
std::pair<Header, torch::Tensor> recv_packet(World& world, int src, int tag, int64_t width, bool result) {
  auto packet = torch::empty({kHeaderFloats + width}, torch::kFloat);
  world.recv(packet, src, tag);
  const Header h = read_header(packet, world, src);
  if (h.kind != kRun) return {h, torch::Tensor()};
  const int64_t rows = result ? h.rows : h.tokens;
  if (rows == 1) return {h, packet.slice(0, kHeaderFloats).reshape({1, width})};
  auto payload = torch::empty({rows, width}, torch::kFloat);
  world.recv(payload, src, tag);
  return {h, payload};
}

// A second world of the same ranks, which carries the logits from the last rank to rank 0: over
// NCCL, messages between two ranks of one world share a stream, so with two stages rank 0's next
// activations would wait behind its receive of the previous logits. Every rank makes it.
std::shared_ptr<World> results_world(World& world) {
  std::vector<int> ranks(static_cast<size_t>(world.size()));
  for (int r = 0; r < world.size(); ++r) ranks[static_cast<size_t>(r)] = r;
  return world.subgroup(ranks, "pipeline-results");
}

class LocalPipeline final : public Pipeline {
 public:
  explicit LocalPipeline(std::vector<std::unique_ptr<GgufStage>> stages) : stages_(std::move(stages)) {}
  void submit(const StageRequest& r) override {
    check_tokens(r.tokens, r.position, config(), context());
    torch::NoGradGuard no_grad;
    torch::Tensor h = stages_.front()->embed(r.tokens);
    for (auto& stage : stages_) h = stage->run_layers(r.slot, h.to(stage->device()), r.position);
    if (!r.all_rows) h = h.slice(0, h.size(0) - 1);
    // Not waited for here: the host samples one sequence while the device runs the others.
    results_.emplace_back(r.slot, HostCopy(stages_.back()->head(h)));
  }
  StageResult receive() override {
    if (results_.empty()) throw ConfigError("receive() with nothing submitted");
    auto [slot, logits] = std::move(results_.front());
    results_.pop_front();
    return {slot, logits.wait()};
  }
  void heartbeat() override {}
  void stop() override {}
  const DecoderConfig& config() const override { return stages_.front()->config(); }
  int64_t context() const override { return stages_.front()->context(); }
  int64_t slots() const override { return stages_.front()->slots(); }

 private:
  std::vector<std::unique_ptr<GgufStage>> stages_;
  std::deque<std::pair<int64_t, HostCopy>> results_;  // slot, logits
};

class DistributedPipeline final : public Pipeline {
 public:
  DistributedPipeline(std::unique_ptr<GgufStage> first, std::shared_ptr<World> world)
      : first_(std::move(first)),
        world_(std::move(world)),
        results_(results_world(*world_)),
        phases_(first_->device()),
        sends_(*world_, first_->slots()) {
    send_packet(sends_, 1, kForwardTag, {kHello}, {}, config().hidden_size);
    const int last = world_->size() - 1;
    if (recv_packet(*results_, last, kResultTag, config().vocab_size, /*result=*/true).first.kind != kHello)
      throw malformed(*world_, last);
    phases_.restart();
  }
  ~DistributedPipeline() override {
    try {
      stop();
    } catch (...) {  // the error that unwinds us is the one to report
    }
  }
  void submit(const StageRequest& r) override {
    check_tokens(r.tokens, r.position, config(), context());
    torch::NoGradGuard no_grad;
    phases_.lap(phases_.driving);
    phases_.device_busy.start();
    const auto h = first_->run_layers(r.slot, first_->embed(r.tokens), r.position);
    phases_.device_busy.stop();
    phases_.lap(phases_.computing);
    const auto T = static_cast<int64_t>(r.tokens.size());
    const int64_t rows = r.all_rows ? T : 1;
    send_packet(sends_, 1, kForwardTag, {kRun, r.slot, r.position, T, rows}, h, h.size(1));
    posted_.push_back(post_result(rows));
    phases_.lap(phases_.handing_on);
    ++phases_.steps;
  }
  StageResult receive() override {
    if (posted_.empty()) throw ConfigError("receive() with nothing submitted");
    phases_.lap(phases_.driving);
    PostedResult p = std::move(posted_.front());
    posted_.pop_front();
    const int last = world_->size() - 1;
    p.packet_done.wait();
    const Header h = read_header(p.packet, *world_, last);
    if (h.kind != kRun) throw CommError("rank 0 expected logits from the last stage, got a control message");
    if (h.rows != p.rows) throw malformed(*world_, last);
    torch::Tensor logits = p.packet.slice(0, kHeaderFloats).reshape({1, -1});
    if (p.rows > 1) {
      p.payload_done.wait();
      logits = p.payload;
    }
    phases_.lap(phases_.waiting);
    return {h.slot, logits};
  }
  void heartbeat() override { send_packet(sends_, 1, kForwardTag, {kHeartbeat}, {}, config().hidden_size); }
  void stop() override {
    if (stopped_) return;
    stopped_ = true;
    send_packet(sends_, 1, kForwardTag, {kStop}, {}, config().hidden_size);
    sends_.drain();
    phases_.report(0, "waiting for logits");
  }
  const DecoderConfig& config() const override { return first_->config(); }
  int64_t context() const override { return first_->context(); }
  int64_t slots() const override { return first_->slots(); }

 private:
  std::unique_ptr<GgufStage> first_;
  // The receives of a submitted request's logits, posted as it leaves (results come back in order),
  // so that the last stage's answers never wait for rank 0 to ask for them: over NCCL that wait
  // would hold up the last stage's next answer, which shares the stream.
  struct PostedResult {
    int64_t rows = 1;
    torch::Tensor packet, payload;
    World::Pending packet_done, payload_done;
  };
  PostedResult post_result(int64_t rows) {
    const int last = world_->size() - 1;
    const int64_t vocab = config().vocab_size;
    PostedResult p;
    p.rows = rows;
    p.packet = torch::empty({kHeaderFloats + vocab}, torch::kFloat);
    p.packet_done = results_->irecv(p.packet, last, kResultTag);
    if (rows > 1) {
      p.payload = torch::empty({rows, vocab}, torch::kFloat);
      p.payload_done = results_->irecv(p.payload, last, kResultTag);
    }
    return p;
  }

  std::shared_ptr<World> world_;
  std::shared_ptr<World> results_;
  StagePhases phases_;
  std::deque<PostedResult> posted_;
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
  // The last stage answers rank 0 over the results world; the others hand on to the next rank.
  const auto results = results_world(world);
  const int next = last ? 0 : rank + 1;
  SendQueue sends(last ? *results : world, stage.slots());
  torch::NoGradGuard no_grad;
  const int64_t hidden = stage.config().hidden_size, vocab = stage.config().vocab_size;
  StagePhases phases(stage.device());
  for (;;) {
    auto [h, input] = recv_packet(world, rank - 1, kForwardTag, hidden, /*result=*/false);
    phases.lap(phases.waiting);
    if (h.kind != kRun) {
      if (!last) send_packet(sends, next, kForwardTag, h, {}, hidden);
      else if (h.kind == kHello) send_packet(sends, next, kResultTag, h, {}, vocab);
      if (h.kind == kHello) phases.restart();
      if (h.kind == kStop) break;
      continue;
    }
    phases.device_busy.start();
    auto out = stage.run_layers(h.slot, to_device_async(input, stage.device()), h.position);
    if (last) out = stage.head(out.slice(0, h.tokens - h.rows));
    phases.device_busy.stop();
    phases.lap(phases.computing);
    send_packet(sends, next, last ? kResultTag : kForwardTag, h, out, last ? vocab : hidden);
    phases.lap(phases.handing_on);
    ++phases.steps;
  }
  sends.drain();
  phases.report(rank, "waiting for input");
}

torch::Tensor PipelineLm::forward(const std::vector<int64_t>& tokens) { return run(tokens, true); }
torch::Tensor PipelineLm::forward_last(const std::vector<int64_t>& tokens) { return run(tokens, false); }

torch::Tensor PipelineLm::run(const std::vector<int64_t>& tokens, bool all_rows) {
  if (tokens.empty()) return torch::empty({0, config().vocab_size});
  pipeline_.submit({0, position_, tokens, all_rows});
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
