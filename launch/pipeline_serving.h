// Answering prompts through an export's pipeline (`fedsplit serve`, and `generate` on a manifest):
// one request per input line, plain text or a JSON object, answered with one JSON line each in the
// order they came, while up to --micro-batches of them are in flight.
#pragma once
#include <string>

#include "core/tokenizer/tokenizer.h"
#include "infer/generate.h"
#include "infer/pipeline.h"
#include "launch/line_reader.h"

namespace fedsplit::cli {

/// Reads requests from `input` until it ends, runs them on `pipeline` and prints the answers to
/// stdout; sends heartbeats while idle every `heartbeat_s`. A request line is a prompt, or
/// {"prompt": ..., "max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed"}
/// (absent keys: `defaults`; seed: defaults.seed + the request's index). Returns the number of
/// requests answered.
int64_t answer_requests(Pipeline& pipeline, const Tokenizer& tokenizer, LineReader& input,
                        const GenerateOptions& defaults, double heartbeat_s);

}  // namespace fedsplit::cli
