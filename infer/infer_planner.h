// Inference partition planner: which devices run a decoder and which contiguous layers each holds,
// chosen by dynamic programming over (layers placed, devices used, last device) as in EdgeShard
// (Zhang et al., 2024). Torch-free: the costs come from infer/engine_profile.h or from tests.
//
// Model of one decode step (one token of one sequence), times measured on a profiling machine and
// divided by each device's speed:
//   a plan    = K >= 1 stages, each a contiguous layer range [b, e) on its own device (a device runs
//               at most one stage; devices may stay unused); stage 0 also runs the embedding, the
//               last stage the final norm and head; with `first_device` set, stage 0 runs there
//               (the source, where the prompt is).
//   compute   = (sum of its layers' seconds [+ embed] [+ head]) / speed
//   transfer  = into stage k > 0: activation_bytes over the link between the two devices, one
//               message (bytes * 8 / (mbps * 1e6) + latency_ms / 1000; 0 mbps = unlimited); and
//               when K > 1 and return_token, the sampled token (token_bytes) from the last stage
//               back to stage 0's device, which embeds it for the next step.
//   memory    = weights of its layers [+ embed] [+ head] [+ a tied head's copy of the embedding
//               when the last stage is not stage 0]
//               + kv_bytes_per_token of its layers * context * sequences
//               (must be <= memory_bytes; 0 = unlimited)
//   objective latency    = sum of every compute and transfer (one token's round trip)
//   objective throughput = the bottleneck: max over stage computes and transfers (the period of a
//               pipeline that keeps every stage busy with different sequences)
//
// solve(): for each possible first device, DP over (layers placed, used devices bitmask, last device);
// a transition adds a range on an unused device. Sum and max are both monotone, so the DP is exact.
// Work ~ F * N^2 * 2^(D-1) * D^2 (F first devices, N layers, D devices); more than 16 devices, or a
// problem whose state table would not fit in memory, is refused with a ConfigError.
// brute_force() evaluates every ordered selection of devices and every split; it is the reference.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "compress/stage_plan.h"
#include "core/util/error.h"

namespace fedsplit {

/// One decoder block, as measured on the profiling machine.
struct InferLayerCost {
  double seconds = 0;              ///< one decode step (T = 1) through the block
  int64_t weight_bytes = 0;        ///< its weights as stored
  int64_t kv_bytes_per_token = 0;  ///< its cache: bytes per position per sequence
};

struct InferDevice {
  std::string name;          ///< as in devices.ini and the plan's "device"
  double speed = 1;          ///< relative to the profiling machine (2 = twice as fast); > 0
  int64_t memory_bytes = 0;  ///< what the model may use there; 0 = unlimited
};

struct InferLink {
  double mbps = 0;        ///< bandwidth in megabits/s, both ways (0 = unlimited)
  double latency_ms = 0;  ///< one way, per message
};

/// A link between two devices that differs from the default (symmetric).
struct InferLinkOverride {
  int a = 0;
  int b = 0;
  InferLink link;
};

enum class InferObjective { latency, throughput };

struct InferProblem {
  std::vector<InferLayerCost> layers;  ///< N >= 1 blocks, in order
  double embed_seconds = 0;            ///< token embedding (with stage 0)
  int64_t embed_weight_bytes = 0;
  double head_seconds = 0;             ///< final norm and head (with the last stage)
  int64_t head_weight_bytes = 0;
  int64_t head_copy_bytes = 0;         ///< a model whose head is its embedding (tied): the copy of the
                                       ///< embedding that the last stage holds when it is not stage 0
  int64_t activation_bytes = 0;        ///< hidden state of one token, sent between stages
  bool return_token = true;            ///< model the sampled token's trip back to stage 0
  int64_t token_bytes = 4;             ///< its size
  std::vector<InferDevice> devices;    ///< 1..16
  InferLink default_link;              ///< between any two devices ...
  std::vector<InferLinkOverride> links;  ///< ... unless overridden here
  int64_t context = 0;                 ///< positions cached per sequence
  int64_t sequences = 1;               ///< sequences cached at once
  InferObjective objective = InferObjective::latency;
  int first_device = -1;               ///< device that must run stage 0; -1 = any
};

/// One stage of a plan and what it costs.
struct InferStage {
  int device = 0;
  int64_t layer_begin = 0;
  int64_t layer_end = 0;
  double compute_seconds = 0;      ///< filled by evaluate
  double transfer_seconds = 0;     ///< into this stage from the previous one (0 for stage 0)
  int64_t memory_bytes = 0;        ///< on its device
};

struct InferPlan {
  std::vector<InferStage> stages;
  double return_seconds = 0;      ///< the token back to stage 0 (0 for one stage)
  double latency_seconds = 0;     ///< per token: every compute and transfer
  double bottleneck_seconds = 0;  ///< the slowest stage compute or transfer
  double objective = 0;           ///< latency_seconds or bottleneck_seconds
  bool feasible = false;          ///< every device within its memory
  std::string limit;              ///< why not: "[device phone] needs 812.0 MB > 512.0 MB"; "" if feasible

  /// The stages in compress/stage_plan.h's form (device names from `problem`).
  std::vector<StageRange> ranges(const InferProblem& problem) const;
  /// Tokens per second: 1 / latency for latency, 1 / bottleneck for throughput.
  double tokens_per_second(InferObjective objective) const;
};

/// No placement fits the devices' memory. `device` is the device whose memory to raise (the one that
/// needs the least extra) and `needed_bytes` the least it needs in a placement that fits the others.
struct InfeasibleInferPlanError : ConfigError {
  InfeasibleInferPlanError(const std::string& message, int device, int64_t needed_bytes)
      : ConfigError(message), device(device), needed_bytes(needed_bytes) {}
  int device;
  int64_t needed_bytes;
};

/// ConfigError for a malformed problem: no layers or devices, more than 16 devices, a speed <= 0,
/// negative costs or sizes, a link override naming an unknown device or one device twice, a bad
/// first device, sequences < 1.
void validate(const InferProblem& problem);

/// The seconds of one message of `bytes` between devices a and b (a != b).
double link_seconds(const InferProblem& problem, int a, int b, int64_t bytes);

/// The costs of `stages` (device, layer_begin, layer_end; the rest is filled). ConfigError when they
/// do not cover 0..N contiguously with non-empty ranges, repeat a device, or put stage 0 elsewhere
/// than first_device.
InferPlan evaluate(const InferProblem& problem, std::vector<InferStage> stages);

/// The feasible plan of least objective, by dynamic programming. InfeasibleInferPlanError (one line,
/// naming the device whose memory_mb to raise and to what) when none fits.
InferPlan solve(const InferProblem& problem);

/// The same by evaluating every plan (the reference for solve; ties go to the first found).
InferPlan brute_force(const InferProblem& problem);

/// The plan as a table: a row per stage (device, layers, compute and incoming transfer ms per token,
/// memory MB against the device's limit), then the predicted per-token latency and throughput.
std::string plan_table(const InferProblem& problem, const InferPlan& plan);

/// The plan in compress/stage_plan.h's JSON ({"stages":[{"layers":[b,e],"device":"NAME"}, ...]}),
/// which `fedsplit export gguf --plan` reads.
std::string stage_plan_json(const InferProblem& problem, const InferPlan& plan);

const char* to_string(InferObjective objective);
/// "latency" or "throughput"; ConfigError naming `key` otherwise.
InferObjective parse_objective(const std::string& text, const std::string& key);

}  // namespace fedsplit
