// fedsplit logits (fp32 logits of given ids) and fedsplit eval (perplexity on data).
#include <cmath>
#include <filesystem>
#include <iostream>

#include "compress/gguf_import.h"
#include "core/data/dataset.h"
#include "core/data/prepare.h"
#include "core/io/safetensors.h"
#include "core/model/decoder.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/fs.h"
#include "core/util/threads.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "peft/method.h"
#include "train/model_io.h"
#include "train/trainer.h"

namespace po = boost::program_options;

namespace fedsplit::cli {
int logits(const Args& args) {
  std::string model_path, adapter, input, out;
  int64_t threads = 0;
  po::options_description flags("logits");
  flags.add_options()
      ("model", po::value(&model_path)->required(), "HF model directory, checkpoint.h5, .gguf or a GGUF export's manifest.json")
      ("adapter", po::value(&adapter), "adapter directory to apply: PEFT LoRA, DoRA or prefix tuning, or fedsplit bottleneck")
      ("input", po::value(&input)->required(), "safetensors file with an int64 `input_ids` tensor [B, T]")
      ("out", po::value(&out)->required(), "safetensors file to write, holding fp32 `logits` [B, T, vocab]")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0 = all cores)");
  po::variables_map values;
  if (!parse_flags("logits", args, flags, values)) return 0;
  set_cpu_threads(threads);
  Decoder model = is_gguf_model_path(model_path) ? import_gguf(model_path) : load_any_model(model_path);
  if (!adapter.empty()) load_peft_adapter(model, adapter);
  const TensorMap tensors = load_safetensors(input);
  auto it = tensors.find("input_ids");
  if (it == tensors.end()) throw FormatError(input + " has no tensor named input_ids: write the ids under that name");
  const torch::Tensor ids = it->second.to(torch::kLong);
  if (ids.dim() != 2) throw DataError(input + ": input_ids must be [batch, tokens], got " + std::to_string(ids.dim()) + " dims");
  if (ids.numel() > 0 && (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= model->options.vocab_size))
    throw DataError(input + ": input_ids hold ids outside [0, " + std::to_string(model->options.vocab_size) +
                    ") of the model's vocabulary");
  if (ids.size(1) > model->options.max_position)
    throw DataError(input + ": " + std::to_string(ids.size(1)) + " tokens exceed the model's max_position " +
                    std::to_string(model->options.max_position));
  torch::NoGradGuard no_grad;
  model->eval();
  save_safetensors(out, {{"logits", model->forward(ids).to(torch::kFloat).contiguous()}});
  std::cout << "wrote " << out << "\n";
  return 0;
}

int eval(const Args& args) {
  std::string model_path, adapter;
  DataOptions d;
  int64_t threads = 0, seed = 1234, max_batches = 0;
  d.seq_len = 256;
  d.batch_size = 8;
  po::options_description flags("eval");
  flags.add_options()
      ("model", po::value(&model_path)->required(), "HF model directory, checkpoint.h5, .gguf or a GGUF export's manifest.json")
      ("adapter", po::value(&adapter), "PEFT adapter directory to apply (e.g. a fine-tuning run's adapter/)")
      ("data", po::value(&d.corpus)->required(), "token shard (.h5), or a corpus name/path to tokenize with the model's tokenizer")
      ("tokenizer", po::value(&d.tokenizer), "tokenizer for a corpus (default: the one in the model's directory)")
      ("seq-len", po::value(&d.seq_len)->default_value(d.seq_len), "tokens per evaluated window")
      ("batch-size", po::value(&d.batch_size)->default_value(d.batch_size), "windows per batch")
      ("val-fraction", po::value(&d.val_fraction)->default_value(0.05),
       "held-out fraction, as in the training recipe (0 = evaluate every document)")
      ("seed", po::value(&seed)->default_value(seed), "run.seed of the training recipe (decides the held-out documents)")
      ("filter", po::value(&d.filter), "metadata filter key=value, as data.filter")
      ("max-batches", po::value(&max_batches)->default_value(0), "stop after this many batches (0 = all)")
      ("cache", po::value(&d.cache_dir)->default_value(d.cache_dir), "cache folder for corpora and shards")
      ("threads", po::value(&threads)->default_value(0), "CPU threads (0 = all cores)");
  po::variables_map values;
  if (!parse_flags("eval", args, flags, values)) return 0;
  set_cpu_threads(threads);
  Decoder model = is_gguf_model_path(model_path) ? import_gguf(model_path) : load_any_model(model_path);
  if (!adapter.empty()) load_peft_adapter(model, adapter);
  std::vector<std::string> shards;
  if (has_suffix(d.corpus, ".h5")) {
    shards = {d.corpus};
  } else {
    // A model directory holds its tokenizer; a checkpoint's run directory does too.
    if (d.tokenizer.empty()) d.tokenizer = std::filesystem::is_directory(model_path)
                                               ? model_path
                                               : std::filesystem::path(model_path).parent_path().string();
    shards = resolve_shards(d, *resolve_tokenizer(d));
  }
  DatasetOptions o;
  o.seq_len = d.seq_len;
  o.batch_size = d.batch_size;
  o.val_fraction = d.val_fraction;
  o.split_seed = o.shuffle_seed = static_cast<uint64_t>(seed);
  o.filter = MetaFilter::parse(d.filter);
  TokenDataset data(shards, o);
  data.check_vocab(model->options.vocab_size);
  // With no held-out fraction every document is evaluated: the training windows, in order.
  std::vector<Batch> batches;
  if (d.val_fraction > 0) {
    batches = data.val_batches(max_batches);
  } else {
    for (int64_t i = 0; i < data.batches_per_epoch() && (max_batches == 0 || i < max_batches); ++i)
      batches.push_back(data.next_batch());
  }
  model->eval();
  const double loss = evaluate_loss([&](const torch::Tensor& ids) { return model->forward(ids); }, batches, torch::kCPU);
  int64_t tokens = 0;
  for (const auto& b : batches) tokens += b.targets.numel();
  std::cout << "loss " << loss << " perplexity " << std::exp(loss) << " over " << tokens << " tokens\n";
  return 0;
}

}  // namespace fedsplit::cli
