// fedsplit icae compress | decode: a text into ICAE memory slots (a safetensors file), and slots
// back into text through the frozen decoder.
#include <iostream>

#include "compress/icae_eval.h"
#include "compress/icae_model.h"
#include "core/io/safetensors.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/threads.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/model_tokenizer.h"

namespace po = boost::program_options;

namespace fedsplit::cli {
namespace {

struct IcaeFlags {
  std::string model, encoder, tokenizer;
  int64_t threads = 0;

  void add_to(po::options_description& flags) {
    flags.add_options()
        ("model", po::value(&model)->required(), "the frozen base model: HF directory or checkpoint.h5")
        ("encoder", po::value(&encoder)->required(), "the ICAE encoder directory (<run.dir>/encoder of an ICAE run)")
        ("tokenizer", po::value(&tokenizer), "tokenizer file or directory (default: the model's)")
        ("threads", po::value(&threads)->default_value(0), "CPU threads (0 = all cores)");
  }
};

int64_t metadata_number(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  const auto it = meta.find(key);
  if (it == meta.end()) throw FormatError(path + ": metadata lacks '" + key + "': not written by fedsplit icae compress");
  return std::stoll(it->second);
}

int compress(const Args& args) {
  IcaeFlags common;
  std::string in, out;
  po::options_description flags("icae compress");
  common.add_to(flags);
  flags.add_options()
      ("in", po::value(&in)->required(), "UTF-8 text file to compress")
      ("out", po::value(&out)->required(), "safetensors file to write the memory slots to");
  po::variables_map values;
  if (!parse_flags("icae compress", args, flags, values)) return 0;
  set_cpu_threads(common.threads);
  const auto tokenizer = tokenizer_for_model(common.model, common.tokenizer);
  const auto ids32 = tokenizer->encode(read_file(in));
  if (ids32.empty()) throw DataError(in + " holds no text to compress");
  IcaeModel model = load_icae(common.model, common.encoder);
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> ids(ids32.begin(), ids32.end());
  const auto slots = model->compress(torch::tensor(ids, torch::kLong).unsqueeze(0))[0];
  save_safetensors(out, {{"slots", slots.contiguous()}},
                   {{"format", "fedsplit-icae-slots-1"},
                    {"tokens", std::to_string(ids.size())},
                    {"segment_tokens", std::to_string(model->shape().segment_tokens)},
                    {"memory_slots", std::to_string(model->shape().memory_slots)}});
  std::cout << in << ": " << ids.size() << " tokens -> " << slots.size(0) << " memory slots of " << slots.size(1)
            << " values (" << static_cast<double>(ids.size()) / static_cast<double>(slots.size(0)) << "x) in " << out << "\n";
  return 0;
}

int decode(const Args& args) {
  IcaeFlags common;
  std::string slots_path, task, prompt;
  int64_t max_tokens = 0;
  po::options_description flags("icae decode");
  common.add_to(flags);
  flags.add_options()
      ("slots", po::value(&slots_path)->required(), "memory slots written by fedsplit icae compress")
      ("task", po::value(&task)->default_value("ae"), "ae: reconstruct the text; lm: continue it; prompt: answer --prompt")
      ("prompt", po::value(&prompt), "with --task prompt: the text read after the slots (e.g. a question)")
      ("max-tokens", po::value(&max_tokens)->default_value(0), "tokens to generate (0: ae = the compressed count, else 64)");
  po::variables_map values;
  if (!parse_flags("icae decode", args, flags, values)) return 0;
  if (task != "ae" && task != "lm" && task != "prompt")
    throw ConfigError("fedsplit icae decode: --task must be ae, lm or prompt, got '" + task + "'");
  if ((task == "prompt") != !prompt.empty())
    throw ConfigError("fedsplit icae decode: --prompt goes with --task prompt (and --task prompt needs --prompt)");
  set_cpu_threads(common.threads);
  const auto tokenizer = tokenizer_for_model(common.model, common.tokenizer);
  const auto meta = load_safetensors_metadata(slots_path);
  const int64_t tokens = metadata_number(meta, "tokens", slots_path);
  const TensorMap stored = load_safetensors(slots_path);
  const auto it = stored.find("slots");
  if (it == stored.end()) throw FormatError(slots_path + ": no 'slots' tensor: not written by fedsplit icae compress");
  IcaeModel model = load_icae(common.model, common.encoder);
  const int64_t hidden = model->memory().size(1);
  if (it->second.dim() != 2 || it->second.size(1) != hidden ||
      metadata_number(meta, "memory_slots", slots_path) != model->shape().memory_slots)
    throw ConfigError(slots_path + " holds slots of another encoder (shape " + std::string(c10::str(it->second.sizes())) +
                      ", the model's width is " + std::to_string(hidden) + "): decode with the --model and --encoder that compressed it");
  torch::NoGradGuard no_grad;
  const torch::Tensor slots = it->second.to(torch::kFloat).unsqueeze(0);
  torch::Tensor prefix;
  if (task == "prompt") {
    const auto p32 = tokenizer->encode(prompt);
    prefix = model->prompt_prefix(slots, std::vector<int64_t>(p32.begin(), p32.end()));
  } else {
    prefix = model->task_prefix(slots, task == "ae" ? IcaeTask::autoencode : IcaeTask::language_model);
  }
  if (max_tokens <= 0) max_tokens = task == "ae" ? tokens : 64;
  const auto out = icae_greedy(model, prefix, max_tokens, task == "ae" ? -1 : tokenizer->eos_id());
  std::cout << text_of(*tokenizer, out) << "\n";
  return 0;
}

}  // namespace

int icae(const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  const Args rest = args.empty() ? Args{} : Args(args.begin() + 1, args.end());
  if (sub == "compress") return compress(rest);
  if (sub == "decode") return decode(rest);
  throw ConfigError("usage: fedsplit icae compress|decode --model M --encoder E ... (see `fedsplit icae compress --help`)");
}

}  // namespace fedsplit::cli
