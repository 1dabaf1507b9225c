#include "launch/pipeline_serving.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <iostream>
#include <map>

#include "core/util/error.h"
#include "infer/batch_generate.h"

namespace fedsplit::cli {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<int64_t> encode_prompt(const Tokenizer& tokenizer, const std::string& text) {
  std::vector<int64_t> out;
  if (tokenizer.bos_id() >= 0) out.push_back(tokenizer.bos_id());
  for (const auto id : tokenizer.encode(text)) out.push_back(id);
  return out;
}

// The prompt and options of one request line; DataError naming the key for a malformed one.
std::pair<std::string, GenerateOptions> parse_request(const std::string& line, GenerateOptions options) {
  if (line.empty() || line[0] != '{') return {line, options};
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception&) {
    throw DataError("the request starts with '{' but is not JSON: send a plain prompt or a JSON object");
  }
  std::string prompt;
  try {
    for (const auto& [key, value] : j.items()) {
      if (key == "prompt") prompt = value.get<std::string>();
      else if (key == "max_tokens") options.max_tokens = value.get<int64_t>();
      else if (key == "temperature") options.sampling.temperature = value.get<double>();
      else if (key == "top_k") options.sampling.top_k = value.get<int64_t>();
      else if (key == "top_p") options.sampling.top_p = value.get<double>();
      else if (key == "repetition_penalty") options.sampling.repetition_penalty = value.get<double>();
      else if (key == "seed") options.sampling.seed = value.get<uint64_t>();
      else
        throw DataError("unknown key '" + key +
                        "' in the request: use prompt, max_tokens, temperature, top_k, top_p, repetition_penalty, seed");
    }
  } catch (const nlohmann::json::exception& e) {
    throw DataError(std::string("a request value has the wrong type (") + e.what() + ")");
  }
  if (prompt.empty()) throw DataError("the request has no \"prompt\"");
  if (options.max_tokens < 1) throw DataError("\"max_tokens\" must be at least 1");
  return {prompt, options};
}

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
        GenerateOptions options = defaults;
        options.sampling.seed = defaults.sampling.seed + static_cast<uint64_t>(id);
        auto [prompt, request_options] = parse_request(*line, options);
        prompts[id] = prompt;
        generator.add({id, encode_prompt(tokenizer, prompt), request_options});
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
        const Generation& g = r.generation;
        new_tokens += static_cast<int64_t>(g.tokens.size());
        answer.update({{"completion", tokenizer.decode(std::vector<int32_t>(g.tokens.begin(), g.tokens.end()))},
                       {"prompt_tokens", g.prompt_tokens},
                       {"new_tokens", g.tokens.size()},
                       {"seconds", g.prompt_seconds + g.decode_seconds}});
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
