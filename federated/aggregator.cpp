#include "federated/aggregator.h"

#include "core/util/error.h"
#include "federated/lora_aggregation.h"

namespace fedsplit {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Model parameter names ("q_proj.lora_A") to the PEFT tensor names lora_aggregation works with
// ("q_proj.lora_A.weight"), and back.
TensorMap to_peft_names(const TensorMap& tensors) {
  TensorMap out;
  for (const auto& [name, t] : tensors)
    out[ends_with(name, ".lora_A") || ends_with(name, ".lora_B") ? name + ".weight" : name] = t;
  return out;
}

TensorMap from_peft_names(const TensorMap& tensors) {
  TensorMap out;
  for (const auto& [name, t] : tensors)
    out[ends_with(name, ".lora_A.weight") || ends_with(name, ".lora_B.weight") ? name.substr(0, name.size() - 7) : name] = t;
  return out;
}

}  // namespace

void WeightedMean::add(const TensorMap& update, const UpdateInfo& info) {
  if (!(info.weight > 0)) throw DataError("client " + std::to_string(info.client) + " has weight " +
                                          std::to_string(info.weight) + ": weights must be positive");
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

std::unique_ptr<Aggregator> make_aggregator(const std::string& method, int64_t global_rank) {
  if (method == "fedavg") return std::make_unique<WeightedMean>();
  return std::make_unique<LoraAggregator>(method, global_rank);
}

}  // namespace fedsplit
