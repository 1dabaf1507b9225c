// fedsplit peft merge: fold a PEFT LoRA or DoRA adapter into its base model and save a plain HF model.
#include <iostream>

#include "core/model/hf.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "peft/lora.h"
#include "peft/method.h"
#include "train/model_io.h"

namespace po = boost::program_options;

namespace fedsplit::cli {
namespace {

int merge(const Args& args) {
  std::string model_path, adapter, out;
  po::options_description flags("peft merge");
  flags.add_options()
      ("model", po::value(&model_path)->required(), "base model: HF model directory or checkpoint.h5")
      ("adapter", po::value(&adapter)->required(), "PEFT LoRA or DoRA adapter directory (adapter_config.json + adapter_model.safetensors)")
      ("out", po::value(&out)->required(), "HF model directory to write (config.json + model.safetensors)");
  po::variables_map values;
  if (!parse_flags("peft merge", args, flags, values)) return 0;
  Decoder model = load_any_model(model_path);
  load_peft_adapter(model, adapter);
  if (lora_modules(model).empty())
    throw ConfigError(adapter + " is a prefix-tuning or bottleneck adapter: it adds computation that no weight "
                      "can hold, so it cannot be merged; apply it with --adapter instead");
  merge_and_unload(model);
  save_hf_model(model, out);
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace

int peft(const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  const Args rest = args.empty() ? Args{} : Args(args.begin() + 1, args.end());
  if (sub == "merge") return merge(rest);
  throw ConfigError("usage: fedsplit peft merge --model M --adapter A --out DIR (see `fedsplit peft merge --help`)");
}

}  // namespace fedsplit::cli
