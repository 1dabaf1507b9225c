// fedsplit generate: text from a GGUF model through the inference engine, for one --prompt
// (streamed) or a file of requests, one per line ("-" = standard input, answered line by line: the
// serving mode), each answered with one JSON line as serve does (launch/request_lines.h). With --draft, a smaller model of the same
// vocabulary proposes --draft-tokens tokens a round for speculative decoding (the same tokens when
// greedy, the same distribution when sampling; infer/speculative.h). With an export's manifest.json
// as --model, its stages run as a pipeline, one per rank of `mpirun -np S` (or all in this
// process): --prompts then keeps --micro-batches sequences in flight (launch/pipeline_serving.h).
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <memory>

#include "core/util/error.h"
#include "core/util/fs.h"
#include "infer/generate.h"
#include "infer/gguf_runner.h"
#include "infer/pipeline_shards.h"
#include "infer/speculative.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/generation_flags.h"
#include "launch/model_tokenizer.h"
#include "launch/pipeline_serving.h"
#include "launch/request_lines.h"

namespace po = boost::program_options;

namespace fedsplit::cli {
namespace {

// The model, and the draft that speeds it up when --draft is given.
struct Engine {
  CausalLm& model;
  CausalLm* draft = nullptr;
  int64_t draft_tokens = 0;

  SpeculativeGeneration run(const std::vector<int64_t>& prompt, const GenerateOptions& options,
                            const std::function<void(int64_t)>& on_token = {}) const {
    if (draft) return speculative_generate(model, *draft, prompt, options, draft_tokens, on_token);
    SpeculativeGeneration out;
    static_cast<Generation&>(out) = generate(model, prompt, options, on_token);
    return out;
  }
};

// One prompt streamed to stdout as its tokens come; speeds to stderr.
void stream_one(const Engine& engine, const Tokenizer& tokenizer, const std::string& prompt, const GenerateOptions& options) {
  std::vector<int64_t> produced;
  std::string printed;
  const SpeculativeGeneration g = engine.run(prompt_ids(tokenizer, prompt), options, [&](int64_t token) {
    produced.push_back(token);
    const std::string text = text_of(tokenizer, produced);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::cout << text.substr(printed.size()) << std::flush;
      printed = text;
    }
  });
  std::cout << "\n";
  std::cerr << g.prompt_tokens << " prompt tokens at " << g.prompt_tokens / std::max(g.prompt_seconds, 1e-9)
            << " tokens/s, " << g.tokens.size() << " new tokens at " << g.tokens.size() / std::max(g.decode_seconds, 1e-9)
            << " tokens/s\n";
  if (engine.draft)
    std::cerr << "draft: " << g.accepted << " of " << g.drafted << " proposed tokens accepted ("
              << 100 * g.acceptance_rate() << "%, --draft-tokens " << engine.draft_tokens << "), "
              << g.target_forwards << " model passes for " << g.tokens.size() << " tokens\n";
}

// Every request line of `in` answered with one JSON line, flushed at once (launch/request_lines.h).
void answer_lines(const Engine& engine, const Tokenizer& tokenizer, std::istream& in, const GenerateOptions& defaults) {
  int64_t id = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    nlohmann::json out{{"id", id}};
    try {
      const auto [prompt, options] = parse_request(line, request_defaults(defaults, id));
      out["prompt"] = prompt;
      const SpeculativeGeneration g = engine.run(prompt_ids(tokenizer, prompt), options);
      out.update(answer_fields(tokenizer, g));
      if (engine.draft) out.update({{"accepted_fraction", g.acceptance_rate()}, {"drafted", g.drafted}, {"accepted", g.accepted}});
    } catch (const DataError& e) {
      out["error"] = e.what();  // one bad request does not end the others
    }
    std::cout << out.dump() << "\n" << std::flush;
    ++id;
  }
}

}  // namespace

int generate(const Args& args) {
  std::string model, draft_model, tokenizer_path, prompt, prompts;
  int64_t draft_tokens = 4;
  GenerateOptions options;
  PipelineFlags pipeline_flags;
  po::options_description flags("generate");
  flags.add_options()
      ("model", po::value(&model)->required(),
       "a .gguf file holding every layer (fedsplit export gguf or llama.cpp's), or an export's manifest.json")
      ("draft", po::value(&draft_model), "a smaller .gguf of the same vocabulary for speculative decoding (e.g. a distilled student)")
      ("draft-tokens", po::value(&draft_tokens)->default_value(4), "tokens the draft proposes a round (with --draft)")
      ("tokenizer", po::value(&tokenizer_path), "tokenizer file or directory (default: the one beside the model)")
      ("prompt", po::value(&prompt), "the text to continue, streamed to stdout")
      ("prompts", po::value(&prompts),
       "a file of requests, one per line (a prompt, or JSON as serve takes), or - for standard input (serving): "
       "one JSON line each")
      ;
  add_generation_flags(flags, options);
  add_pipeline_flags(flags, pipeline_flags);
  po::variables_map values;
  if (!parse_flags("generate", args, flags, values)) return 0;
  if (prompt.empty() == prompts.empty())
    throw ConfigError("fedsplit generate: pass --prompt TEXT or --prompts FILE (one of them)");
  if (options.max_tokens < 1) throw ConfigError("--max-tokens must be at least 1");
  check_sampling_options(options.sampling);
  if (draft_tokens < 1) throw ConfigError("--draft-tokens must be at least 1, got " + std::to_string(draft_tokens));
  if (!path_exists(model)) throw IoError("--model " + model + ": no such file");
  if (!draft_model.empty() && !path_exists(draft_model)) throw IoError("--draft " + draft_model + ": no such file");
  const auto tokenizer = tokenizer_for_model(model, tokenizer_path);
  const StageOptions runner_options = stage_options(pipeline_flags);
  set_engine_threads(pipeline_flags);

  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<CausalLm> target;
  if (is_manifest_path(model)) {
    pipeline = open_pipeline_for(model, pipeline_flags);
    if (!pipeline) return 0;  // a stage rank: rank 0 has stopped the pipeline
    if (!prompts.empty() && draft_model.empty()) {  // many sequences in flight
      std::unique_ptr<LineReader> input = prompts == "-" ? std::make_unique<LineReader>(0)
                                                         : std::make_unique<LineReader>(prompts, "--prompts");
      answer_requests(*pipeline, *tokenizer, *input, options, pipeline_flags.timeout_s / 3);
      pipeline->stop();
      return 0;
    }
    target = std::make_unique<PipelineLm>(*pipeline);
  } else {
    target = std::make_unique<GgufRunner>(model, runner_options);
  }
  std::unique_ptr<GgufRunner> draft;
  Engine engine{*target};
  if (!draft_model.empty()) {
    draft = std::make_unique<GgufRunner>(draft_model, runner_options);
    check_draft(*target, *draft, draft_tokens);
    engine.draft = draft.get();
    engine.draft_tokens = draft_tokens;
  }
  if (!prompt.empty()) {
    stream_one(engine, *tokenizer, prompt, options);
  } else if (prompts == "-") {
    answer_lines(engine, *tokenizer, std::cin, options);
  } else {
    std::ifstream in(prompts);
    if (!in) throw IoError("--prompts " + prompts + ": cannot read it");
    answer_lines(engine, *tokenizer, in, options);
  }
  if (pipeline) pipeline->stop();
  return 0;
}

}  // namespace fedsplit::cli
