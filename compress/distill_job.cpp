#include "compress/distill_job.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/config/recipe.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"
#include "core/util/memory.h"
#include "peft/lora.h"
#include "peft/method.h"
#include "train/model_io.h"

namespace fedsplit {
namespace {

// "layers.3.mlp.up_proj.weight" -> {3, "mlp.up_proj.weight"} for the block container `container`
// ("layers", or "h" for gpt2); {-1, name} for parameters outside the blocks.
std::pair<int64_t, std::string> split_block_name(const std::string& name, const std::string& container) {
  const std::string prefix = container + ".";
  if (name.rfind(prefix, 0) != 0) return {-1, name};
  const auto dot = name.find('.', prefix.size());
  return {std::stoll(name.substr(prefix.size(), dot - prefix.size())), name.substr(dot + 1)};
}

int64_t parameter_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

void bind_distill_options(Recipe& r, DistillOptions& o) {
  r.add("distill.teacher", &o.teacher, "run.mode = distill (required), or qat (optional): the teacher, a HF model directory or checkpoint.h5");
  r.add("distill.teacher_adapter", &o.teacher_adapter, "PEFT adapter directory applied to the teacher (LoRA merged)");
  r.add("distill.alpha", &o.loss.alpha, "weight of the teacher's soft targets; 1 - alpha weighs the labels", 0.0, 1.0);
  r.add("distill.temperature", &o.loss.temperature, "softmax temperature of the soft targets (KL scaled by its square)",
        1e-3, 1e3);
  r.add_choice("distill.divergence", &o.loss.divergence, {"forward", "reverse"},
               "forward = KL(teacher || student), reverse = KL(student || teacher)");
  r.add("distill.hidden_weight", &o.loss.hidden_weight,
        "weight of the hidden-state MSE through learned projections (0 = off)", 0.0, 1e6);
  r.add_choice("distill.student_init", &o.student_init, {"scratch", "teacher"},
               "scratch: [model] (or model.init) is the student; teacher: cut from the teacher's blocks");
  r.add("distill.student_layers", &o.student_layers,
        "blocks of a student cut from the teacher, evenly spaced (0 = half the teacher's)", 0, 1024);
  r.add("distill.layer_map", &o.layer_map, "hidden-state pairs student:teacher, e.g. '0:1 1:3' (empty = evenly spaced)");
}

Decoder load_teacher(const DistillOptions& o) {
  if (o.teacher.empty())
    throw ConfigError("distill.teacher is required: set it to the teacher's HF directory or checkpoint.h5 "
                      "(e.g. runs/pretrain-base/model)");
  Decoder teacher = load_any_model(o.teacher);
  if (!o.teacher_adapter.empty()) {
    load_peft_adapter(teacher, o.teacher_adapter);
    if (!lora_modules(teacher).empty()) merge_and_unload(teacher);
  }
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  teacher->eval();
  return teacher;
}

std::vector<int64_t> evenly_spaced_layers(int64_t keep, int64_t total) {
  TORCH_CHECK(keep >= 1 && keep <= total, "evenly_spaced_layers: keep ", keep, " of ", total);
  if (keep == 1) return {total - 1};
  std::vector<int64_t> out;
  // round(i * (total - 1) / (keep - 1)), halves up, in integers.
  for (int64_t i = 0; i < keep; ++i) out.push_back((2 * i * (total - 1) + (keep - 1)) / (2 * (keep - 1)));
  return out;
}

Decoder student_from_teacher(const Decoder& teacher, const std::vector<int64_t>& layers) {
  DecoderConfig config = teacher->options;
  config.num_layers = static_cast<int64_t>(layers.size());
  Decoder student(config, /*init=*/false);
  const std::string container = config.family == ModelFamily::gpt2 ? "h" : "layers";
  std::map<std::string, torch::Tensor> source;
  for (const auto& item : teacher->named_parameters()) source.emplace(item.key(), item.value());
  torch::NoGradGuard no_grad;
  size_t copied = 0;
  for (auto& item : student->named_parameters()) {
    auto [block, rest] = split_block_name(item.key(), container);
    const std::string from =
        block < 0 ? item.key() : container + "." + std::to_string(layers[static_cast<size_t>(block)]) + "." + rest;
    auto it = source.find(from);
    if (it == source.end() || !it->second.sizes().equals(item.value().sizes()))
      throw ConfigError("distill.student_init = teacher: the teacher has no plain parameter '" + from +
                        "' to copy (an adapter that does not merge?); use a merged teacher or student_init = scratch");
    item.value().copy_(it->second);
    ++copied;
  }
  // Parameters of the teacher outside any plain decoder (prefix or bottleneck adapters) cannot be cut.
  size_t expected = 0;
  for (const auto& item : teacher->named_parameters()) {
    const auto block = split_block_name(item.key(), container).first;
    if (block < 0 || std::find(layers.begin(), layers.end(), block) != layers.end()) ++expected;
  }
  if (expected != copied)
    throw ConfigError("distill.student_init = teacher: the teacher holds adapter parameters a plain student cannot "
                      "take; merge its adapter (fedsplit peft merge) or use student_init = scratch");
  student->set_prefix_key_values(torch::Tensor());
  student->train();
  return student;
}

torch::Tensor forward_with_hidden(Decoder& model, const torch::Tensor& ids, std::vector<torch::Tensor>* hidden) {
  if (!hidden) return model->forward(ids);
  const int64_t offset = model->prefix_length();
  auto h = model->embed(ids, offset);
  for (int64_t i = 0; i < model->num_layers(); ++i) {
    h = model->run_layers(h, i, i + 1, offset);
    hidden->push_back(h);
  }
  return model->head(h);
}

double evaluate_teacher_kl(Decoder& teacher, Decoder& student, const std::vector<Batch>& batches, torch::Device device) {
  torch::NoGradGuard no_grad;
  const bool was_training = student->is_training();
  student->eval();
  DistillLossOptions plain;
  plain.temperature = 1.0;
  plain.divergence = "forward";
  double total = 0;
  int64_t tokens = 0;
  for (const auto& b : batches) {
    const auto ids = b.input_ids.to(device);
    const auto kl = soft_kl_per_token(student->forward(ids), teacher->forward(ids), plain);
    total += kl.sum().item<double>();
    tokens += kl.numel();
  }
  if (was_training) student->train();
  if (tokens == 0) throw DataError("no held-out batches to evaluate: raise data.val_fraction or lower data.seq_len");
  return total / static_cast<double>(tokens);
}

TrainResult run_distill_job(const LmJobOptions& o, const DistillOptions& d, const std::string& recipe_ini, bool resume) {
  validate(d.loss);
  if (d.student_init == "teacher" && !o.model.init.empty())
    throw ConfigError("distill.student_init = teacher cuts the student from the teacher: leave model.init empty "
                      "(or use student_init = scratch to start from model.init)");
  Decoder teacher = load_teacher(d);
  const int64_t teacher_layers = teacher->num_layers();
  const int64_t student_layers = d.student_layers > 0 ? d.student_layers : (teacher_layers + 1) / 2;
  if (d.student_init == "teacher" && student_layers > teacher_layers)
    throw ConfigError("distill.student_layers = " + std::to_string(student_layers) + " exceeds the teacher's " +
                      std::to_string(teacher_layers) + " layers: choose at most " + std::to_string(teacher_layers));

  LmJobStart start = start_lm_job(o, recipe_ini, resume);
  TokenDataset& data = *start.data;
  const torch::Device device = start.device;
  check_model_fits(teacher, data, o);

  Decoder student = d.student_init == "teacher"
                        ? student_from_teacher(teacher, evenly_spaced_layers(student_layers, teacher_layers))
                        : initial_model(o.model, *start.tokenizer, static_cast<uint64_t>(o.run.seed));
  check_model_fits(student, data, o);
  if (student->options.vocab_size != teacher->options.vocab_size)
    throw ConfigError("the student's vocabulary (" + std::to_string(student->options.vocab_size) +
                      ") differs from the teacher's (" + std::to_string(teacher->options.vocab_size) +
                      "): distillation needs the teacher's tokenizer (data.tokenizer)");
  const bool hidden = d.loss.hidden_weight > 0;
  const LayerMap map = parse_layer_map(d.layer_map, student->num_layers(), teacher_layers);
  HiddenProjector projector(student->options.hidden_size, teacher->options.hidden_size, map,
                            static_cast<uint64_t>(o.run.seed));
  if (!hidden)
    for (auto& p : projector->parameters()) p.set_requires_grad(false);
  teacher->to(device);
  student->to(device);
  projector->to(device);

  const int64_t parameters = count_parameters(student);
  const int64_t teacher_parameters = count_parameters(teacher);
  const int64_t projection_parameters = hidden ? parameter_count(*projector) : 0;
  log_info("distillation: teacher ", d.teacher, " (", teacher_layers, " layers, ", teacher_parameters,
           " parameters) -> student (", student->num_layers(), " layers, ", parameters, " parameters, init ",
           d.student_init, "), alpha ", d.loss.alpha, ", temperature ", d.loss.temperature, ", ", d.loss.divergence,
           " KL", hidden ? ", hidden-state matching" : "", ", on ", device.str());

  const auto val = data.val_batches(o.train.eval_batches);
  auto teacher_logits = [&](const torch::Tensor& ids) { return teacher->forward(ids); };
  auto student_logits = [&](const torch::Tensor& ids) { return student->forward(ids); };
  const double teacher_loss = evaluate_loss(teacher_logits, val, device, o.train.bf16);
  student->eval();
  const double init_loss = evaluate_loss(student_logits, val, device, o.train.bf16);
  const double init_kl = evaluate_teacher_kl(teacher, student, val, device);
  student->train();
  log_info("held-out perplexity: teacher ", std::exp(teacher_loss), ", student at init ", std::exp(init_loss),
           " (KL(teacher||student) ", init_kl, ")");

  RunContext ctx = lm_run_context(o, student, device, recipe_ini, resume);
  for (const auto& item : projector->named_parameters())
    if (hidden) ctx.extra_parameters.emplace_back("distill_hidden." + item.key(), item.value());
  ctx.train_loss = [&](const torch::Tensor& ids, const torch::Tensor& targets) {
    std::vector<torch::Tensor> teacher_hidden, student_hidden;
    torch::Tensor zt;
    {
      torch::NoGradGuard no_grad;
      zt = forward_with_hidden(teacher, ids, hidden ? &teacher_hidden : nullptr);
    }
    const auto zs = forward_with_hidden(student, ids, hidden ? &student_hidden : nullptr);
    return distill_loss(zs, zt, targets, d.loss, projector.get(), student_hidden, teacher_hidden).total;
  };
  const TrainResult result = train_language_model(*student, student_logits, data, o.train, ctx);
  if (result.steps < o.train.steps) {
    log_info("stopped after step ", result.steps, " of ", o.train.steps, " (run.stop_after): continue with --resume");
    return result;
  }
  student->eval();
  const double final_kl = evaluate_teacher_kl(teacher, student, val, device);

  nlohmann::json summary{{"method", "distill"},
                         {"steps", result.steps},
                         {"val_loss", result.val_loss},
                         {"val_ppl", std::exp(result.val_loss)},
                         {"student_init", d.student_init},
                         {"student_init_val_loss", init_loss},
                         {"student_init_val_ppl", std::exp(init_loss)},
                         {"teacher", d.teacher},
                         {"teacher_val_loss", teacher_loss},
                         {"teacher_val_ppl", std::exp(teacher_loss)},
                         {"teacher_student_kl_init", init_kl},
                         {"teacher_student_kl", final_kl},
                         {"parameters", parameters},
                         {"teacher_parameters", teacher_parameters},
                         {"parameter_ratio", static_cast<double>(parameters) / teacher_parameters},
                         {"student_layers", student->num_layers()},
                         {"teacher_layers", teacher_layers},
                         {"hidden_projection_parameters", projection_parameters},
                         {"alpha", d.loss.alpha},
                         {"temperature", d.loss.temperature},
                         {"divergence", d.loss.divergence},
                         {"hidden_weight", d.loss.hidden_weight},
                         {"model_tensor_bytes", tensor_bytes(*student)},
                         {"tokens_per_s", result.tokens_per_second},
                         {"peak_host_memory_bytes", peak_host_memory_bytes()},
                         {"peak_cuda_memory_bytes", peak_cuda_memory_bytes()}};
  student->to(torch::kCPU);
  const std::string out = save_run_model(student, *start.tokenizer, o.run.dir);
  write_text_atomically(o.run.dir + "/summary.json", summary.dump(2) + "\n");
  log_info("held-out perplexity: teacher ", std::exp(teacher_loss), ", student ", std::exp(init_loss), " (init) -> ",
           std::exp(result.val_loss), "; KL(teacher||student) ", init_kl, " -> ", final_kl, "; saved the student to ",
           out);
  return result;
}

}  // namespace fedsplit
