// How the server combines the round's client updates: every strategy sees the updates one at a time
// through add() and produces the new global tensors in finalize(), so that FedAvg, the LoRA
// aggregations (and later robust and secure aggregation) share one narrow interface.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

/// What the server knows about one update besides its tensors.
struct UpdateInfo {
  int64_t client = 0;   ///< client index
  double weight = 1;    ///< FedAvg weight: the client's training samples
  int64_t rank = 0;     ///< LoRA rank the client trained (0 without LoRA)
  double scaling = 1;   ///< LoRA scaling the client trained with
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  /// Takes one client's update (its parameters after local training, by parameter name).
  virtual void add(const TensorMap& update, const UpdateInfo& info) = 0;
  /// The combined tensors; the aggregator is empty again afterwards.
  virtual TensorMap finalize() = 0;
  /// Updates added since the last finalize().
  virtual int64_t count() const = 0;
};

/// Σ w_i x_i / Σ w_i key by key, accumulated in fp64 as updates arrive (memory: one copy of the tensors).
/// add() throws DataError naming the client when its weight is not positive, or its keys or shapes
/// differ from the first update's.
class WeightedMean : public Aggregator {
 public:
  void add(const TensorMap& update, const UpdateInfo& info) override;
  TensorMap finalize() override;
  int64_t count() const override { return count_; }

 private:
  TensorMap sum_;
  double total_weight_ = 0;
  int64_t count_ = 0;
};

/// The LoRA aggregations of federated/lora_aggregation.h over model parameter names ("<module>.lora_A"):
/// hetlora (zero-padding to `global_rank`, norm-weighted), flora (exact stacking: finalize returns the
/// stacked A and B, whose product is the round's update), ffa (B only, zero-padded). Keeps the round's
/// updates (LoRA tensors are small).
class LoraAggregator : public Aggregator {
 public:
  LoraAggregator(std::string method, int64_t global_rank);
  void add(const TensorMap& update, const UpdateInfo& info) override;
  TensorMap finalize() override;
  int64_t count() const override { return static_cast<int64_t>(updates_.size()); }

 private:
  std::string method_;
  int64_t global_rank_;
  std::vector<std::pair<TensorMap, UpdateInfo>> updates_;
};

/// WeightedMean over `updates` (client i has weight weights[i]), fp32. Throws DataError as add() does,
/// or for no updates.
TensorMap weighted_average(const std::vector<TensorMap>& updates, const std::vector<double>& weights);

/// The aggregator for federated.lora_aggregation = `method` (fedavg: WeightedMean).
std::unique_ptr<Aggregator> make_aggregator(const std::string& method, int64_t global_rank);

}  // namespace fedsplit
