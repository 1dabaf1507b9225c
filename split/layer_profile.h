// Per-stage profile of a Decoder's training step on this machine, the input of the cut planner.
//
// Stages, in order: "embed" (token + learned position embeddings), "block 0" .. "block L-1", and
// "head" (final norm, LM head, cross-entropy loss). A cut after stage i sends stage i's output
// [B, T, hidden] forward and its gradient back.
//
// What is measured and what is computed:
//   forward_seconds, backward_seconds  measured: the median over `repetitions` timed steps, after
//       `warmup` untimed ones, of each stage run on its own (its input detached), forward with autograd
//       recording and backward from the gradient the next stage handed back; CPU, fp32, train mode.
//   activation_bytes  measured: bytes of CPU memory that the stage's forward allocated and still holds
//       when it returns (the tensors autograd saved for backward and the stage's output), counted by a
//       counting CPU allocator installed for one untimed step.
//   param_bytes, trainable_bytes  computed from the parameters (trainable: requires_grad). With a tied
//       head the token embedding belongs to "embed"; "head" reports it as tied_bytes.
//   cut_bytes  computed: B * T * hidden * bytes per element of the codec, the same each way.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fedsplit {

class Decoder;

/// Bytes per element that a cut's codec puts on the wire: fp32 4, fp16 and bf16 2, int8 1 (the scales
/// an int8 codec adds per row are not counted). ConfigError naming `where` for any other codec.
int64_t cut_element_bytes(const std::string& codec, const std::string& where);

struct ProfileOptions {
  int64_t batch_size = 4;    ///< sequences per step (B)
  int64_t seq_len = 128;     ///< tokens per sequence (T); at most the model's max_position
  std::string codec = "fp32";  ///< element type at a cut: fp32|fp16|bf16|int8
  int64_t warmup = 1;        ///< untimed steps before measuring
  int64_t repetitions = 3;   ///< timed steps; each stage reports the median
  int64_t threads = 0;       ///< torch intra-op threads while profiling (0 = leave as set)
  uint64_t seed = 1234;      ///< seed of the random token ids and targets
};

struct StageProfile {
  std::string name;               ///< "embed", "block N" or "head"
  double forward_seconds = 0;     ///< median forward time (measured)
  double backward_seconds = 0;    ///< median backward time (measured)
  int64_t param_bytes = 0;        ///< bytes of the parameters this stage owns
  int64_t trainable_bytes = 0;    ///< of which require grad
  int64_t tied_bytes = 0;         ///< bytes of parameters it reads but another stage owns (a tied head)
  int64_t activation_bytes = 0;   ///< memory held from forward until backward (measured)
  int64_t cut_bytes = 0;          ///< bytes sent forward (and back) by a cut after this stage; 0 for "head"
};

struct LayerProfile {
  std::string model;          ///< what was profiled (for the table's title)
  ProfileOptions options;     ///< as used
  int64_t hidden_size = 0;
  std::vector<StageProfile> stages;  ///< embed, blocks, head
  /// The table: one row per stage with its times, bytes and memory.
  std::string table() const;
};

/// Profiles `model` (on the CPU) with random token ids. The model's train/eval mode, gradients and
/// the thread count are restored afterwards. ConfigError for non-positive sizes or seq_len beyond
/// the model's max_position.
LayerProfile profile_layers(Decoder& model, const ProfileOptions& options, const std::string& name = "model");

}  // namespace fedsplit
