#include "launch/pipeline_serving.h"

#include <nlohmann/json.hpp>

#include <torch/utils.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>

#include "core/util/error.h"
#include "core/comm/world.h"
#include "infer/batch_generate.h"
#include "infer/pipeline_session.h"
#include "launch/model_tokenizer.h"
#include "launch/request_lines.h"

namespace fedsplit::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Answers printed in request order as they become ready.
class InOrderPrinter {
 public:
  void put(int64_t id, nlohmann::json answer) {
    ready_[id] = std::move(answer);
    for (auto it = ready_.find(next_); it != ready_.end(); it = ready_.find(next_)) {
      std::cout << it->second.dump() << "\n" << std::flush;
      ready_.erase(it);
      ++next_;
    }
  }

 private:
  std::map<int64_t, nlohmann::json> ready_;
  int64_t next_ = 0;
};

}  // namespace

void add_pipeline_flags(boost::program_options::options_description& flags, PipelineFlags& v) {
  namespace po = boost::program_options;
  flags.add_options()
      ("threads", po::value(&v.threads)->default_value(v.threads), "CPU threads (per rank)")
      ("context", po::value(&v.context)->default_value(v.context), "KV cache positions per sequence (0 = the model's)")
      ("device", po::value(&v.device)->default_value(v.device), "cpu, or cuda (under mpirun, rank r on CUDA device r)")
      ("micro-batches", po::value(&v.micro_batches)->default_value(v.micro_batches),
       "with a manifest: sequences in flight at once (each stage keeps a KV cache per sequence)")
      ("timeout", po::value(&v.timeout_s)->default_value(v.timeout_s),
       "with a manifest: seconds a rank waits for another before failing")
      ("no-verify", po::bool_switch(&v.no_verify), "with a manifest: skip the BLAKE2b check of the shards")
      ("eager", po::bool_switch(&v.eager),
       "with --device cuda: launch every op as it comes instead of replaying each token's step as a captured "
       "CUDA graph (slower; for comparison)");
}

StageOptions stage_options(const PipelineFlags& flags) {
  if (flags.device != "cpu" && flags.device != "cuda")
    throw ConfigError("--device " + flags.device + " is unknown: use cpu or cuda");
  StageOptions options;
  options.threads = static_cast<int>(std::max<int64_t>(1, flags.threads));
  options.context = flags.context;
  options.device = flags.device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  options.cuda_graphs = !flags.eager;
  return options;
}

void set_engine_threads(const PipelineFlags& flags) {
  torch::set_num_threads(flags.device == "cpu" ? 1 : static_cast<int>(std::max<int64_t>(1, flags.threads)));
}

std::unique_ptr<Pipeline> open_pipeline_for(const std::string& manifest, const PipelineFlags& flags) {
  if (flags.micro_batches < 1) throw ConfigError("--micro-batches must be at least 1");
  if (!(flags.timeout_s > 0)) throw ConfigError("--timeout must be a positive number of seconds");
  if (flags.device == "cuda") {
    // A pipeline's NCCL messages are one row of activations or logits, which one channel carries as
    // fast as many; every channel of a posted receive is a thread block spinning on the GPU beside
    // the stage's work. One channel made 2 stages on two H200s 1.33x faster (NCCL reads this when
    // the first send creates its communicator).
    setenv("NCCL_MAX_NCHANNELS", "1", /*overwrite=*/0);
    // A stage's streams (compute, transfers, one per NCCL communicator) share the GPU's hardware
    // queues, 8 by default: a receive waiting for its peer then holds up the steps queued behind
    // it in the same queue. 32 queues made 4 stages on four H200s 1.13x faster, and 2 made them
    // 0.74x (read when the CUDA context is made, which the World's creation below does).
    setenv("CUDA_DEVICE_MAX_CONNECTIONS", "32", /*overwrite=*/0);
  }  // values the user set stay
  CommOptions comm;
  comm.backend = flags.device == "cuda" ? "auto" : "gloo";
  comm.timeout_s = flags.timeout_s;
  PipelineOptions options;
  options.stage = stage_options(flags);
  options.stage.slots = flags.micro_batches;
  options.device = flags.device;
  options.verify_hash = !flags.no_verify;
  return open_pipeline(manifest, options, World::create(comm));
}

int64_t answer_requests(Pipeline& pipeline, const Tokenizer& tokenizer, LineReader& input,
                        const GenerateOptions& defaults, double heartbeat_s) {
  BatchGenerator generator(pipeline);
  InOrderPrinter printer;
  std::map<int64_t, std::string> prompts;
  int64_t requests = 0, new_tokens = 0;
  const int heartbeat_ms = static_cast<int>(heartbeat_s * 1000);
  const auto started = Clock::now();
  while (!input.done() || !generator.idle()) {
    // Wait for input only when there is nothing else to do, and then no longer than a heartbeat.
    int wait_ms = generator.idle() ? heartbeat_ms : 0;
    while (auto line = input.next(wait_ms)) {
      wait_ms = 0;
      if (line->empty()) continue;
      const int64_t id = requests++;
      try {
        auto [prompt, request_options] = parse_request(*line, request_defaults(defaults, id));
        prompts[id] = prompt;
        generator.add({id, prompt_ids(tokenizer, prompt), request_options});
      } catch (const DataError& e) {
        printer.put(id, {{"id", id}, {"error", e.what()}});
      }
    }
    if (generator.idle()) {
      if (!input.done()) pipeline.heartbeat();
      continue;
    }
    for (auto& r : generator.step()) {
      nlohmann::json answer{{"id", r.id}, {"prompt", prompts[r.id]}};
      if (!r.error.empty()) {
        answer["error"] = r.error;
      } else {
        new_tokens += static_cast<int64_t>(r.generation.tokens.size());
        answer.update(answer_fields(tokenizer, r.generation));
      }
      prompts.erase(r.id);
      printer.put(r.id, std::move(answer));
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::cerr << requests << " requests, " << new_tokens << " new tokens in " << seconds << " s: "
            << new_tokens / std::max(seconds, 1e-9) << " tokens/s with " << pipeline.slots()
            << " sequences in flight\n";
  return requests;
}

}  // namespace fedsplit::cli
