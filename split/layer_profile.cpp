#include "split/layer_profile.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <unordered_set>

#include "core/model/decoder.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "split/allocation_counter.h"

namespace fedsplit {

int64_t cut_element_bytes(const std::string& codec, const std::string& where) {
  if (codec == "fp32") return 4;
  if (codec == "fp16" || codec == "bf16") return 2;
  if (codec == "int8") return 1;
  throw ConfigError(where + ": codec '" + codec + "' is not one of fp32|fp16|bf16|int8");
}

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

int64_t bytes_of(const std::vector<torch::Tensor>& tensors, bool trainable_only) {
  int64_t total = 0;
  for (const auto& t : tensors)
    if (!trainable_only || t.requires_grad()) total += t.numel() * static_cast<int64_t>(t.element_size());
  return total;
}

/// One training step, stage by stage: each stage runs on a detached copy of its input so that its
/// forward and its backward can be timed (and its saved memory counted) on their own.
struct StageStep {
  std::vector<double> forward_seconds, backward_seconds;
  std::vector<int64_t> kept_bytes;  // filled when a counter is given
};

StageStep run_step(Decoder& model, const torch::Tensor& ids, const torch::Tensor& targets,
                   const AllocationCounter* counter) {
  const int64_t L = model->num_layers();
  const size_t stages = static_cast<size_t>(L) + 2;
  StageStep step;
  step.forward_seconds.assign(stages, 0.0);
  step.backward_seconds.assign(stages, 0.0);
  step.kept_bytes.assign(stages, 0);
  std::vector<torch::Tensor> inputs(stages), outputs(stages);

  auto timed = [](const std::function<void()>& f) {
    const auto t0 = Clock::now();
    f();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  for (size_t s = 0; s < stages; ++s) {
    const int64_t before = counter ? counter->live_bytes() : 0;
    if (s > 0) inputs[s] = outputs[s - 1].detach().requires_grad_(true);
    step.forward_seconds[s] = timed([&] {
      if (s == 0) {
        outputs[s] = model->embed(ids, 0);
      } else if (s + 1 < stages) {
        const auto block = static_cast<int64_t>(s) - 1;
        outputs[s] = model->run_layers(inputs[s], block, block + 1, 0);
      } else {
        const auto logits = model->head(inputs[s]);
        outputs[s] = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), targets.reshape(-1));
      }
    });
    if (counter) step.kept_bytes[s] = counter->live_bytes() - before;
  }
  for (size_t s = stages; s-- > 0;) {
    step.backward_seconds[s] = timed([&] {
      // Frozen embeddings leave nothing to differentiate in the first stage.
      if (!outputs[s].requires_grad()) return;
      if (s + 1 == stages) outputs[s].backward();
      else outputs[s].backward(inputs[s + 1].grad());
    });
  }
  return step;
}

}  // namespace

LayerProfile profile_layers(Decoder& model, const ProfileOptions& options, const std::string& name) {
  const auto& config = model->options;
  if (options.batch_size < 1 || options.seq_len < 1)
    throw ConfigError(cat("profile: batch size and seq_len must be >= 1 (got ", options.batch_size, " and ",
                          options.seq_len, ")"));
  const int64_t element_bytes = cut_element_bytes(options.codec, "profile");
  if (options.seq_len > config.max_position)
    throw ConfigError(cat("profile: seq_len ", options.seq_len, " exceeds the model's max_position ",
                          config.max_position, ": pass a shorter --seq-len"));
  if (options.warmup < 0 || options.repetitions < 1)
    throw ConfigError(cat("profile: warmup must be >= 0 and repetitions >= 1 (got ", options.warmup, " and ",
                          options.repetitions, ")"));
  for (const auto& p : model->parameters())
    if (!p.device().is_cpu())
      throw ConfigError("profile: the model must be on the CPU (the memory counter sees CPU memory only)");

  // Restore afterwards what profiling changes: threads, mode, gradients.
  const int threads_before = torch::get_num_threads();
  const bool training_before = model->is_training();
  std::vector<torch::Tensor> params = model->parameters();
  std::vector<torch::Tensor> grads_before;
  for (auto& p : params) grads_before.push_back(p.grad());
  struct Restore {
    std::function<void()> f;
    ~Restore() { f(); }
  } restore{[&] {
    torch::set_num_threads(threads_before);
    model->train(training_before);
    for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad() = grads_before[i];
  }};
  if (options.threads > 0) torch::set_num_threads(static_cast<int>(options.threads));
  model->train(true);
  torch::AutoGradMode grad_mode(true);  // a caller's NoGradGuard would hide the graph being measured
  auto clear_grads = [&] {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
  };

  torch::manual_seed(options.seed);
  const auto ids = torch::randint(config.vocab_size, {options.batch_size, options.seq_len}, torch::kLong);
  const auto targets = torch::randint(config.vocab_size, {options.batch_size, options.seq_len}, torch::kLong);

  const int64_t L = model->num_layers();
  const size_t stages = static_cast<size_t>(L) + 2;
  for (int64_t i = 0; i < options.warmup; ++i) {
    clear_grads();
    run_step(model, ids, targets, nullptr);
  }
  StageStep measured;
  {
    clear_grads();
    AllocationCounter counter;
    measured = run_step(model, ids, targets, &counter);
  }
  std::vector<std::vector<double>> forward(stages), backward(stages);
  for (int64_t r = 0; r < options.repetitions; ++r) {
    clear_grads();
    const StageStep step = run_step(model, ids, targets, nullptr);
    for (size_t s = 0; s < stages; ++s) {
      forward[s].push_back(step.forward_seconds[s]);
      backward[s].push_back(step.backward_seconds[s]);
    }
  }

  // Parameters by owner: the embeddings, each block, and the rest (final norm, untied LM head).
  std::vector<std::vector<torch::Tensor>> owned(stages);
  owned[0].push_back(model->token_embedding());
  if (model->position_embedding().defined()) owned[0].push_back(model->position_embedding());
  for (int64_t i = 0; i < L; ++i) owned[static_cast<size_t>(i) + 1] = model->layer(i)->parameters();
  std::unordered_set<const void*> seen;
  for (size_t s = 0; s + 1 < stages; ++s)
    for (const auto& t : owned[s]) seen.insert(t.unsafeGetTensorImpl());
  for (const auto& p : params)
    if (!seen.count(p.unsafeGetTensorImpl())) owned[stages - 1].push_back(p);

  LayerProfile profile;
  profile.model = name;
  profile.options = options;
  profile.hidden_size = config.hidden_size;
  const int64_t cut = options.batch_size * options.seq_len * config.hidden_size * element_bytes;
  for (size_t s = 0; s < stages; ++s) {
    StageProfile st;
    st.name = s == 0 ? "embed" : s + 1 == stages ? "head" : cat("block ", s - 1);
    st.forward_seconds = median(forward[s]);
    st.backward_seconds = median(backward[s]);
    st.param_bytes = bytes_of(owned[s], false);
    st.trainable_bytes = bytes_of(owned[s], true);
    if (s + 1 == stages && config.tie_embeddings) st.tied_bytes = bytes_of({model->token_embedding()}, false);
    st.activation_bytes = measured.kept_bytes[s];
    st.cut_bytes = s + 1 == stages ? 0 : cut;
    profile.stages.push_back(st);
  }
  return profile;
}

std::string LayerProfile::table() const {
  constexpr double kMiB = 1024.0 * 1024.0;
  std::string out = cat("profile of ", model, ": batch ", options.batch_size, " x ", options.seq_len, " tokens, hidden ",
                        hidden_size, ", cut codec ", options.codec, ", median of ", options.repetitions,
                        " steps",
                        options.threads > 0 ? cat(", torch threads ", options.threads) : std::string(), "\n");
  char line[200];
  std::snprintf(line, sizeof line, "%-10s %12s %12s %12s %12s %14s %10s\n", "stage", "forward ms", "backward ms",
                "params MB", "trainable MB", "activations MB", "cut MB");
  out += line;
  for (const auto& s : stages) {
    std::snprintf(line, sizeof line, "%-10s %12.3f %12.3f %12.3f %12.3f %14.3f %10.3f\n", s.name.c_str(),
                  s.forward_seconds * 1e3, s.backward_seconds * 1e3, s.param_bytes / kMiB, s.trainable_bytes / kMiB,
                  s.activation_bytes / kMiB, s.cut_bytes / kMiB);
    out += line;
  }
  return out;
}

}  // namespace fedsplit
