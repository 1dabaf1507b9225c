// `run.mode = split`: split learning of a Decoder cut between devices (the clients) and a server.
// Clients are the [federated] partition's (partition, clients, rounds, sample_count/fraction,
// local_steps, client_speeds, network.link); rank 0 is the server and the other ranks host the
// clients (client c on rank host_rank(c, size)); in a world of one the device and server ends of a
// turn run as two threads joined in memory. Activations travel forward and their gradients back over
// c10d point-to-point (split/split_step.h).
//
// Schemes (split.scheme), per round over the sampled clients:
//   vanilla    clients take turns (seeded order); the device part and its AdamW moments pass from one
//              client to the next; one server part. The same batches give centralized training's model.
//   ushaped    as vanilla, but the device also keeps the last blocks and the head (split.tail_cut), so
//              labels never leave it.
//   splitfed1  SplitFed V1: every client starts from the round's device part; the server keeps a copy
//              of its part per client; at the end both parts are averaged, weighted by data.
//   splitfed2  SplitFed V2: every client starts from the round's device part, one shared server part
//              serves them in turn; the device parts are averaged.
//   splitlora  SplitLoRA: splitfed2's schedule with LoRA on both parts (peft.method = lora): only
//              adapters train and move; the client adapters are averaged as FedLoRA's are.
//   none       the centralized baseline: the server trains the whole model on the same batches in the
//              same order (its bytes are the token ids the clients would upload).
// Each round line of metrics.jsonl counts bytes per kind (activations and gradients, labels, device
// weights) and the simulated time from per-party compute speeds and the link.
#pragma once
#include <cstdint>
#include <string>

#include "federated/options.h"
#include "peft/method.h"
#include "train/lm_job.h"

namespace fedsplit {

class Recipe;

struct SplitSchemeOptions {
  std::string scheme = "vanilla";       ///< none | vanilla | ushaped | splitfed1 | splitfed2 | splitlora
  int64_t cut = 1;                      ///< the first block on the server
  int64_t tail_cut = 0;                 ///< ushaped: the first block back on the device (0 = num_layers: norm and head only)
  std::string codec = "fp32";           ///< activations at the cut: fp32 | fp16 | bf16 | int8 | topk:F
  std::string gradient_codec = "fp32";  ///< gradients sent back
  double noise_sigma = 0;               ///< smashed-data noise, std relative to the activation's RMS
  double server_tokens_per_s = 200000;  ///< the server's training speed for simulated time (whole-model tokens/s)
};

/// Registers the [split] keys.
void bind_split_options(Recipe& recipe, SplitSchemeOptions& options);

struct SplitJobOptions {
  LmJobOptions lm;             ///< [run], [model], [data], [train] (train.lr drives both parties' AdamW)
  PeftOptions peft;            ///< [peft]: what trains (none = the whole model; lora for splitlora)
  FederatedOptions fed;        ///< [federated], [network]: the clients, rounds, local steps, link
  SplitSchemeOptions split;    ///< [split]
};

struct SplitResult {
  int64_t rounds = 0;
  double val_loss = 0;  ///< held-out loss of the final model over every client's split
};

/// Runs the job on this process's rank; writes partition.json, metrics.jsonl, summary.json and the
/// result (model/ or adapter/) into run.dir. ConfigError for keys that do not fit together.
SplitResult run_split_job(const SplitJobOptions& options, const std::string& recipe_ini, bool resume);

}  // namespace fedsplit
