// fedsplit export gguf|hf: a model (HF directory, checkpoint.h5 or GGUF export), optionally with a
// merged LoRA adapter, written as GGUF shards for llama.cpp / the inference engine, or as a HF model.
#include <filesystem>
#include <iostream>

#include "compress/gguf_export.h"
#include "compress/gguf_import.h"
#include "compress/gguf_llama.h"
#include "compress/gguf_vocab.h"
#include "compress/quant_record.h"
#include "core/model/hf.h"
#include "core/util/fs.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "peft/lora.h"
#include "peft/method.h"
#include "train/model_io.h"

namespace po = boost::program_options;

namespace fedsplit::cli {
namespace {

namespace sfs = std::filesystem;

// A copy of the tokenizer file `path` in `dir` (under its own name).
void copy_tokenizer(const std::string& path, const std::string& dir) {
  write_text_atomically((sfs::path(dir) / sfs::path(path).filename()).string(), read_file(path));
}

// The model of --model (HF dir, checkpoint.h5, .gguf, manifest.json or export dir) with --adapter merged.
Decoder load_source(const std::string& model_path, const std::string& adapter) {
  std::error_code ec;
  if (!sfs::exists(model_path, ec))
    throw IoError("--model " + model_path + ": no such file or directory (pass a HF model directory, checkpoint.h5 or .gguf)");
  Decoder model = is_gguf_model_path(model_path) ? import_gguf(model_path) : load_any_model(model_path);
  if (!adapter.empty()) {
    load_peft_adapter(model, adapter);
    if (lora_modules(model).empty())
      throw ConfigError("--adapter " + adapter + " is a prefix-tuning or bottleneck adapter: no weight can hold it, "
                        "so it cannot be exported; export the base model and apply the adapter at run time");
    merge_and_unload(model);
  }
  return model;
}

int export_gguf_command(const Args& args) {
  std::string model_path, adapter, tokenizer, quant = "f16", plan, out, name;
  int64_t stages = 0;
  po::options_description flags("export gguf");
  flags.add_options()
      ("model", po::value(&model_path)->required(), "HF model directory, checkpoint.h5, or a GGUF export (.gguf / manifest.json)")
      ("adapter", po::value(&adapter), "PEFT LoRA/DoRA adapter directory to merge first (as `fedsplit peft merge`)")
      ("tokenizer", po::value(&tokenizer), "tokenizer.model / tokenizer.json to embed (default: the one beside the model)")
      ("quant", po::value(&quant)->default_value(quant), "tensor encoding: f32 | f16 | q8_0 | q4_0")
      ("stages", po::value(&stages), "split the layers into N contiguous, balanced pipeline stages (one GGUF each)")
      ("plan", po::value(&plan), "stage plan JSON {\"stages\":[{\"layers\":[begin,end],\"device\":\"...\"}, ...]}")
      ("name", po::value(&name), "general.name of the model (default: the --model folder's name)")
      ("out", po::value(&out)->required(), "directory to write (model.gguf or stage-<i>.gguf, and manifest.json)");
  po::variables_map values;
  if (!parse_flags("export gguf", args, flags, values)) return 0;
  if (values.count("stages") && !plan.empty())
    throw ConfigError("fedsplit export gguf: give --stages or --plan, not both");
  GgufExportOptions options;
  options.quant = parse_gguf_quant(quant, "--quant");
  if (!tokenizer.empty() && !path_exists(tokenizer))
    throw IoError("--tokenizer " + tokenizer + ": no such file or directory");

  Decoder model = load_source(model_path, adapter);
  gguf_architecture(model->options);  // refuses a family llama.cpp cannot run before anything is written
  const bool from_gguf = is_gguf_model_path(model_path);
  if (tokenizer.empty() && !from_gguf) tokenizer = find_model_tokenizer(model_path);
  if (tokenizer.empty())
    std::cerr << "fedsplit export gguf: warning: no tokenizer beside " << model_path
              << "; the GGUF carries no vocabulary and llama.cpp will not load it (pass --tokenizer)\n";
  options.tokenizer = tokenizer;
  std::error_code ec;
  if (!from_gguf && sfs::is_directory(model_path, ec)) {
    options.record = load_quant_record(model_path);
    options.record_source = quant_record_path(model_path);
    if (options.record && !adapter.empty() && (options.quant == GgufQuant::q8_0 || options.quant == GgufQuant::q4_0))
      throw ConfigError("--adapter changes the weights that " + options.record_source +
                        " put on its grid: export with --quant f16, or merge, quantize again and then export");
  }
  if (values.count("stages")) options.stages = balanced_stages(model->options.num_layers, stages);
  if (!plan.empty()) options.stages = load_stage_plan(plan, model->options.num_layers);
  if (name.empty()) {
    const auto p = sfs::path(model_path);
    name = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
  }
  options.name = name;

  const GgufManifest manifest = export_gguf(model, options, out);
  // The tokenizer file goes beside the shards too, for `fedsplit generate` and `serve`.
  if (!tokenizer.empty()) copy_tokenizer(tokenizer, out);
  for (const auto& st : manifest.stages)
    std::cout << "wrote " << (sfs::path(out) / st.file).string() << " (layers " << st.layer_begin << "-"
              << st.layer_end - 1 << ", " << st.bytes << " bytes)\n";
  std::cout << "wrote " << (sfs::path(out) / "manifest.json").string() << " (export " << manifest.export_id << ", "
            << manifest.quant << (manifest.quant_record.is_null() ? "" : ", recorded codes") << ")\n";
  return 0;
}

int export_hf_command(const Args& args) {
  std::string model_path, adapter, out;
  po::options_description flags("export hf");
  flags.add_options()
      ("model", po::value(&model_path)->required(), "HF model directory, checkpoint.h5, .gguf, or manifest.json of a GGUF export")
      ("adapter", po::value(&adapter), "PEFT LoRA/DoRA adapter directory to merge first")
      ("out", po::value(&out)->required(), "HF model directory to write (config.json + model.safetensors)");
  po::variables_map values;
  if (!parse_flags("export hf", args, flags, values)) return 0;
  Decoder model = load_source(model_path, adapter);
  save_hf_model(model, out);
  // The tokenizer travels with the model when there is one beside it (GGUF vocabularies are not rebuilt).
  if (!is_gguf_model_path(model_path)) {
    const std::string tok = find_model_tokenizer(model_path);
    if (!tok.empty()) copy_tokenizer(tok, out);
  }
  std::cout << "wrote " << out << "\n";
  return 0;
}

}  // namespace

int export_model(const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  const Args rest = args.empty() ? Args{} : Args(args.begin() + 1, args.end());
  if (sub == "gguf") return export_gguf_command(rest);
  if (sub == "hf") return export_hf_command(rest);
  throw ConfigError("usage: fedsplit export gguf --model M --quant f32|f16|q8_0|q4_0 --out DIR [--stages N | --plan P] "
                    "or fedsplit export hf --model M --out DIR (see `fedsplit export gguf --help`)");
}

}  // namespace fedsplit::cli
