#include "federated/client_host.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <limits>

#include "core/util/log.h"
#include "federated/sampling.h"

namespace fedsplit {
namespace {

// Faults a test can ask a client to commit, to check that the server leaves it out.
void inject_fault(const std::string& kind, Message& update) {
  if (update.tensors.empty()) return;
  auto& [name, t] = *update.tensors.begin();
  if (kind == "nonfinite") t.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  if (kind == "shape") t = t.narrow(0, 0, std::max<int64_t>(t.size(0) - 1, 0)).contiguous();
  if (kind == "dtype") t = t.to(torch::kFloat16);
}

}  // namespace

ClientHost::ClientHost(Participant& participant, std::vector<TokenDataset>& datasets, const ClientRoster& roster,
                       LocalTrainingOptions training, AttackOptions attack, uint64_t seed, bool shares_server_model)
    : participant_(participant), datasets_(datasets), roster_(roster), training_(std::move(training)),
      attack_(std::move(attack)), seed_(seed), shares_server_model_(shares_server_model) {}

void ClientHost::on_round(const Message& round) {
  round_ = round.meta.at("round").get<int64_t>();
  if (round.meta.value("content", "global") == "stack") {
    const int64_t stack_round = round.meta.at("stack_round").get<int64_t>();
    if (!shares_server_model_ && stack_round > merged_stack_round_) participant_.merge_stacked(round.tensors);
    merged_stack_round_ = stack_round;
    global_ = participant_.global();  // flora clients start each round from a fresh LoRA anyway
  } else {
    global_ = round.tensors;
  }
}

std::string ClientHost::train_client(int64_t c) {
  const auto i = static_cast<size_t>(c);
  Message update;
  update.meta = {{"client", c}, {"round", round_}, {"status", "ok"}, {"samples", roster_.samples[i]}};
  const auto fault = roster_.faults.find(c);
  if (fault != roster_.faults.end() && fault->second == "silent") {
    // A silent client: in a simulation the ranks stay in step, so it reports that it has nothing.
    update.meta["status"] = "silent";
    return encode_message(update);
  }
  participant_.load(global_);
  participant_.begin_client(roster_.lora_ranks[i], client_seed(seed_, round_, c));
  TokenDataset& data = datasets_[i];
  // Each client reads its data as if it trained every round: the stream position is a function of the round.
  const int64_t steps = roster_.local_steps[i];
  const int64_t consumed = round_ * steps;
  data.seek({consumed / data.batches_per_epoch(), consumed % data.batches_per_epoch()});
  LocalTrainingOptions training = training_;
  training.steps = steps;
  training.dp_noise_seed = client_seed(seed_, round_, c) ^ 0xD95Dull;  // its own stream, apart from the attacks'
  auto logits = [this](const torch::Tensor& ids) { return participant_.model()->forward(ids); };
  const auto attack = roster_.attacks.find(c);
  const std::string attack_kind = attack == roster_.attacks.end() ? "" : attack->second;
  std::function<void(Batch&)> poison;
  if (attack_kind == "label_flip") {
    const int64_t vocab = participant_.model()->options.vocab_size;
    poison = [this, vocab](Batch& b) { poison_batch(b, attack_.label_shift, vocab); };
  }
  const auto t0 = std::chrono::steady_clock::now();
  const LocalResult result = train_locally(*participant_.model(), logits, data, training, participant_.device(),
                                           [this] { participant_.mask_gradients(); }, &global_, poison);
  update.meta["wall_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  update.meta.update({{"loss", result.mean_loss}, {"steps", result.steps}, {"tokens", result.tokens}});
  if (training.dp_sgd) {
    // What the server's ledger charges (federated/client_privacy.h): each step samples a batch of B of
    // the client's N training windows, q = B / N.
    const double q = std::min(1.0, static_cast<double>(data.options().batch_size) / static_cast<double>(roster_.samples[i]));
    update.meta["dp_sgd"] = {{"q", q}, {"sigma", training.dp_noise_multiplier}, {"steps", result.steps}};
  }
  if (!result.finite) {
    update.meta["status"] = "failed";
    update.meta["reason"] = "its training loss became non-finite after " + std::to_string(result.steps) + " steps";
  } else {
    update.tensors = participant_.client_update();
    if (!attack_kind.empty() && is_update_attack(attack_kind))
      attack_update(attack_kind, update.tensors, global_, attack_, client_seed(seed_, round_, c) ^ 0xBADull,
                    client_seed(seed_, round_, -1));
    if (fault != roster_.faults.end()) inject_fault(fault->second, update);
  }
  participant_.end_client();
  return encode_message(update);
}

}  // namespace fedsplit
