// labels: unit
// One model per rank, many clients: a lower-rank LoRA client really trains only its first r ranks
// (the rest stay zero and their gradients are masked), sends tensors cut to its rank, and the server's
// aggregators turn such updates back into global tensors of the global shape; flora's merge adds the
// stacked product to the base weights exactly.
#include <gtest/gtest.h>

#include "core/util/error.h"
#include "federated/aggregator.h"
#include "federated/participant.h"
#include "peft/lora.h"
#include "tests/peft/peft_test_helpers.h"
#include "train/model_io.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

Decoder lora_model(int64_t r) {
  Decoder model = load_any_model(model_dir("llama"));
  LoraOptions o;
  o.r = r;
  o.alpha = 2.0 * static_cast<double>(r);
  o.target_modules = {"q_proj", "v_proj"};
  apply_lora(model, o, 11);
  return model;
}

// Gives every trainable parameter random values and gradients, as a round of training would.
void pretend_to_train(Decoder& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters())
    if (p.requires_grad()) {
      p.add_(torch::randn_like(p));
      p.mutable_grad() = torch::randn_like(p);
    }
}

}  // namespace

TEST(Participant, LowerRankClientsTrainAndSendOnlyTheirRanks) {
  torch::manual_seed(0);
  Participant p(lora_model(4), torch::kCPU, "hetlora");
  const TensorMap global = p.global();
  p.load(global);
  p.begin_client(2, 5);
  const auto modules = lora_modules(p.model());
  for (const auto& [path, m] : modules) {
    EXPECT_EQ(m->lora_A.narrow(0, 2, 2).abs().max().item<float>(), 0.0f) << path;
    EXPECT_EQ(m->lora_B.narrow(1, 2, 2).abs().max().item<float>(), 0.0f) << path;
    EXPECT_DOUBLE_EQ(m->scaling, 2.0) << "hetlora keeps the global scaling alpha / R";
  }
  pretend_to_train(p.model());
  p.mask_gradients();
  for (const auto& [path, m] : modules) {
    EXPECT_EQ(m->lora_A.grad().narrow(0, 2, 2).abs().max().item<float>(), 0.0f) << path;
    EXPECT_EQ(m->lora_B.grad().narrow(1, 2, 2).abs().max().item<float>(), 0.0f) << path;
    EXPECT_GT(m->lora_A.grad().narrow(0, 0, 2).abs().max().item<float>(), 0.0f) << path;
  }
  const TensorMap update = p.client_update();
  const auto shapes = p.update_shapes(2);
  ASSERT_EQ(update.size(), shapes.size());
  for (const auto& [name, t] : update) {
    EXPECT_EQ(t.sizes().vec(), shapes.at(name)) << name;
    const auto& full = global.at(name);
    EXPECT_EQ(t.size(0) * t.size(1) * 2, full.numel()) << name << ": half the ranks travel";
  }
  p.end_client();
  for (const auto& [path, m] : modules) EXPECT_DOUBLE_EQ(m->scaling, 2.0);
}

TEST(Participant, HetLoraUpdatesAggregateToTheGlobalShape) {
  torch::manual_seed(1);
  Participant p(lora_model(4), torch::kCPU, "hetlora");
  const TensorMap global = p.global();
  auto agg = make_aggregator("hetlora", 4);
  for (int64_t rank : {4, 2, 1}) {
    p.load(global);
    p.begin_client(rank, static_cast<uint64_t>(rank));
    pretend_to_train(p.model());
    agg->add(p.client_update(), UpdateInfo{rank, 10.0 * static_cast<double>(rank), rank, p.client_scaling(rank)});
    p.end_client();
  }
  const TensorMap combined = agg->finalize();
  ASSERT_EQ(combined.size(), global.size());
  for (const auto& [name, t] : global) {
    EXPECT_EQ(combined.at(name).sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::isfinite(combined.at(name)).all().item<bool>()) << name;
  }
  EXPECT_EQ(agg->count(), 0) << "finalize empties the aggregator";
}

TEST(Participant, FloraMergesTheStackedProductIntoTheBaseExactly) {
  torch::manual_seed(2);
  Participant p(lora_model(4), torch::kCPU, "flora");
  const TensorMap before = p.base_weights();
  const TensorMap global = p.global();
  auto agg = make_aggregator("flora", 4);
  TensorMap expected_delta;
  const std::vector<int64_t> ranks = {4, 2};
  const std::vector<double> weights = {30, 10};
  for (size_t i = 0; i < ranks.size(); ++i) {
    p.load(global);
    p.begin_client(ranks[i], 100 + i);
    EXPECT_DOUBLE_EQ(lora_modules(p.model()).begin()->second->scaling, 8.0 / static_cast<double>(ranks[i]))
        << "flora clients train at their own scaling alpha / r_i";
    pretend_to_train(p.model());
    const TensorMap u = p.client_update();
    for (const auto& [path, m] : lora_modules(p.model())) {
      const auto product = torch::matmul(u.at(path + ".lora_B").to(torch::kFloat64), u.at(path + ".lora_A").to(torch::kFloat64)) *
                           (weights[i] / 40.0) * p.client_scaling(ranks[i]);
      auto& d = expected_delta[path + ".weight"];
      d = d.defined() ? d + product : product;
    }
    agg->add(u, UpdateInfo{static_cast<int64_t>(i), weights[i], ranks[i], p.client_scaling(ranks[i])});
    p.end_client();
  }
  p.merge_stacked(agg->finalize());
  const TensorMap after = p.base_weights();
  for (const auto& [name, delta] : expected_delta) {
    const auto moved = after.at(name).to(torch::kFloat64) - before.at(name).to(torch::kFloat64);
    EXPECT_LT((moved - delta).abs().max().item<double>(), 1e-5 * (1 + delta.abs().max().item<double>())) << name;
  }
}

TEST(Participant, FfaFreezesAAndRefusesAggregationsWithoutLora) {
  Participant p(lora_model(4), torch::kCPU, "ffa");
  for (const auto& [name, t] : p.global()) EXPECT_NE(name.find("lora_B"), std::string::npos) << name << " should not train";
  expect_one_line_error<ConfigError>([] { Participant(load_any_model(model_dir("llama")), torch::kCPU, "hetlora"); },
                                     {"federated.lora_aggregation = hetlora", "peft.method = lora"});
}
