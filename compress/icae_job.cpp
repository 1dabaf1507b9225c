#include "compress/icae_job.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <sstream>

#include "compress/icae_eval.h"
#include "compress/icae_examples.h"
#include "compress/icae_model.h"
#include "compress/job_setup.h"
#include "core/config/recipe.h"
#include "core/data/corpus.h"
#include "core/data/dataset.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/format.h"
#include "core/util/fs.h"
#include "core/util/log.h"
#include "core/util/memory.h"
#include "core/util/random.h"
#include "peft/lora.h"
#include "train/model_io.h"
#include "train/run_setup.h"

namespace fedsplit {
namespace {

IcaeShape shape_of(const IcaeOptions& o) {
  if (o.ratio < 1 || o.segment_tokens % o.ratio != 0)
    throw ConfigError("icae.ratio = " + std::to_string(o.ratio) + " must divide icae.segment_tokens = " +
                      std::to_string(o.segment_tokens) + " (k = L / ratio memory slots per segment)");
  return IcaeShape{o.segment_tokens, o.segment_tokens / o.ratio};
}

int64_t context_tokens_of(const IcaeOptions& o) { return o.context_tokens > 0 ? o.context_tokens : o.segment_tokens; }

// The ICAE over `base`: a fresh LoRA of [peft], or the encoder of an earlier run (whose shape must
// be the recipe's, since the memory embeddings were trained for it).
IcaeModel build_icae(Decoder base, const IcaeOptions& o, const PeftOptions& peft, uint64_t seed) {
  const IcaeShape shape = shape_of(o);
  if (!o.encoder.empty()) {
    IcaeModel model = attach_icae_encoder(base, o.encoder);
    if (model->shape().segment_tokens != shape.segment_tokens || model->shape().memory_slots != shape.memory_slots)
      throw ConfigError("icae.encoder " + o.encoder + " compresses " + std::to_string(model->shape().segment_tokens) +
                        " tokens into " + std::to_string(model->shape().memory_slots) +
                        " slots: set icae.segment_tokens and icae.ratio to match");
    return model;
  }
  if (peft.method != "lora")
    throw ConfigError("ICAE trains a LoRA encoder: set peft.method = lora (found " + peft.method + ")");
  apply_lora(base, lora_options(peft), seed);
  return IcaeModel(base, shape, seed);
}

// Whether a pretraining row autoencodes: drawn from its tokens, so a resumed run draws the same.
bool autoencodes(const torch::Tensor& row, double fraction, uint64_t seed) {
  uint64_t h = splitmix64(seed ^ 0xAEull);
  const auto values = row.contiguous();
  const int64_t* p = values.data_ptr<int64_t>();
  for (int64_t i = 0; i < values.numel(); ++i) h = splitmix64(h ^ static_cast<uint64_t>(p[i]));
  return static_cast<double>(h >> 11) * 0x1p-53 < fraction;
}

// Rows of the batch as whole windows [B, T + 1]: inputs and the last target.
torch::Tensor windows_of(const torch::Tensor& ids, const torch::Tensor& targets) {
  return torch::cat({ids, targets.slice(1, targets.size(1) - 1)}, 1);
}

torch::Tensor pretrain_loss(IcaeModel& model, const torch::Tensor& ids, const torch::Tensor& targets,
                            int64_t context_tokens, double ae_fraction, uint64_t seed) {
  const torch::Tensor windows = windows_of(ids, targets);
  const torch::Tensor on_cpu = windows.cpu();
  std::vector<int64_t> ae_rows, lm_rows;
  for (int64_t b = 0; b < windows.size(0); ++b)
    (autoencodes(on_cpu[b], ae_fraction, seed) ? ae_rows : lm_rows).push_back(b);
  const auto device = windows.device();
  torch::Tensor total = torch::zeros({}, torch::TensorOptions().device(device));
  if (!ae_rows.empty()) {
    const auto rows = windows.index_select(0, torch::tensor(ae_rows).to(device));
    total = total + model->autoencode_loss(rows.slice(1, 0, context_tokens)) * static_cast<double>(ae_rows.size());
  }
  if (!lm_rows.empty()) {
    const auto rows = windows.index_select(0, torch::tensor(lm_rows).to(device));
    total = total + model->continuation_loss(rows.slice(1, 0, context_tokens), rows.slice(1, context_tokens)) *
                        static_cast<double>(lm_rows.size());
  }
  return total / static_cast<double>(windows.size(0));
}

// The held-out token stream of `data`: its validation windows laid end to end.
std::vector<int64_t> held_out_stream(const TokenDataset& data) {
  std::vector<int64_t> out;
  for (const auto& batch : data.val_batches()) {
    const auto ids = batch.input_ids.contiguous();
    out.insert(out.end(), ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  }
  return out;
}

std::vector<int64_t> eval_lengths_of(const IcaeOptions& o) {
  if (o.eval_lengths.empty()) return {std::max<int64_t>(1, o.segment_tokens / 2), o.segment_tokens, 2 * o.segment_tokens};
  std::vector<int64_t> out;
  std::istringstream in(o.eval_lengths);
  std::string item;
  while (in >> item) {
    try {
      size_t used = 0;
      const int64_t n = std::stoll(item, &used);
      if (used != item.size() || n < 1) throw std::invalid_argument(item);
      out.push_back(n);
    } catch (const std::exception&) {
      throw ConfigError("icae.eval_lengths: '" + item + "' is not a positive token count (e.g. \"64 128 256\")");
    }
  }
  return out;
}

nlohmann::json reconstruction_json(const IcaeReconstructionScore& s) {
  return {{"context_tokens", s.context_tokens},   {"passages", s.passages},
          {"bleu4", s.bleu4},                     {"token_match", s.token_match},
          {"exact_match", s.exact_match},         {"loss_with_slots", s.loss_with_slots},
          {"loss_no_context", s.loss_no_context}};
}

// Reconstruction at every evaluated length and continuation perplexity with slots, full context
// and none, on the held-out stream.
nlohmann::json evaluate_pretraining(IcaeModel& model, const TokenDataset& data, const IcaeOptions& o,
                                    int64_t context_tokens, int64_t window) {
  model->eval();
  const auto stream = held_out_stream(data);
  nlohmann::json reconstruction = nlohmann::json::array();
  for (const int64_t length : eval_lengths_of(o)) {
    const auto passages = cut_passages(stream, length, o.eval_passages);
    if (passages.empty()) {
      log_info("ICAE evaluation: the held-out split holds no passage of ", length, " tokens; skipped");
      continue;
    }
    const auto score = score_reconstruction(model, passages);
    log_info("reconstruction of ", score.passages, " held-out passages of ", length, " tokens: BLEU-4 ",
             fixed(score.bleu4, 4), ", token match ", fixed(score.token_match, 4), ", exact ", fixed(score.exact_match, 3),
             "; loss ", fixed(score.loss_with_slots, 3), " with slots vs ", fixed(score.loss_no_context, 3), " without");
    reconstruction.push_back(reconstruction_json(score));
  }
  const auto continuation = score_continuations(model, cut_passages(stream, window, o.eval_passages), context_tokens);
  log_info("continuation perplexity after ", context_tokens, " context tokens: slots ",
           fixed(std::exp(continuation.with_slots), 2), ", full context ", fixed(std::exp(continuation.full_context), 2),
           ", no context ", fixed(std::exp(continuation.no_context), 2));
  return {{"reconstruction", reconstruction},
          {"continuation",
           {{"passages", continuation.passages},
            {"context_tokens", context_tokens},
            {"continuation_tokens", window - context_tokens},
            {"ppl_with_slots", std::exp(continuation.with_slots)},
            {"ppl_full_context", std::exp(continuation.full_context)},
            {"ppl_no_context", std::exp(continuation.no_context)}}}};
}

// Greedy answers to the held-out examples, and answer perplexity given slots, full context, none.
nlohmann::json evaluate_finetuning(IcaeModel& model, const IcaeExampleStream& stream, int64_t eos) {
  model->eval();
  const IcaeAnswerScore score = score_answers(model, stream.val_examples(), eos);
  log_info("held-out answers: exact match ", fixed(score.exact_match, 3), " with slots; answer perplexity with slots ",
           fixed(std::exp(score.with_slots), 2), ", full context ", fixed(std::exp(score.full_context), 2),
           ", no context ", fixed(std::exp(score.no_context), 2));
  return {{"examples", score.examples},
          {"answer_exact_match", score.exact_match},
          {"answer_ppl_with_slots", std::exp(score.with_slots)},
          {"answer_ppl_full_context", std::exp(score.full_context)},
          {"answer_ppl_no_context", std::exp(score.no_context)}};
}

std::vector<IcaeTextExample> finetune_examples(const LmJobOptions& o, const IcaeOptions& icae) {
  if (icae.examples != "sotu-qa") return read_icae_examples(icae.examples);
  CorpusOptions corpus;
  corpus.name = "sotu";
  corpus.cache_dir = o.data.cache_dir + "/corpora";
  SotuQaOptions qa;
  qa.passage_words = icae.passage_words;
  qa.seed = static_cast<uint64_t>(o.run.seed);
  return sotu_qa_examples(load_corpus(corpus), qa);
}

}  // namespace

void bind_icae_options(Recipe& r, IcaeOptions& o) {
  r.add("icae.segment_tokens", &o.segment_tokens, "L: context tokens per compressed segment", 1, 1 << 20);
  r.add("icae.ratio", &o.ratio, "compression ratio L / k; k = segment_tokens / ratio memory slots per segment", 1, 1 << 20);
  r.add("icae.context_tokens", &o.context_tokens,
        "pretraining: tokens compressed per window (0 = segment_tokens); fine-tuning: longest context", 0, 1 << 20);
  r.add("icae.ae_fraction", &o.ae_fraction, "pretraining: share of windows that autoencode; the rest continue the text",
        0.0, 1.0);
  r.add("icae.encoder", &o.encoder, "encoder directory to start from (<run.dir>/encoder of an ICAE run)");
  r.add("icae.examples", &o.examples, "fine-tuning data: a JSONL file of {context, prompt, answer[, group]} or sotu-qa");
  r.add("icae.tail_tokens", &o.tail_tokens, "fine-tuning: prompt + answer tokens at most", 1, 1 << 20);
  r.add("icae.passage_words", &o.passage_words, "sotu-qa: words of each context passage", 12, 1 << 20);
  r.add("icae.eval_lengths", &o.eval_lengths, "reconstruction lengths to evaluate, e.g. \"64 128 256\" (empty = L/2 L 2L)");
  r.add("icae.eval_passages", &o.eval_passages, "held-out passages per evaluated length", 1, 1 << 20);
}

TrainResult run_icae_job(const LmJobOptions& o, const IcaeOptions& icae, const PeftOptions& peft,
                         const std::string& recipe_ini, bool resume) {
  const bool pretrain = o.run.mode == "icae-pretrain";
  const uint64_t seed = static_cast<uint64_t>(o.run.seed);
  const int64_t context_tokens = context_tokens_of(icae);
  shape_of(icae);  // refuse a bad ratio before any work
  CompressRun run = open_compress_run(o, recipe_ini, resume, o.run.mode, /*open_data=*/pretrain);
  const int64_t window = o.data.seq_len + 1;
  if (pretrain && window - context_tokens < 2)
    throw ConfigError("data.seq_len = " + std::to_string(o.data.seq_len) + " leaves no continuation after icae.context_tokens = " +
                      std::to_string(context_tokens) + ": raise data.seq_len to at least " + std::to_string(context_tokens + 1));
  IcaeModel model = build_icae(run.model, icae, peft, seed);
  model->to(run.device);
  const IcaeShape shape = model->shape();
  const int64_t slots_per_context = (context_tokens + shape.segment_tokens - 1) / shape.segment_tokens * shape.memory_slots;
  // The decoder reads the slots, then [AE] + the context or [LM] + the continuation, or the prompt and answer.
  const int64_t longest_decode = slots_per_context + (pretrain ? 1 + std::max(context_tokens, window - context_tokens)
                                                                : icae.tail_tokens);
  if (longest_decode > run.model->options.max_position)
    throw ConfigError("the decoder would read " + std::to_string(longest_decode) + " positions, more than the model's " +
                      std::to_string(run.model->options.max_position) + ": lower icae.context_tokens or " +
                      (pretrain ? "data.seq_len" : "icae.tail_tokens"));

  std::unique_ptr<IcaeExampleStream> examples;
  if (!pretrain) {
    IcaeExampleOptions eo;
    eo.context_tokens = context_tokens;
    eo.tail_tokens = icae.tail_tokens;
    eo.batch_size = o.data.batch_size;
    eo.val_fraction = o.data.val_fraction;
    eo.split_seed = eo.shuffle_seed = seed;
    examples = std::make_unique<IcaeExampleStream>(finetune_examples(o, icae), *run.tokenizer, eo, icae.examples);
    log_info("ICAE fine-tuning on ", icae.examples, ": ", examples->num_train(), " training and ", examples->num_val(),
             " held-out examples");
  }
  BatchStream& data = pretrain ? static_cast<BatchStream&>(*run.data) : *examples;
  log_info("ICAE ", pretrain ? "pretraining" : "fine-tuning", ": ", shape.segment_tokens, " tokens -> ",
           shape.memory_slots, " slots per segment (", icae.ratio, "x), ", context_tokens, " context tokens, ",
           lora_parameters(model->base()).size(), " LoRA tensors, on ", run.device.str());

  RunContext ctx = lm_run_context(o, run.model, run.device, recipe_ini, resume);
  auto loss_of = [&, pretrain](const torch::Tensor& ids, const torch::Tensor& targets, double ae_fraction) {
    return pretrain ? pretrain_loss(model, ids, targets, context_tokens, ae_fraction, seed)
                    : model->answer_loss(ids, targets, context_tokens);
  };
  ctx.train_loss = [&](const torch::Tensor& ids, const torch::Tensor& targets) {
    return loss_of(ids, targets, icae.ae_fraction);
  };
  // Held out: pretraining scores reconstruction alone, the skill the slots must keep.
  ctx.held_out_loss = [&](const std::vector<Batch>& batches) {
    double total = 0;
    int64_t rows = 0;
    for (const auto& b : batches) {
      const auto loss = loss_of(b.input_ids.to(run.device), b.targets.to(run.device), 1.0);
      total += loss.item<double>() * b.input_ids.size(0);
      rows += b.input_ids.size(0);
    }
    if (rows == 0) throw DataError("no held-out batches to evaluate: raise data.val_fraction");
    return total / rows;
  };
  const LogitsFn unused = [](const torch::Tensor&) -> torch::Tensor {
    throw Error("the ICAE job evaluates through RunContext::held_out_loss");
  };
  const TrainResult result = train_language_model(*model, unused, data, o.train, ctx);
  if (result.steps < o.train.steps) {
    log_info("stopped after step ", result.steps, " of ", o.train.steps, " (run.stop_after): continue with --resume");
    return result;
  }
  const std::string encoder_dir = o.run.dir + "/encoder";
  model->save_encoder(encoder_dir);

  nlohmann::json summary{{"method", o.run.mode},
                         {"base_model", o.model.init},
                         {"steps", result.steps},
                         {"val_loss", result.val_loss},
                         {"segment_tokens", shape.segment_tokens},
                         {"memory_slots", shape.memory_slots},
                         {"ratio", icae.ratio},
                         {"context_tokens", context_tokens},
                         {"base_parameters", count_parameters(run.model)},
                         {"tokens_per_s", result.tokens_per_second},
                         {"peak_host_memory_bytes", peak_host_memory_bytes()},
                         {"peak_cuda_memory_bytes", peak_cuda_memory_bytes()}};
  summary.update(pretrain ? evaluate_pretraining(model, *run.data, icae, context_tokens, window)
                          : evaluate_finetuning(model, *examples, run.tokenizer->eos_id()));
  write_text_atomically(o.run.dir + "/summary.json", summary.dump(2) + "\n");
  log_info("saved the encoder to ", encoder_dir, " and the evaluation to ", o.run.dir, "/summary.json");
  return result;
}

}  // namespace fedsplit
