// fedsplit plan split: profiles a model on this machine and picks the split-learning cut for a
// device/server deployment described by a devices.ini (see split/devices_profile.h).
// fedsplit plan infer: profiles a GGUF model in the inference engine and spreads its layers over the
// devices of an inference devices.ini (see infer/infer_devices.h, infer/infer_planner.h).
#include <iostream>

#include "core/model/hf.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/threads.h"
#include "infer/engine_profile.h"
#include "infer/infer_devices.h"
#include "infer/infer_planner.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "split/devices_profile.h"
#include "split/layer_profile.h"
#include "split/planner.h"
#include "split/split_plan.h"

namespace po = boost::program_options;

namespace fedsplit::cli {

namespace {

int plan_split(const Args& args) {
  std::string model_path, profile_path, scheme = "vanilla";
  ProfileOptions o;
  po::options_description flags("plan split");
  flags.add_options()
      ("model", po::value(&model_path)->required(), "HF model directory to profile")
      ("profile", po::value(&profile_path)->required(), "devices.ini: device and server speed and memory, the link")
      ("seq-len", po::value(&o.seq_len)->default_value(o.seq_len), "tokens per sequence")
      ("batch-size", po::value(&o.batch_size)->default_value(o.batch_size), "sequences per step")
      ("codec", po::value(&o.codec)->default_value(o.codec), "activation codec at the cut: fp32|fp16|bf16|int8")
      ("scheme", po::value(&scheme)->default_value(scheme),
       "vanilla (device: embedding and first blocks) or ushaped (the device keeps the head too)")
      ("repetitions", po::value(&o.repetitions)->default_value(o.repetitions), "timed steps per stage (median)")
      ("threads", po::value(&o.threads)->default_value(0), "CPU threads while profiling (0 = all cores)");
  po::variables_map values;
  if (!parse_flags("plan split", args, flags, values)) return 0;
  cut_element_bytes(o.codec, "--codec");  // checked before the slow part
  const SplitScheme split_scheme = parse_scheme(scheme, "--scheme");
  // The cheap checks first: a bad devices.ini should not wait for the profile.
  const DevicesProfile devices = read_devices_profile(profile_path);
  set_cpu_threads(o.threads);
  Decoder model = load_hf_model(model_path);
  const LayerProfile profile = profile_layers(model, o, model_path);
  std::cout << profile.table() << "\n";

  const PlanProblem problem = split_problem(profile, devices, split_scheme);
  std::cout << to_string(split_scheme) << " split, device speed " << devices.device_speed << " / server speed "
            << devices.server_speed << ", link " << devices.link.up_mbps << "/" << devices.link.down_mbps << " Mbit/s, "
            << devices.link.latency_ms << " ms (" << profile_path << ")\n";
  std::cout << plan_table(problem, enumerate_plans(problem));
  try {
    std::cout << describe_choice(problem, solve(problem)) << "\n";
  } catch (const InfeasiblePlanError& e) {
    std::cout.flush();
    throw ConfigError(infeasible_message(e, devices));
  }
  return 0;
}

int plan_infer(const Args& args) {
  std::string model_path, devices_path, objective = "latency", out_path;
  int64_t context = 0, sequences = 1;
  EngineProfileOptions o;
  po::options_description flags("plan infer");
  flags.add_options()
      ("model", po::value(&model_path)->required(), "GGUF model file (the whole model) to profile")
      ("devices", po::value(&devices_path)->required(), "devices.ini: devices' speed and memory, the links")
      ("objective", po::value(&objective)->default_value(objective),
       "latency (per-token time of one sequence) or throughput (the bottleneck stage of a pipeline)")
      ("context", po::value(&context)->default_value(context), "positions cached per sequence (0 = the model's maximum)")
      ("sequences", po::value(&sequences)->default_value(sequences), "sequences cached at once on every device")
      ("threads", po::value(&o.threads)->default_value(o.threads), "CPU threads of the engine while profiling")
      ("position", po::value(&o.position)->default_value(o.position), "cache position the decode steps are timed at")
      ("repetitions", po::value(&o.repetitions)->default_value(o.repetitions), "timed decode steps (median)")
      ("out", po::value(&out_path), "write the plan here (JSON that `fedsplit export gguf --plan` reads)");
  po::variables_map values;
  if (!parse_flags("plan infer", args, flags, values)) return 0;
  // The cheap checks first: a bad flag or devices.ini should not wait for the profile.
  const InferObjective goal = parse_objective(objective, "--objective");
  if (context < 0) throw ConfigError("--context " + std::to_string(context) + ": give 0 (the model's maximum) or more");
  if (sequences < 1) throw ConfigError("--sequences " + std::to_string(sequences) + ": give 1 or more");
  if (o.threads < 1) throw ConfigError("--threads " + std::to_string(o.threads) + ": give 1 or more");
  if (!path_exists(model_path)) throw IoError("--model " + model_path + ": no such file");
  const InferDevicesFile devices = read_infer_devices(devices_path);
  set_cpu_threads(o.threads);
  const EngineProfile profile = profile_engine(model_path, o);
  std::cout << profile.table() << "\n";

  const InferProblem problem = infer_problem(profile, devices, goal, context, sequences);
  std::cout << devices.devices.size() << " devices (" << devices_path << "), context " << problem.context << " x "
            << problem.sequences << " sequence" << (problem.sequences == 1 ? "" : "s") << ", objective "
            << to_string(goal) << "\n";
  const InferPlan plan = solve(problem);
  std::cout << plan_table(problem, plan);
  if (!out_path.empty()) {
    write_text_atomically(out_path, stage_plan_json(problem, plan));
    std::cout << "plan written to " << out_path << " (fedsplit export gguf --plan " << out_path << ")\n";
  }
  return 0;
}

}  // namespace

int plan(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: fedsplit plan split --model DIR --profile devices.ini [--seq-len N] [--batch-size B]\n"
                 "                          [--codec fp32|fp16|bf16|int8] [--scheme vanilla|ushaped] [--threads N]\n"
                 "       fedsplit plan infer --model FILE.gguf --devices devices.ini [--objective latency|throughput]\n"
                 "                          [--context N] [--sequences N] [--threads N] [--out plan.json]\n";
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "split") return plan_split(Args(args.begin() + 1, args.end()));
  if (args[0] == "infer") return plan_infer(Args(args.begin() + 1, args.end()));
  throw ConfigError("fedsplit plan: unknown planner '" + args[0] + "' (available: split, infer)");
}

}  // namespace fedsplit::cli
