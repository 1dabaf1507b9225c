// Answering prompts through an export's pipeline (`fedsplit serve`, and `generate` on a manifest):
// one request per input line, plain text or a JSON object, answered with one JSON line each in the
// order they came, while up to --micro-batches of them are in flight.
#pragma once
#include <boost/program_options.hpp>

#include <memory>
#include <string>

#include "core/tokenizer/tokenizer.h"
#include "infer/generate.h"
#include "infer/pipeline.h"
#include "launch/line_reader.h"

namespace fedsplit::cli {

/// How a command runs an export's pipeline (flags of `serve`, and of `generate` with a manifest).
struct PipelineFlags {
  int64_t threads = 2;        ///< CPU threads per rank
  int64_t context = 0;        ///< KV cache positions per sequence (0 = the model's)
  int64_t micro_batches = 4;  ///< sequences in flight
  std::string device = "cpu";
  double timeout_s = 600;     ///< every wait between ranks
  bool no_verify = false;     ///< skip the shards' BLAKE2b check
  bool eager = false;         ///< on CUDA, no captured graphs: every op launched as it comes
};
void add_pipeline_flags(boost::program_options::options_description& flags, PipelineFlags& values);

/// What a stage of this command gets from the flags (threads, context, device cuda or cpu, graphs;
/// one slot). ConfigError for an unknown --device.
StageOptions stage_options(const PipelineFlags& flags);

/// LibTorch's intra-op threads for an engine command. One on the CPU: the engine's own pool runs
/// the products there, and LibTorch's OpenMP workers, spinning after each of the few LibTorch ops
/// left, would take a third of the cores' time from it. --threads on CUDA.
void set_engine_threads(const PipelineFlags& flags);

/// Opens `manifest` across this mpirun job's ranks (a world of one: every stage here). Rank 0 gets
/// the pipeline; the other ranks serve their stage until rank 0 stops it, then get nullptr.
std::unique_ptr<Pipeline> open_pipeline_for(const std::string& manifest, const PipelineFlags& flags);

/// Reads requests from `input` until it ends, runs them on `pipeline` and prints the answers to
/// stdout; sends heartbeats while idle every `heartbeat_s`. A request line is a prompt, or
/// {"prompt": ..., "max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed"}
/// (absent keys: `defaults`; seed: defaults.seed + the request's index). Returns the number of
/// requests answered.
int64_t answer_requests(Pipeline& pipeline, const Tokenizer& tokenizer, LineReader& input,
                        const GenerateOptions& defaults, double heartbeat_s);

}  // namespace fedsplit::cli
