#include "train/lm_job.h"

#include <nlohmann/json.hpp>

#include <cmath>

#include "core/config/recipe.h"
#include "core/data/dataset.h"
#include "core/model/hf.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"
#include "core/util/memory.h"
#include "core/util/threads.h"

namespace fedsplit {
void bind_lm_job(Recipe& r, LmJobOptions& o) {
  r.add_choice("run.mode", &o.run.mode, {"train", "federated", "split", "quantize", "prune", "distill", "qat", "icae-pretrain", "icae-finetune"},
               "what the run does");
  r.add("run.dir", &o.run.dir, "run directory (metrics.jsonl, checkpoint.h5, model/)");
  r.add("run.seed", &o.run.seed, "seed for model init, data order and dropout", 0, std::numeric_limits<int64_t>::max());
  r.add("run.threads", &o.run.threads, "CPU threads for LibTorch (0 = all cores)", 0, 1024);
  r.add_choice("run.device", &o.run.device, {"auto", "cpu", "cuda"}, "where to train");
  r.add("run.overwrite", &o.run.overwrite, "replace a run directory that holds a different run");
  r.add("run.stop_after", &o.run.stop_after, "end this invocation after this many steps, checkpointed (0 = run to the end)",
        0, std::numeric_limits<int64_t>::max());
  r.add("model.init", &o.model.init, "HF model directory or checkpoint.h5 to start from; empty = from scratch");
  r.add_choice("model.family", &o.model.family, {"llama", "qwen2", "gpt2"}, "architecture of a model from scratch");
  r.add("model.hidden_size", &o.model.hidden_size, "model width", 8, 65536);
  r.add("model.layers", &o.model.layers, "decoder blocks", 1, 1024);
  r.add("model.heads", &o.model.heads, "attention heads", 1, 1024);
  r.add("model.kv_heads", &o.model.kv_heads, "key/value heads for GQA (0 = heads)", 0, 1024);
  r.add("model.intermediate_size", &o.model.intermediate_size, "MLP width (0 = family default)", 0, 1 << 20);
  r.add("model.max_position", &o.model.max_position, "longest sequence the model handles", 2, 1 << 20);
  r.add("model.rope_theta", &o.model.rope_theta, "RoPE base frequency", 1.0, 1e9);
  r.add("model.tie_embeddings", &o.model.tie_embeddings, "share the input embedding with the output head");
  r.add("model.dropout", &o.model.dropout, "dropout on residual branches while training", 0.0, 0.9);
  bind_data_options(r, o.data);
  bind_train_options(r, o.train);
}

LmJobStart start_lm_job(const LmJobOptions& o, const std::string& recipe_ini, bool resume, bool open_data) {
  set_cpu_threads(o.run.threads);
  torch::manual_seed(static_cast<uint64_t>(o.run.seed));
  LmJobStart start;
  start.device = pick_device(o.run.device);
  claim_run_dir(o.run, recipe_ini, resume);

  start.tokenizer = resolve_tokenizer(o.data);
  copy_tokenizer(*start.tokenizer, o.run.dir);  // so that checkpoints in the run directory evaluate alone
  if (!open_data) return start;
  DatasetOptions d;
  d.seq_len = o.data.seq_len;
  d.batch_size = o.data.batch_size;
  d.val_fraction = o.data.val_fraction;
  d.split_seed = d.shuffle_seed = static_cast<uint64_t>(o.run.seed);
  d.filter = MetaFilter::parse(o.data.filter);
  start.data = std::make_unique<TokenDataset>(resolve_shards(o.data, *start.tokenizer), d);
  return start;
}

void check_model_fits(const Decoder& model, const TokenDataset& data, const LmJobOptions& o) {
  data.check_vocab(model->options.vocab_size);
  if (o.data.seq_len > model->options.max_position)
    throw ConfigError("data.seq_len = " + std::to_string(o.data.seq_len) + " exceeds the model's max_position " +
                      std::to_string(model->options.max_position) + ": lower data.seq_len");
}

RunContext lm_run_context(const LmJobOptions& o, const Decoder& model, torch::Device device,
                          const std::string& recipe_ini, bool resume) {
  RunContext ctx;
  ctx.run_dir = o.run.dir;
  ctx.device = device;
  ctx.recipe_ini = recipe_ini;
  ctx.model_config = config_to_hf(model->options).dump(2);
  ctx.resume = resume;
  ctx.stop_after = o.run.stop_after;
  return ctx;
}

std::string save_run_model(Decoder& model, const Tokenizer& tokenizer, const std::string& run_dir) {
  const std::string out = run_dir + "/model";
  make_dirs(out);
  save_hf_model(model, out);
  copy_tokenizer(tokenizer, out);
  return out;
}

TrainResult run_lm_job(const LmJobOptions& o, const std::string& recipe_ini, bool resume,
                       const ModelAdaptation* adaptation) {
  if (adaptation && o.model.init.empty())
    throw ConfigError("peft.method = " + adaptation->method +
                      " fine-tunes a trained model: set model.init to its HF directory (e.g. runs/pretrain-base/model)");
  LmJobStart start = start_lm_job(o, recipe_ini, resume);
  const torch::Device device = start.device;
  const auto& tokenizer = start.tokenizer;
  TokenDataset& data = *start.data;

  Decoder model = initial_model(o.model, *tokenizer, static_cast<uint64_t>(o.run.seed));
  check_model_fits(model, data, o);
  const int64_t parameters = count_parameters(model);
  if (adaptation && adaptation->prepare_base) adaptation->prepare_base(model);
  model->to(device);
  auto logits = [&](const torch::Tensor& ids) { return model->forward(ids); };
  double base_val_loss = std::nan("");
  if (adaptation) {
    model->eval();
    base_val_loss = evaluate_loss(logits, data.val_batches(o.train.eval_batches), device, o.train.bf16);
    log_info("base model ", o.model.init, ": held-out loss ", base_val_loss, " perplexity ", std::exp(base_val_loss));
    adaptation->apply(model, static_cast<uint64_t>(o.run.seed));
  }
  const int64_t trainable = trainable_count(*model);
  log_info("model: ", to_string(model->options.family), ", ", parameters, " parameters (", trainable, " train, ",
           100.0 * trainable / parameters, "%), on ", device.str(), ", ", torch::get_num_threads(), " threads");

  RunContext ctx = lm_run_context(o, model, device, recipe_ini, resume);
  if (adaptation) {
    ctx.adapter = adaptation->method;
    ctx.base_model = o.model.init;
  }
  const TrainResult result = train_language_model(*model, logits, data, o.train, ctx);
  if (result.steps < o.train.steps) {
    log_info("stopped after step ", result.steps, " of ", o.train.steps, " (run.stop_after): continue with --resume");
    return result;
  }

  nlohmann::json summary{{"steps", result.steps},
                         {"val_loss", result.val_loss},
                         {"val_ppl", std::exp(result.val_loss)},
                         {"parameters", parameters},
                         {"trainable_parameters", trainable},
                         {"trainable_fraction", static_cast<double>(trainable) / parameters},
                         {"model_tensor_bytes", tensor_bytes(*model)},
                         {"tokens_per_s", result.tokens_per_second},
                         {"peak_host_memory_bytes", peak_host_memory_bytes()},
                         {"peak_cuda_memory_bytes", peak_cuda_memory_bytes()}};
  model->to(torch::kCPU);
  if (adaptation) {
    // The adapter alone: the base model stays where model.init names it.
    const std::string out = o.run.dir + "/adapter";
    adaptation->save(model, out);
    summary.update({{"method", adaptation->method}, {"base_model", o.model.init}, {"base_val_loss", base_val_loss},
                    {"base_val_ppl", std::exp(base_val_loss)}});
    log_info("held-out perplexity ", std::exp(base_val_loss), " (base) -> ", std::exp(result.val_loss),
             "; saved the adapter to ", out, " (use it with --model ", o.model.init, " --adapter ", out,
             adaptation->mergeable ? ", or fold it in with fedsplit peft merge" : "", ")");
  } else {
    // The trained model in HF format, with its tokenizer beside it, for later recipes and tools.
    const std::string out = save_run_model(model, *tokenizer, o.run.dir);
    log_info("saved the model and tokenizer to ", out);
  }
  write_text_atomically(o.run.dir + "/summary.json", summary.dump(2) + "\n");
  return result;
}

}  // namespace fedsplit
