// Cutting a Decoder between a device and a server for split learning, without copying it: the cut
// runs the model's own embed / run_layers / head on both sides, so split training computes exactly
// what centralized training computes.
//
// Vanilla (and SplitFed): the device runs embed + blocks [0, c); the server runs blocks [c, L), the
// final norm and the LM head, so the labels travel to the server.
// U-shaped: the device runs embed + blocks [0, c); the server runs blocks [c, c2); the device runs
// blocks [c2, L), the final norm and the head, so the labels never leave the device.
//
// Tied embeddings (the head reads the token embedding table) are refused in vanilla: the server
// would need the table for its head, and keeping its copy equal to the device's (the table's head
// gradient down and the updated table back up, 2 * vocab * hidden values per step) would cost more
// than the activations themselves for any usual model. The U-shaped scheme keeps both ends of the
// model on the device, so a tied model splits there with nothing extra to move.
//
// Trainable prefix key/values (peft's prefix tuning) are one tensor read by every block, so they
// cannot sit on one side of a cut; a model with them is refused.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/model/decoder.h"

namespace fedsplit {

/// Where the model is cut (recipe keys split.cut and split.tail_cut).
struct SplitCut {
  /// c: the first block on the server; the device keeps the embeddings and blocks 0 .. c-1.
  int64_t cut = 1;
  /// U-shaped scheme when > 0: c2, the first block back on the device (c < c2 <= num_layers); the
  /// device keeps blocks c2 .. L-1, the final norm and the head. 0: vanilla (the server ends the model).
  int64_t tail_cut = 0;

  bool u_shaped() const { return tail_cut > 0; }
};

/// Which party holds a parameter.
enum class SplitSide { device, server };

/// Named tensors, as AdamW takes them.
using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;

/// Throws ConfigError (one line, naming split.cut or split.tail_cut and the valid range) unless
/// 1 <= cut < num_layers and, for U-shape, cut < tail_cut <= num_layers.
void validate_cut(const SplitCut& cut, int64_t num_layers);

/// A Decoder seen as its device and server parts. Holds the model (a shared handle), not a copy:
/// a device process and a server process each build one over their own copy of the model and use
/// only their side's functions and parameters.
class CutModel {
 public:
  /// ConfigError for a cut out of range, a tied head in vanilla, or a model with prefix key/values.
  CutModel(Decoder model, SplitCut cut);

  /// Device: embeddings and blocks [0, c) of token ids [B, T]: the activation [B, T, hidden].
  torch::Tensor device_front(const torch::Tensor& input_ids);
  /// Server: vanilla, blocks [c, L) and the head on the activation at c: logits [B, T, vocab];
  /// U-shaped, blocks [c, c2): hidden states [B, T, hidden] for the device's tail.
  torch::Tensor server_forward(const torch::Tensor& activation);
  /// Device, U-shaped only: blocks [c2, L), final norm and head on the hidden states at c2: logits.
  torch::Tensor device_tail(const torch::Tensor& hidden);

  /// The side holding the model parameter `name` (a key of model->named_parameters()). Error for a
  /// name that belongs to neither (a module this cut does not know).
  SplitSide side_of(const std::string& name) const;
  /// The trainable (requires_grad) parameters of `side`, in the model's order.
  NamedParameters parameters(SplitSide side) const;

  const SplitCut& cut() const { return cut_; }
  /// The model (a shared handle to the module this cut runs).
  Decoder model() const { return model_; }

 private:
  Decoder model_;
  SplitCut cut_;
};

}  // namespace fedsplit
