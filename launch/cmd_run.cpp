// fedsplit run [RECIPE] [--section.key=value ...] [--resume]
#include <iostream>

#include "compress/distill_job.h"
#include "compress/qat_job.h"
#include "core/config/recipe.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "launch/commands.h"
#include "launch/embedded_recipes.h"
#include "compress/export_step.h"
#include "compress/federated_distill.h"
#include "compress/icae_job.h"
#include "compress/prune_job.h"
#include "compress/ptq_job.h"
#include "federated/fed_job.h"
#include "peft/method.h"
#include "split/split_job.h"
#include "train/lm_job.h"

namespace fedsplit::cli {

int run(const Args& args) {
  std::string recipe_path;
  bool resume = false, help = false, check = false;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--resume") resume = true;
    else if (a == "--help" || a == "-h") help = true;
    else if (a == "--check") check = true;
    else if (a.rfind("--", 0) == 0) {
      // Accept both --section.key=value and --section.key value.
      if (a.find('=') == std::string::npos && i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0)
        overrides.push_back(a + "=" + args[++i]);
      else
        overrides.push_back(a);
    } else if (recipe_path.empty()) recipe_path = a;
    else throw ConfigError("fedsplit run takes one recipe file, got '" + recipe_path + "' and '" + a + "'");
  }

  Recipe recipe;
  FederatedJobOptions job;
  LmJobOptions& options = job.lm;
  bind_lm_job(recipe, options);
  bind_peft_options(recipe, job.peft);
  bind_federated_options(recipe, job.fed);
  bind_attack_options(recipe, job.attack);
  bind_robust_options(recipe, job.robust);
  bind_privacy_options(recipe, job.privacy);
  bind_secure_options(recipe, job.secure);
  bind_topology_options(recipe, job.topology);
  SplitSchemeOptions split;
  bind_split_options(recipe, split);
  QuantizeJobOptions quantize;
  bind_quantize_options(recipe, quantize);
  PruneJobOptions prune;
  bind_prune_options(recipe, prune);
  DistillOptions distill;
  bind_distill_options(recipe, distill);
  QatOptions qat;
  bind_qat_options(recipe, qat);
  ExportStepOptions export_step;
  bind_export_step(recipe, export_step);
  IcaeOptions icae;
  bind_icae_options(recipe, icae);
  if (help) {
    std::cout << "usage: fedsplit run [RECIPE.ini] [--section.key=value ...] [--resume] [--check]\n"
                 "--check validates the recipe and prints it resolved, without running it.\n"
                 "Without RECIPE the built-in quickstart recipe runs. Recipe keys:\n"
              << recipe.help();
    return 0;
  }
  if (recipe_path.empty()) {
    log_info("no recipe given: running the built-in quickstart (recipes/quickstart.ini)");
    recipe.parse_text(kQuickstartRecipe, "recipes/quickstart.ini (built in)", overrides);
  } else {
    recipe.parse(recipe_path, overrides);
  }
  if (check) {
    // Keys, types and ranges are checked by parse: print the resolved recipe and do no work.
    std::cout << recipe.to_ini();
    return 0;
  }
  if (!distill.teacher.empty() && options.run.mode != "distill" && options.run.mode != "qat" &&
      options.run.mode != "federated")
    throw ConfigError("distill.teacher is set but run.mode = " + options.run.mode +
                      ": a teacher is used by run.mode = distill, qat or federated only; remove it or change run.mode");
  const bool compress_mode = options.run.mode == "quantize" || options.run.mode == "prune" ||
                             options.run.mode == "distill" || options.run.mode == "qat";
  if (!compress_mode && export_step.gguf != "none")
    throw ConfigError("export.gguf ends a compression job (run.mode = quantize, prune, distill or qat); for run.mode = " +
                      options.run.mode + " export the result with fedsplit export gguf");
  if (compress_mode && job.peft.method != "none")
    throw ConfigError("run.mode = " + options.run.mode + " works on the whole model: set peft.method = none" +
                      (options.run.mode == "prune" ? " (LoRA recovery is prune.recovery = lora, with the other [peft] keys)" : ""));
  // The job's codes must fit the blocks asked for, or the export at the end would refuse them.
  const bool coded = options.run.mode == "quantize" || options.run.mode == "qat";
  const int64_t code_bits = options.run.mode == "quantize" ? quantize.bits : qat.bits;
  const int64_t code_group = options.run.mode == "quantize" ? quantize.group_size : qat.group_size;
  if (coded && (export_step.gguf == "q4_0" || export_step.gguf == "q8_0")) {
    if ((export_step.gguf == "q4_0") != (code_bits == 4))
      throw ConfigError("export.gguf = " + export_step.gguf + " would re-round the job's " + std::to_string(code_bits) +
                        "-bit codes: use export.gguf = " + (code_bits == 4 ? "q4_0" : "q8_0") + " (or f16 / f32)");
    if (code_group != 32)
      throw ConfigError("export.gguf = " + export_step.gguf + " needs the job's codes in groups of 32 (GGUF blocks), but " +
                        options.run.mode + ".group_size = " + std::to_string(code_group) + ": set it to 32 or export f16 / f32");
  }
  if (options.run.mode == "federated") {
    if (!distill.teacher.empty()) job.client_loss = federated_distill_loss(distill);
    const FederatedResult result = run_federated_job(job, recipe.to_ini(), resume);
    if (result.rounds > 0) log_info("done: ", result.rounds, " rounds, final held-out loss ", result.val_loss, " in ", options.run.dir);
    return 0;
  }
  if (options.run.mode == "split") {
    const SplitResult result = run_split_job({job.lm, job.peft, job.fed, split}, recipe.to_ini(), resume);
    if (result.rounds > 0) log_info("done: ", result.rounds, " rounds, final held-out loss ", result.val_loss, " in ", options.run.dir);
    return 0;
  }
  if (options.run.mode == "quantize") {
    const double loss = run_quantize_job(job.lm, quantize, recipe.to_ini(), resume);
    export_after_job(export_step, options.run.dir);
    log_info("done: held-out loss ", loss, " in ", options.run.dir);
    return 0;
  }
  if (options.run.mode == "prune") {
    const auto loss = run_prune_job(job.lm, prune, job.peft, recipe.to_ini(), resume);
    if (!loss) return 0;
    export_after_job(export_step, options.run.dir);
    log_info("done: held-out loss ", *loss, " in ", options.run.dir);
    return 0;
  }
  if (options.run.mode == "distill" || options.run.mode == "qat") {
    const TrainResult result = options.run.mode == "distill"
                                   ? run_distill_job(options, distill, recipe.to_ini(), resume)
                                   : run_qat_job(options, qat, distill, recipe.to_ini(), resume);
    if (result.steps < options.train.steps) return 0;
    export_after_job(export_step, options.run.dir);
    log_info("done: ", result.steps, " steps, final held-out loss ", result.val_loss, " in ", options.run.dir);
    return 0;
  }
  if (options.run.mode == "icae-pretrain" || options.run.mode == "icae-finetune") {
    const TrainResult result = run_icae_job(options, icae, job.peft, recipe.to_ini(), resume);
    if (result.steps == options.train.steps)
      log_info("done: ", result.steps, " steps, final held-out loss ", result.val_loss, " in ", options.run.dir);
    return 0;
  }
  const auto adaptation = peft_adaptation(job.peft);
  const TrainResult result = run_lm_job(options, recipe.to_ini(), resume, adaptation ? &*adaptation : nullptr);
  log_info("done: ", result.steps, " steps, final held-out loss ", result.val_loss, " in ", options.run.dir);
  return 0;
}

}  // namespace fedsplit::cli
