// One training step of split learning across a cut, between a device and a server. The two parties
// run on different ranks (or threads) and own disjoint parameter partitions, each with its own
// AdamW over the trainable parameters of its side (split/cut.h); every message is a codec message
// (split/codec.h) sent through a Channel.
//
// Vanilla, per step (device -> server is "up"):
//   up    activation at the cut (activation codec, noise first when set)
//   up    target token ids
//   down  gradient of the loss w.r.t. the activation (gradient codec)
// U-shaped, per step (the labels never leave the device):
//   up    activation at cut
//   down  hidden states at tail_cut (activation codec)
//   up    gradient w.r.t. those hidden states (gradient codec)
//   down  gradient w.r.t. the activation at cut (gradient codec)
//
// With the fp32 codecs and no noise a step computes exactly what one centralized step computes: the
// same next-token loss (train/trainer.h), the same gradients and the same AdamW update, because
// AdamW updates each parameter from its own gradient and both optimizers count the same steps.
// Global-norm gradient clipping is not applied: it would need the other side's gradient norm
// before either side could step (one more exchange per step).
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <limits>

#include "core/model/decoder.h"
#include "split/codec.h"
#include "split/cut.h"
#include "split/noise.h"
#include "train/adamw.h"

namespace fedsplit {

class Channel;

struct SplitOptions {
  SplitCut cut;            ///< where the model is cut (vanilla or U-shaped)
  Codec activation_codec;  ///< split.codec: activations at the cut (and the server's hidden states at tail_cut)
  Codec gradient_codec;    ///< gradients sent back across a cut; fp32 keeps training exact
  NoiseOptions noise;      ///< Gaussian noise on the device's smashed data (privacy defence)
  AdamWOptions adamw;      ///< both parties' optimizer settings
};

/// What one step moved and computed, as seen by one party.
struct SplitStepReport {
  /// Mean next-token loss of the batch, on the party that computes it (the server in vanilla, the
  /// device in U-shape); NaN on the other, which never sees it.
  double loss = std::numeric_limits<double>::quiet_NaN();
  int64_t bytes_up = 0;       ///< message bytes device -> server
  int64_t bytes_down = 0;     ///< message bytes server -> device
  int64_t messages_up = 0;    ///< messages device -> server
  int64_t messages_down = 0;  ///< messages server -> device
};

/// The device's part: the embeddings and first blocks (and in U-shape the last blocks and head).
class SplitDevice {
 public:
  /// `model` is this party's copy of the whole model; only the device side is run and trained.
  SplitDevice(Decoder model, const SplitOptions& options);

  /// One step on a batch: input ids and next-token targets [B, T] (int64), at learning rate `lr`.
  SplitStepReport step(Channel& server, const torch::Tensor& input_ids, const torch::Tensor& targets, double lr);

  const CutModel& cut_model() const { return cut_; }
  AdamW& optimizer() { return optimizer_; }

 private:
  CutModel cut_;
  SplitOptions options_;
  ActivationNoise noise_;
  AdamW optimizer_;
};

/// The server's part: the middle blocks (vanilla: and the head). It takes no labels: in vanilla
/// they arrive from the device as a message, in U-shape they never arrive.
class SplitServer {
 public:
  /// `model` is this party's copy of the whole model; only the server side is run and trained.
  SplitServer(Decoder model, const SplitOptions& options);

  /// Serves one device step at learning rate `lr`.
  SplitStepReport step(Channel& device, double lr);

  const CutModel& cut_model() const { return cut_; }
  AdamW& optimizer() { return optimizer_; }

 private:
  CutModel cut_;
  SplitOptions options_;
  AdamW optimizer_;
};

}  // namespace fedsplit
