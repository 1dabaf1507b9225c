#include "federated/participant.h"

#include <cmath>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

// "layers.0.self_attn.q_proj.lora_A" -> ("layers.0.self_attn.q_proj", 'A'); other names -> ("", 0).
std::pair<std::string, char> lora_part(const std::string& name) {
  if (has_suffix(name, ".lora_A")) return {name.substr(0, name.size() - 7), 'A'};
  if (has_suffix(name, ".lora_B")) return {name.substr(0, name.size() - 7), 'B'};
  return {"", 0};
}

double scaling_for(const LoraProjectionImpl& m, int64_t r) {
  return m.rslora ? m.alpha / std::sqrt(static_cast<double>(r)) : m.alpha / static_cast<double>(r);
}

}  // namespace

int64_t Participant::rank_in(const LoraProjectionImpl& m) const {
  return client_rank_ > 0 ? std::min(client_rank_, m.r) : m.r;
}

Participant::Participant(Decoder model, torch::Device device, std::string aggregation)
    : model_(std::move(model)), device_(device), aggregation_(std::move(aggregation)), lora_(lora_modules(model_)) {
  if (aggregation_ != "fedavg" && lora_.empty())
    throw ConfigError("federated.lora_aggregation = " + aggregation_ +
                      " needs LoRA adapters: set peft.method = lora, or federated.lora_aggregation = fedavg");
  for (auto& [path, m] : lora_) {
    if (aggregation_ == "flora" && m->quantized_base)
      throw ConfigError("federated.lora_aggregation = flora merges into the base weights, which peft.base_bits quantizes: "
                        "set peft.base_bits = 0 or use hetlora");
    if (aggregation_ == "ffa") m->lora_A.requires_grad_(false);  // FFA-LoRA: A stays at its shared init
  }
}

TensorMap Participant::global() const {
  TensorMap out;
  for (const auto& item : model_->named_parameters())
    if (item.value().requires_grad()) out[item.key()] = item.value().detach().to(torch::kCPU, torch::kFloat32, false, true);
  return out;
}

void Participant::load(const TensorMap& global) {
  torch::NoGradGuard no_grad;
  for (auto& item : model_->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    const auto it = global.find(item.key());
    TORCH_CHECK(it != global.end(), "global parameters lack ", item.key());
    item.value().copy_(it->second);
  }
}

double Participant::scaling_in(const LoraProjectionImpl& m, int64_t rank) const {
  // Only flora trains each client at its own scaling; truncation keeps the global one so that the
  // zero-padded sum means the same thing at every rank.
  return aggregation_ == "flora" ? scaling_for(m, std::min(rank, m.r)) : scaling_for(m, m.r);
}

double Participant::client_scaling(int64_t rank) const {
  return lora_.empty() ? 1.0 : scaling_in(*lora_.begin()->second, rank);
}

void Participant::begin_client(int64_t rank, uint64_t seed) {
  torch::manual_seed(seed);
  if (lora_.empty()) return;
  client_rank_ = rank;
  torch::NoGradGuard no_grad;
  for (auto& [path, m] : lora_) {
    const int64_t r = rank_in(*m);
    if (aggregation_ == "flora") {
      const double bound = 1.0 / std::sqrt(static_cast<double>(m->in_features));
      m->lora_A.copy_(torch::empty(m->lora_A.sizes(), torch::kFloat32).uniform_(-bound, bound));
      m->lora_B.zero_();
    }
    m->lora_A.narrow(0, r, m->r - r).zero_();
    m->lora_B.narrow(1, r, m->r - r).zero_();
    m->scaling = scaling_in(*m, rank);
  }
}

void Participant::mask_gradients() {
  if (lora_.empty()) return;
  for (auto& [path, m] : lora_) {
    const int64_t r = rank_in(*m);
    if (r == m->r) continue;
    if (m->lora_A.grad().defined()) m->lora_A.grad().narrow(0, r, m->r - r).zero_();
    if (m->lora_B.grad().defined()) m->lora_B.grad().narrow(1, r, m->r - r).zero_();
  }
}

TensorMap Participant::client_update() const {
  TensorMap out = global();
  if (lora_.empty()) return out;
  for (auto& [name, t] : out) {
    const auto [path, part] = lora_part(name);
    if (!part) continue;
    const int64_t r = rank_in(*lora_.at(path));
    t = (part == 'A' ? t.narrow(0, 0, r) : t.narrow(1, 0, r)).contiguous();
  }
  return out;
}

std::map<std::string, std::vector<int64_t>> Participant::update_shapes(int64_t rank) const {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& item : model_->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    auto shape = item.value().sizes().vec();
    const auto [path, part] = lora_part(item.key());
    if (part) shape[part == 'A' ? 0 : 1] = std::min(rank, lora_.at(path)->r);
    out[item.key()] = shape;
  }
  return out;
}

void Participant::end_client() {
  for (auto& [path, m] : lora_) m->scaling = scaling_for(*m, m->r);
  client_rank_ = 0;
}

void Participant::merge_stacked(const TensorMap& stacked) {
  torch::NoGradGuard no_grad;
  for (auto& [path, m] : lora_) {
    const auto a = stacked.find(path + ".lora_A");
    const auto b = stacked.find(path + ".lora_B");
    if (a == stacked.end() || b == stacked.end()) continue;
    m->weight.add_(torch::matmul(b->second, a->second).to(m->weight.device(), m->weight.scalar_type()));
  }
}

TensorMap Participant::base_weights() const {
  TensorMap out;
  for (const auto& [path, m] : lora_) out[path + ".weight"] = m->weight.detach().to(torch::kCPU).clone();
  return out;
}

void Participant::load_base_weights(const TensorMap& weights) {
  torch::NoGradGuard no_grad;
  for (auto& [path, m] : lora_) m->weight.copy_(weights.at(path + ".weight"));
}

}  // namespace fedsplit
