#include "compress/export_step.h"

#include <torch/torch.h>

#include <filesystem>

#include "compress/gguf_export.h"
#include "compress/gguf_vocab.h"
#include "compress/quant_record.h"
#include "compress/stage_plan.h"
#include "core/config/recipe.h"
#include "core/util/log.h"
#include "train/model_io.h"

namespace fedsplit {

void bind_export_step(Recipe& r, ExportStepOptions& o) {
  r.add_choice("export.gguf", &o.gguf, {"none", "f32", "f16", "q8_0", "q4_0"},
               "GGUF encoding of the model a compression job saved, written to <run.dir>/gguf (none = no export)");
  r.add("export.stages", &o.stages, "pipeline stages of that export (one GGUF shard each)", 1, 4096);
}

std::string export_after_job(const ExportStepOptions& o, const std::string& run_dir) {
  if (o.gguf == "none") return "";
  const std::string model_dir = run_dir + "/model";
  Decoder model = load_any_model(model_dir);
  GgufExportOptions options;
  options.quant = parse_gguf_quant(o.gguf, "export.gguf");
  options.name = std::filesystem::path(run_dir).filename().string();
  options.tokenizer = find_model_tokenizer(model_dir);
  options.record = load_quant_record(model_dir);
  options.record_source = quant_record_path(model_dir);
  if (o.stages > 1) options.stages = balanced_stages(model->options.num_layers, o.stages);
  const std::string out = run_dir + "/gguf";
  const GgufManifest manifest = export_gguf(model, options, out);
  log_info("exported ", out, " (", manifest.stages.size(), " file", manifest.stages.size() > 1 ? "s" : "", ", ",
           manifest.quant, manifest.quant_record.is_null() ? "" : ", the job's own codes", ")");
  return out;
}

}  // namespace fedsplit
