// fedsplit serve: an export's stages as a pipeline, one per rank of `mpirun -np S` (or all in one
// process), answering the prompts of standard input line by line (see launch/pipeline_serving.h).
#include <torch/torch.h>

#include <iostream>

#include "core/util/error.h"
#include "core/util/fs.h"
#include "infer/pipeline_shards.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/generation_flags.h"
#include "launch/model_tokenizer.h"
#include "launch/pipeline_serving.h"

namespace po = boost::program_options;

namespace fedsplit::cli {

int serve(const Args& args) {
  std::string manifest, tokenizer_path;
  PipelineFlags pipeline_flags;
  GenerateOptions defaults;
  po::options_description flags("serve");
  flags.add_options()
      ("manifest", po::value(&manifest)->required(), "manifest.json of a `fedsplit export gguf` directory")
      ("tokenizer", po::value(&tokenizer_path), "tokenizer file or directory (default: the one beside the manifest)");
  add_pipeline_flags(flags, pipeline_flags);
  add_generation_flags(flags, defaults);
  po::variables_map values;
  if (!parse_flags("serve", args, flags, values)) return 0;
  if (defaults.max_tokens < 1) throw ConfigError("--max-tokens must be at least 1");
  check_sampling_options(defaults.sampling);
  if (!is_manifest_path(manifest) || !path_exists(manifest))
    throw IoError("--manifest " + manifest + ": no such manifest.json (fedsplit export gguf writes one)");
  const auto tokenizer = tokenizer_for_model(manifest, tokenizer_path);
  set_engine_threads(pipeline_flags);
  const auto pipeline = open_pipeline_for(manifest, pipeline_flags);
  if (!pipeline) return 0;  // a stage rank: rank 0 has stopped the pipeline
  LineReader input(0);
  answer_requests(*pipeline, *tokenizer, input, defaults, pipeline_flags.timeout_s / 3);
  pipeline->stop();
  return 0;
}

}  // namespace fedsplit::cli
