// fedsplit plan split: profiles a model on this machine and picks the split-learning cut for a
// device/server deployment described by a devices.ini (see split/devices_profile.h).
#include <iostream>

#include "core/model/hf.h"
#include "core/util/error.h"
#include "core/util/threads.h"
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

}  // namespace

int plan(const Args& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "usage: fedsplit plan split --model DIR --profile devices.ini [--seq-len N] [--batch-size B]\n"
                 "                          [--codec fp32|fp16|bf16|int8] [--scheme vanilla|ushaped] [--threads N]\n";
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "split") return plan_split(Args(args.begin() + 1, args.end()));
  throw ConfigError("fedsplit plan: unknown planner '" + args[0] + "' (available: split)");
}

}  // namespace fedsplit::cli
