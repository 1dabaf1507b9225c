#include "infer/engine_profile.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "core/util/error.h"
#include "infer/gguf_stage.h"

namespace fedsplit {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

EngineProfile profile_engine(const std::string& path, const EngineProfileOptions& options) {
  if (options.repetitions < 1)
    throw ConfigError("--repetitions " + std::to_string(options.repetitions) + ": time at least one step");
  if (options.position < 0) throw ConfigError("profile position " + std::to_string(options.position) + " is negative");
  StageOptions so;
  so.threads = options.threads;
  so.slots = 1;
  // One untimed step and the timed ones follow the prompt that fills the cache.
  so.context = options.position + options.repetitions + 1;
  GgufStage stage(path, so);
  if (!stage.first() || !stage.last())
    throw ConfigError(path + ": a stage file of an export (blocks [" + std::to_string(stage.layer_begin()) + ", " +
                      std::to_string(stage.layer_end()) + ")): plan infer profiles the whole model, give its single GGUF file");
  const DecoderConfig& config = stage.config();

  EngineProfile p;
  p.model = path;
  p.architecture = stage.architecture();
  p.hidden_size = config.hidden_size;
  p.max_position = config.max_position;
  p.threads = options.threads;
  // A small model's context may be shorter than the requested position: time as deep as it allows.
  p.position = std::max<int64_t>(0, std::min(options.position, config.max_position - options.repetitions - 1));
  const int64_t token = std::min<int64_t>(1, config.vocab_size - 1);

  torch::NoGradGuard no_grad;
  if (p.position > 0) stage.run_layers(0, stage.embed(std::vector<int64_t>(size_t(p.position), token)), 0);
  const int64_t L = stage.layer_end() - stage.layer_begin();
  std::vector<std::vector<double>> layer_times(static_cast<size_t>(L));
  std::vector<double> embed_times, head_times;
  for (int64_t step = 0; step <= options.repetitions; ++step) {
    const bool timed = step > 0;
    const int64_t position = p.position + step;
    auto start = Clock::now();
    torch::Tensor h = stage.embed({token});
    if (timed) embed_times.push_back(seconds_since(start));
    for (int64_t l = 0; l < L; ++l) {
      start = Clock::now();
      h = stage.run_layer(stage.layer_begin() + l, 0, h, position);
      if (timed) layer_times[size_t(l)].push_back(seconds_since(start));
    }
    start = Clock::now();
    const torch::Tensor logits = stage.head(h);
    if (timed) head_times.push_back(seconds_since(start));
  }

  for (int64_t l = 0; l < L; ++l)
    p.layers.push_back({median(layer_times[size_t(l)]), stage.layer_weight_bytes(stage.layer_begin() + l),
                        stage.kv_bytes_per_token()});
  p.embed_seconds = median(embed_times);
  p.head_seconds = median(head_times);
  p.embed_weight_bytes = stage.embed_weight_bytes();
  p.head_weight_bytes = stage.head_weight_bytes();
  // A tied one-stage file has no output.weight; a pipeline export gives the last stage a copy.
  p.head_copy_bytes = config.tie_embeddings ? p.embed_weight_bytes : 0;
  p.activation_bytes = config.hidden_size * int64_t(sizeof(float));
  return p;
}

std::string EngineProfile::table() const {
  std::ostringstream out;
  char line[160];
  std::snprintf(line, sizeof line, "profile of %s (%s, hidden %lld): one decode step at position %lld, %d thread%s, median\n",
                model.c_str(), architecture.c_str(), static_cast<long long>(hidden_size),
                static_cast<long long>(position), threads, threads == 1 ? "" : "s");
  out << line;
  std::snprintf(line, sizeof line, "%-10s %12s %12s %16s\n", "layer", "ms/token", "weights MB", "cache KB/token");
  out << line;
  auto row = [&](const std::string& name, double seconds, int64_t bytes, int64_t kv) {
    std::snprintf(line, sizeof line, "%-10s %12.3f %12.2f %16.2f\n", name.c_str(), seconds * 1e3,
                  static_cast<double>(bytes) / (1 << 20), static_cast<double>(kv) / 1024);
    out << line;
  };
  double total_seconds = embed_seconds + head_seconds;
  int64_t total_bytes = embed_weight_bytes + head_weight_bytes, total_kv = 0;
  row("embed", embed_seconds, embed_weight_bytes, 0);
  for (size_t i = 0; i < layers.size(); ++i) {
    row("block " + std::to_string(i), layers[i].seconds, layers[i].weight_bytes, layers[i].kv_bytes_per_token);
    total_seconds += layers[i].seconds;
    total_bytes += layers[i].weight_bytes;
    total_kv += layers[i].kv_bytes_per_token;
  }
  row("head", head_seconds, head_weight_bytes, 0);
  row("total", total_seconds, total_bytes, total_kv);
  if (head_copy_bytes > 0)
    out << "(tied embeddings: a last stage other than the first also holds a " << head_copy_bytes / 1024
        << " KB copy of the embedding as its head)\n";
  return out.str();
}

InferProblem infer_problem(const EngineProfile& profile, const InferDevicesFile& devices, InferObjective objective,
                           int64_t context, int64_t sequences) {
  InferProblem p;
  p.layers = profile.layers;
  p.embed_seconds = profile.embed_seconds;
  p.head_seconds = profile.head_seconds;
  p.embed_weight_bytes = profile.embed_weight_bytes;
  p.head_weight_bytes = profile.head_weight_bytes;
  p.head_copy_bytes = profile.head_copy_bytes;
  p.activation_bytes = profile.activation_bytes;
  p.context = context > 0 ? context : profile.max_position;
  p.sequences = sequences;
  p.objective = objective;
  apply_devices(devices, p);
  return p;
}

}  // namespace fedsplit
