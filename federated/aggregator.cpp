#include "federated/aggregator.h"

#include <cmath>

#include "core/util/error.h"
#include "core/util/fs.h"
#include "federated/lora_aggregation.h"

namespace fedsplit {
namespace {

// Model parameter names ("q_proj.lora_A") to the PEFT tensor names lora_aggregation works with
// ("q_proj.lora_A.weight"), and back.
TensorMap to_peft_names(const TensorMap& tensors) {
  TensorMap out;
  for (const auto& [name, t] : tensors)
    out[has_suffix(name, ".lora_A") || has_suffix(name, ".lora_B") ? name + ".weight" : name] = t;
  return out;
}

TensorMap from_peft_names(const TensorMap& tensors) {
  TensorMap out;
  for (const auto& [name, t] : tensors)
    out[has_suffix(name, ".lora_A.weight") || has_suffix(name, ".lora_B.weight") ? name.substr(0, name.size() - 7) : name] = t;
  return out;
}

}  // namespace

void WeightedMean::add(const TensorMap& update, const UpdateInfo& info) {
  const std::string client = "client " + std::to_string(info.client);
  if (!(info.weight > 0) || !std::isfinite(info.weight))
    throw DataError(client + " has weight " + std::to_string(info.weight) + ": weights must be positive");
  if (count_ > 0) {
    for (const auto& [name, t] : update) {
      const auto it = sum_.find(name);
      if (it == sum_.end()) throw DataError(client + "'s update has tensor " + name + ", which the first update lacks");
      if (it->second.sizes() != t.sizes())
        throw DataError(client + "'s tensor " + name + " has another shape than the first update's");
    }
    if (update.size() != sum_.size()) throw DataError(client + "'s update lacks tensors that the first update has");
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : update) {
    auto& sum = sum_[name];
    const auto term = t.to(torch::kFloat64) * info.weight;
    sum = sum.defined() ? sum.add_(term) : term;
  }
  total_weight_ += info.weight;
  ++count_;
}

TensorMap WeightedMean::finalize() {
  TensorMap out;
  for (auto& [name, sum] : sum_) out[name] = (sum / total_weight_).to(torch::kFloat32);
  sum_.clear();
  total_weight_ = 0;
  count_ = 0;
  return out;
}

LoraAggregator::LoraAggregator(std::string method, int64_t global_rank)
    : method_(std::move(method)), global_rank_(global_rank) {}

void LoraAggregator::add(const TensorMap& update, const UpdateInfo& info) { updates_.emplace_back(update, info); }

TensorMap LoraAggregator::finalize() {
  std::vector<LoraUpdate> updates;
  for (const auto& [tensors, info] : updates_) {
    LoraUpdate u;
    u.tensors = to_peft_names(tensors);
    u.weight = info.weight;
    u.rank = info.rank;
    u.scaling = info.scaling;
    updates.push_back(std::move(u));
  }
  updates_.clear();
  if (method_ == "hetlora") return from_peft_names(aggregate_hetlora(updates, global_rank_));
  if (method_ == "flora") return from_peft_names(stack_lora(updates));
  return from_peft_names(aggregate_ffa(updates, global_rank_));
}

TensorMap weighted_average(const std::vector<TensorMap>& updates, const std::vector<double>& weights) {
  if (updates.empty()) throw DataError("no client updates to average");
  if (updates.size() != weights.size())
    throw DataError(std::to_string(updates.size()) + " client updates but " + std::to_string(weights.size()) + " weights");
  WeightedMean mean;
  for (size_t i = 0; i < updates.size(); ++i) mean.add(updates[i], UpdateInfo{static_cast<int64_t>(i), weights[i]});
  return mean.finalize();
}

std::unique_ptr<Aggregator> make_aggregator(const std::string& method, int64_t global_rank) {
  if (method == "fedavg") return std::make_unique<WeightedMean>();
  return std::make_unique<LoraAggregator>(method, global_rank);
}

}  // namespace fedsplit
