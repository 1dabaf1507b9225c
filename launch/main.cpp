// The fedsplit executable: dispatches subcommands to the libraries and prints one line on error.
#include <iostream>
#include <map>

#include "core/util/error.h"
#include "launch/commands.h"

namespace {

constexpr const char* kUsage = R"(usage: fedsplit <command> [options]

commands:
  run [RECIPE] [--section.key=value ...] [--resume]   run a recipe (the built-in quickstart without RECIPE)
  run --help                                          every recipe key with its default and meaning
  data prepare --corpus NAME|PATH --out FILE.h5       tokenize a corpus into an HDF5 token shard
  tokenizer train --corpus NAME|PATH --out PREFIX     train a SentencePiece tokenizer
  tokenizer encode --tokenizer PATH --text TEXT       print token ids
  logits --model DIR --input IDS --out F [--adapter A] fp32 logits of input_ids (with a LoRA adapter)
  eval --model M --data SHARD.h5                      held-out perplexity of a model
  peft merge --model M --adapter A --out DIR          fold a PEFT LoRA adapter into a HF model
  report RUN_DIR [--out FILE]                         an HTML page of a run's charts and tables
  plan split --model M --profile devices.ini          profile a model and pick the split-learning cut
  plan infer --model M.gguf --devices devices.ini [--out plan.json]   spread a GGUF model's layers over devices
  export gguf --model M --quant Q --out DIR [--stages N | --plan P] [--adapter A]
                                                      GGUF (f32|f16|q8_0|q4_0) for llama.cpp, one shard per stage
  export hf --model M --out DIR [--adapter A]         a HF model directory (M may be a .gguf export)
  generate --model M.gguf --prompt TEXT | --prompts FILE|-   text from a GGUF model (greedy or sampled)
  serve --manifest M.json [--micro-batches N]         prompts from stdin through an export's stages, one
                                                      per rank of mpirun -np S (or all in one process)
  icae compress --model M --encoder E --in TEXT --out SLOTS   a text into ICAE memory slots
  icae decode --model M --encoder E --slots SLOTS [--task ae|lm|prompt]   slots back into text

Run `fedsplit <command> --help` for a command's options.
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace fedsplit;
  const std::map<std::string, int (*)(const cli::Args&)> commands = {
      {"run", cli::run}, {"data", cli::data}, {"tokenizer", cli::tokenizer}, {"logits", cli::logits},
      {"eval", cli::eval}, {"peft", cli::peft}, {"report", cli::report},
      {"plan", cli::plan}, {"export", cli::export_model}, {"icae", cli::icae}, {"generate", cli::generate}, {"serve", cli::serve}};
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  auto it = commands.find(argv[1]);
  if (it == commands.end()) {
    std::cerr << "fedsplit: unknown command '" << argv[1] << "' (run `fedsplit --help` for the list)\n";
    return 2;
  }
  try {
    return it->second(cli::Args(argv + 2, argv + argc));
  } catch (const Error& e) {
    std::cerr << "fedsplit: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "fedsplit: internal error: " << e.what_without_backtrace() << "\n";
    return 3;
  } catch (const std::exception& e) {
    std::cerr << "fedsplit: " << e.what() << "\n";
    return 3;
  }
}
