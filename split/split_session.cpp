#include "split/split_session.h"

#include <cmath>

#include "core/util/error.h"
#include "split/channel.h"

namespace fedsplit {
namespace {

void add(SessionTally& t, const SplitStepReport& r) {
  ++t.steps;
  if (!std::isnan(r.loss)) t.loss_sum += r.loss, ++t.loss_steps;
  t.bytes_up += r.bytes_up;
  t.bytes_down += r.bytes_down;
  t.messages_up += r.messages_up;
  t.messages_down += r.messages_down;
}

}  // namespace

nlohmann::json SessionTally::to_json() const {
  return {{"loss_sum", loss_sum}, {"loss_steps", loss_steps}, {"steps", steps}, {"tokens", tokens},
          {"bytes_up", bytes_up}, {"bytes_down", bytes_down}, {"messages_up", messages_up}, {"messages_down", messages_down}};
}

SessionTally SessionTally::from_json(const nlohmann::json& j) {
  SessionTally t;
  t.loss_sum = j.at("loss_sum");
  t.loss_steps = j.at("loss_steps");
  t.steps = j.at("steps");
  t.tokens = j.at("tokens");
  t.bytes_up = j.at("bytes_up");
  t.bytes_down = j.at("bytes_down");
  t.messages_up = j.at("messages_up");
  t.messages_down = j.at("messages_down");
  return t;
}

void SessionTally::merge_loss(const SessionTally& other) {
  if (tokens == 0) tokens = other.tokens;  // only the device reads the batches
  if (loss_steps > 0) return;
  loss_sum = other.loss_sum;
  loss_steps = other.loss_steps;
}

SessionTally run_device_session(SplitDevice& device, Channel& server, TokenDataset& data, int64_t round, int64_t steps,
                                double lr) {
  const int64_t consumed = round * steps;
  data.seek({consumed / data.batches_per_epoch(), consumed % data.batches_per_epoch()});
  SessionTally t;
  for (int64_t s = 0; s < steps; ++s) {
    const Batch b = data.next_batch();
    add(t, device.step(server, b.input_ids, b.targets, lr));
    t.tokens += b.targets.numel();
  }
  return t;
}

SessionTally run_server_session(SplitServer& server, Channel& device, int64_t steps, double lr) {
  SessionTally t;
  for (int64_t s = 0; s < steps; ++s) add(t, server.step(device, lr));
  return t;
}

TensorMap side_weights(const CutModel& cut, SplitSide side) {
  TensorMap out;
  for (const auto& [name, p] : cut.parameters(side)) out[name] = p.detach().to(torch::kCPU).clone();
  return out;
}

void load_side_weights(CutModel& cut, SplitSide side, const TensorMap& weights) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : cut.parameters(side)) {
    const auto it = weights.find(name);
    if (it == weights.end()) throw Error("split: no weights for " + name);
    p.copy_(it->second);
  }
}

namespace {

const torch::Tensor& expect_tensor(const TensorMap& tensors, const std::string& name, const torch::Tensor& like,
                                   const std::string& from) {
  const auto it = tensors.find(name);
  if (it == tensors.end() || !it->second.sizes().equals(like.sizes()))
    throw FormatError("split: the state from " + from + " lacks " + name + " (" + std::to_string(like.numel()) +
                      " values): both parties must run the same model and scheme");
  return it->second;
}

}  // namespace

TensorMap adamw_moments(const AdamW& optimizer) {
  TensorMap out;
  for (const auto& p : optimizer.params()) {
    out["adamw.exp_avg." + p.name] = p.exp_avg.to(torch::kCPU);
    out["adamw.exp_avg_sq." + p.name] = p.exp_avg_sq.to(torch::kCPU);
  }
  return out;
}

void load_adamw_moments(AdamW& optimizer, const TensorMap& moments, int64_t steps, const std::string& from) {
  optimizer.set_steps_taken(steps);
  for (auto& p : optimizer.params()) {
    p.exp_avg = expect_tensor(moments, "adamw.exp_avg." + p.name, p.value, from).to(p.value.device()).clone();
    p.exp_avg_sq = expect_tensor(moments, "adamw.exp_avg_sq." + p.name, p.value, from).to(p.value.device()).clone();
  }
}

Message pack_device_state(const CutModel& cut, const AdamW* optimizer) {
  Message m;
  m.tensors = side_weights(cut, SplitSide::device);
  if (!optimizer) return m;
  m.meta["adamw_steps"] = optimizer->steps_taken();
  for (auto& [name, t] : adamw_moments(*optimizer)) m.tensors[name] = t;
  return m;
}

void unpack_device_state(const Message& state, CutModel& cut, AdamW* optimizer, const std::string& from) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : cut.parameters(SplitSide::device)) p.copy_(expect_tensor(state.tensors, name, p, from));
  if (optimizer && state.meta.contains("adamw_steps"))
    load_adamw_moments(*optimizer, state.tensors, state.meta.at("adamw_steps").get<int64_t>(), from);
}

}  // namespace fedsplit
