// fedsplit serve: an export's stages as a pipeline, one per rank of `mpirun -np S` (or all in one
// process), answering the prompts of standard input line by line (see launch/pipeline_serving.h).
#include <torch/torch.h>

#include <iostream>

#include "core/comm/world.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "infer/pipeline_session.h"
#include "infer/pipeline_shards.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "launch/generation_flags.h"
#include "launch/model_tokenizer.h"
#include "launch/pipeline_serving.h"

namespace po = boost::program_options;

namespace fedsplit::cli {

int serve(const Args& args) {
  std::string manifest, tokenizer_path, device = "cpu";
  int64_t threads = 2, context = 0, micro_batches = 4;
  double timeout_s = 600;
  bool no_verify = false;
  GenerateOptions defaults;
  po::options_description flags("serve");
  flags.add_options()
      ("manifest", po::value(&manifest)->required(), "manifest.json of a `fedsplit export gguf` directory")
      ("tokenizer", po::value(&tokenizer_path), "tokenizer file or directory (default: the one beside the manifest)")
      ("micro-batches", po::value(&micro_batches)->default_value(micro_batches),
       "sequences in flight at once (each stage keeps a KV cache per sequence)")
      ("threads", po::value(&threads)->default_value(threads), "CPU threads per rank")
      ("context", po::value(&context)->default_value(context), "KV cache positions per sequence (0 = the model's)")
      ("device", po::value(&device)->default_value(device), "cpu, or cuda (rank r on CUDA device r)")
      ("timeout", po::value(&timeout_s)->default_value(timeout_s), "seconds any rank waits for another before failing")
      ("no-verify", po::bool_switch(&no_verify), "skip the BLAKE2b check of the shards");
  add_generation_flags(flags, defaults);
  po::variables_map values;
  if (!parse_flags("serve", args, flags, values)) return 0;
  if (micro_batches < 1) throw ConfigError("--micro-batches must be at least 1");
  if (defaults.max_tokens < 1) throw ConfigError("--max-tokens must be at least 1");
  check_sampling_options(defaults.sampling);
  if (!is_manifest_path(manifest) || !path_exists(manifest))
    throw IoError("--manifest " + manifest + ": no such manifest.json (fedsplit export gguf writes one)");
  const auto tokenizer = tokenizer_for_model(manifest, tokenizer_path);
  torch::set_num_threads(static_cast<int>(std::max<int64_t>(1, threads)));

  CommOptions comm;
  comm.backend = device == "cuda" ? "auto" : "gloo";
  comm.timeout_s = timeout_s;
  const auto world = World::create(comm);
  PipelineOptions options;
  options.stage.threads = static_cast<int>(threads);
  options.stage.context = context;
  options.stage.slots = micro_batches;
  options.device = device;
  options.verify_hash = !no_verify;
  const auto pipeline = open_pipeline(manifest, options, world);
  if (!pipeline) return 0;  // a stage rank: rank 0 has stopped the pipeline
  LineReader input(0);
  answer_requests(*pipeline, *tokenizer, input, defaults, timeout_s / 3);
  pipeline->stop();
  return 0;
}

}  // namespace fedsplit::cli
