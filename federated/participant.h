// The model one rank holds, and what each client sees of it. A rank keeps a single model however many
// virtual clients it hosts: before a client trains, the global parameters are loaded into it (for a
// lower-rank LoRA client, truncated by zeroing the unused rows of A and columns of B, whose gradients
// stay masked); after, the client's update is read out and the next client starts from the global
// parameters again. So memory does not grow with the number of clients.
//
// LoRA aggregations (federated.lora_aggregation):
//   fedavg   A and B train and are averaged separately (every client at the global rank)
//   hetlora  client i trains the first r_i ranks at the global scaling; the server zero-pads and
//            norm-weights (federated/lora_aggregation.h)
//   flora    every round each client starts a fresh LoRA of rank r_i (A from its seed, B = 0) at its own
//            scaling alpha / r_i; the server stacks the updates and every rank adds the stacked product to
//            its frozen base weights, so the base model moves each round
//   ffa      A stays frozen at its shared initialisation; only B trains and travels
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "core/io/safetensors.h"  // TensorMap
#include "core/model/decoder.h"
#include "peft/lora.h"

namespace fedsplit {

class Participant {
 public:
  /// `model` has its trainable parameters set (by a PEFT method, or all). `lora_aggregation` applies
  /// when the model holds LoRA projections. Throws ConfigError for flora/ffa/hetlora without LoRA, or
  /// flora over a quantized base.
  Participant(Decoder model, torch::Device device, std::string lora_aggregation);

  Decoder& model() { return model_; }
  torch::Device device() const { return device_; }
  bool has_lora() const { return !lora_.empty(); }
  const std::string& lora_aggregation() const { return aggregation_; }

  /// The global parameters: every trainable parameter by name, CPU fp32 copies.
  TensorMap global() const;
  /// Loads global parameters (the keys of global()) into the model.
  void load(const TensorMap& global);

  /// Prepares the model for a client of LoRA rank `rank` (ignored without LoRA) whose round seed is
  /// `seed`: truncation (hetlora, ffa) or a fresh rank-r LoRA at its own scaling (flora).
  void begin_client(int64_t rank, uint64_t seed);
  /// Zeroes the gradients of the rows and columns beyond the current client's rank.
  void mask_gradients();
  /// The current client's update: its trainable tensors cut to its rank, CPU fp32 copies.
  TensorMap client_update() const;
  /// The names and shapes client_update() has for a client of `rank`.
  std::map<std::string, std::vector<int64_t>> update_shapes(int64_t rank) const;
  /// The scaling a client of `rank` trains with (alpha / r or rsLoRA's; the modules share alpha and r
  /// when lora_aggregation is not fedavg). 1 without LoRA.
  double client_scaling(int64_t rank) const;
  /// Restores the global rank's scaling after a client.
  void end_client();

  /// flora: adds B_stack · A_stack of each module of `stacked` (keys "<module>.lora_A/B") to its base weight.
  void merge_stacked(const TensorMap& stacked);
  /// flora: the adapted modules' base weights ("<module>.weight"), which merging changes; and loading them back.
  TensorMap base_weights() const;
  void load_base_weights(const TensorMap& weights);

 private:
  Decoder model_;
  torch::Device device_;
  std::string aggregation_;
  std::map<std::string, LoraProjection> lora_;
  // The current client's rank in module `m` (its global rank between clients).
  int64_t rank_in(const LoraProjectionImpl& m) const;
  double scaling_in(const LoraProjectionImpl& m, int64_t rank) const;
  int64_t client_rank_ = 0;  // 0 = the global rank
};

}  // namespace fedsplit
