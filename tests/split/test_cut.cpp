// labels: unit
// split/cut: the device and server parts of a cut Decoder compute the full model's logits and
// gradients (vanilla and U-shaped, llama and gpt2, several cuts), the parameter partition, and
// the errors for cuts that do not fit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <string>

#include "core/util/error.h"
#include "split/cut.h"
#include "tests/split/split_test_helpers.h"
#include "tests/test_support.h"
#include "train/trainer.h"

namespace fedsplit {
namespace {

using testing::max_diff;
using testing::random_ids;
using testing::seeded_model;
using testing::small_config;

struct CutCase {
  ModelFamily family;
  bool tied;
  SplitCut cut;
};

std::string name_of(const CutCase& c) {
  return std::string(to_string(c.family)) + (c.tied ? "_tied" : "") + "_cut" + std::to_string(c.cut.cut) +
         (c.cut.u_shaped() ? "_tail" + std::to_string(c.cut.tail_cut) : "");
}

// Logits of the cut model, each part run on the detached output of the one before, as the parties see it.
torch::Tensor split_logits(CutModel& cut, const torch::Tensor& ids) {
  const auto front = cut.device_front(ids);
  const auto middle = cut.server_forward(front.detach());
  return cut.cut().u_shaped() ? cut.device_tail(middle.detach()) : middle;
}

// The loss of the cut model, with the backward pass carried across each cut by hand (the gradient
// of each received leaf fed to the sender's output), as the split step does over the wire.
double split_backward(CutModel& cut, const torch::Tensor& ids, const torch::Tensor& targets) {
  const auto front = cut.device_front(ids);
  const auto at_cut = front.detach().requires_grad_(true);  // what the server receives
  const auto middle = cut.server_forward(at_cut);
  torch::Tensor loss;
  if (!cut.cut().u_shaped()) {
    loss = next_token_loss(middle, targets);
    loss.backward();
  } else {
    const auto at_tail = middle.detach().requires_grad_(true);  // what the device's tail receives
    loss = next_token_loss(cut.device_tail(at_tail), targets);
    loss.backward();
    middle.backward(at_tail.grad());
  }
  front.backward(at_cut.grad());
  return loss.item<double>();
}

class CutEquivalence : public ::testing::TestWithParam<CutCase> {};

TEST_P(CutEquivalence, ForwardEqualsTheFullModel) {
  const auto& c = GetParam();
  auto model = seeded_model(small_config(c.family, c.tied), 7);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto ids = random_ids(64, 2, 9, 1);
  CutModel cut(model, c.cut);
  const auto full = model->forward(ids);
  const auto split = split_logits(cut, ids);
  ASSERT_EQ(split.sizes(), full.sizes());
  EXPECT_LE(max_diff(split, full), 1e-6);
}

TEST_P(CutEquivalence, GradientsEqualFullBackward) {
  const auto& c = GetParam();
  const auto config = small_config(c.family, c.tied);
  auto full = seeded_model(config, 11);
  auto copy = seeded_model(config, 11);
  const auto ids = random_ids(64, 2, 9, 2);
  const auto targets = random_ids(64, 2, 9, 3);

  const auto full_loss = next_token_loss(full->forward(ids), targets);
  full_loss.backward();
  CutModel cut(copy, c.cut);
  const double split_loss = split_backward(cut, ids, targets);
  EXPECT_NEAR(split_loss, full_loss.item<double>(), 1e-6);

  const auto expected = full->named_parameters();
  int64_t compared = 0;
  for (const auto& item : copy->named_parameters()) {
    const auto& want = expected[item.key()].grad();
    const auto& got = item.value().grad();
    ASSERT_TRUE(want.defined() && got.defined()) << item.key();
    EXPECT_LE(max_diff(got, want), 1e-5) << item.key();
    EXPECT_GT(want.abs().max().item<double>(), 0) << item.key() << ": a zero gradient compares nothing";
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int64_t>(expected.size()));
}

TEST_P(CutEquivalence, PartitionCoversEveryTrainableParameterOnce) {
  const auto& c = GetParam();
  auto model = seeded_model(small_config(c.family, c.tied), 3);
  CutModel cut(model, c.cut);
  std::map<std::string, int> seen;
  for (const auto side : {SplitSide::device, SplitSide::server})
    for (const auto& [name, value] : cut.parameters(side)) ++seen[name];
  const auto all = model->named_parameters();
  EXPECT_EQ(seen.size(), all.size());
  for (const auto& item : all) EXPECT_EQ(seen[item.key()], 1) << item.key();

  // The rule itself, on names of either family.
  const bool gpt2 = c.family == ModelFamily::gpt2;
  const std::string blocks = gpt2 ? "h." : "layers.";
  const std::string embedding = gpt2 ? "wte.weight" : "embed_tokens.weight";
  const std::string norm = gpt2 ? "ln_f.weight" : "norm.weight";
  const auto head_side = c.cut.u_shaped() ? SplitSide::device : SplitSide::server;
  EXPECT_EQ(cut.side_of(embedding), SplitSide::device);
  EXPECT_EQ(cut.side_of(norm), head_side);
  if (!c.tied) {
    EXPECT_EQ(cut.side_of("lm_head.weight"), head_side);
  }
  for (int64_t i = 0; i < model->num_layers(); ++i) {
    const auto some = blocks + std::to_string(i) + (gpt2 ? ".ln_1.weight" : ".input_layernorm.weight");
    const bool on_device = i < c.cut.cut || (c.cut.u_shaped() && i >= c.cut.tail_cut);
    EXPECT_EQ(cut.side_of(some), on_device ? SplitSide::device : SplitSide::server) << some;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Split, CutEquivalence,
    ::testing::Values(CutCase{ModelFamily::llama, false, {1, 0}}, CutCase{ModelFamily::llama, false, {2, 0}},
                      CutCase{ModelFamily::llama, false, {3, 0}}, CutCase{ModelFamily::gpt2, false, {1, 0}},
                      CutCase{ModelFamily::gpt2, false, {3, 0}}, CutCase{ModelFamily::llama, false, {1, 3}},
                      CutCase{ModelFamily::llama, false, {2, 4}}, CutCase{ModelFamily::gpt2, true, {1, 2}},
                      CutCase{ModelFamily::gpt2, true, {2, 3}}, CutCase{ModelFamily::llama, true, {1, 4}}),
    [](const ::testing::TestParamInfo<CutCase>& info) { return name_of(info.param); });

TEST(Cut, FrozenParametersBelongToNoOptimizer) {
  auto model = seeded_model(small_config(ModelFamily::llama, false), 5);
  for (auto& item : model->named_parameters())
    if (item.key().find("layers.3.") == 0 || item.key() == "embed_tokens.weight") item.value().requires_grad_(false);
  CutModel cut(model, {2, 0});
  for (const auto side : {SplitSide::device, SplitSide::server})
    for (const auto& [name, value] : cut.parameters(side)) {
      EXPECT_TRUE(value.requires_grad()) << name;
      EXPECT_NE(name, "embed_tokens.weight");
      EXPECT_NE(name.find("layers.3."), 0u) << name;
    }
  EXPECT_FALSE(cut.parameters(SplitSide::device).empty());
}

TEST(Cut, CutsOutOfRangeAreOneLineConfigErrors) {
  using testing::expect_one_line_error;
  auto model = seeded_model(small_config(ModelFamily::llama, false), 1);  // 4 blocks
  for (int64_t bad : {-1, 0, 4, 9})
    expect_one_line_error<ConfigError>([&] { CutModel(model, {bad, 0}); }, {"split.cut", "1 <= split.cut <= 3"});
  for (int64_t bad : {1, 2, 5})
    expect_one_line_error<ConfigError>([&] { CutModel(model, {2, bad}); }, {"split.tail_cut", "3..4"});
  EXPECT_NO_THROW(CutModel(model, {3, 4}));
  EXPECT_NO_THROW(CutModel(model, {1, 2}));
  expect_one_line_error<ConfigError>([] { validate_cut({1, 0}, 1); }, {"split.cut", "at least 2 blocks"});
}

TEST(Cut, TiedHeadInVanillaIsRefusedWithTheUShapedSchemeSuggested) {
  auto tied = seeded_model(small_config(ModelFamily::gpt2, true), 1);
  testing::expect_one_line_error<ConfigError>([&] { CutModel(tied, {2, 0}); }, {"tied embeddings", "U-shaped"});
  EXPECT_NO_THROW(CutModel(tied, {2, 3}));
}

TEST(Cut, PrefixKeyValuesAreRefused) {
  auto model = seeded_model(small_config(ModelFamily::llama, false), 1);
  const int64_t width = model->num_layers() * 2 * model->options.num_kv_heads * model->options.head_dim;
  model->set_prefix_key_values(torch::zeros({3, width}));
  testing::expect_one_line_error<ConfigError>([&] { CutModel(model, {2, 0}); }, {"split.cut", "prefix"});
}

TEST(Cut, UnknownParameterNamesAreAnError) {
  auto model = seeded_model(small_config(ModelFamily::llama, false), 1);
  CutModel cut(model, {2, 0});
  testing::expect_error<Error>([&] { cut.side_of("classifier.weight"); }, {"classifier.weight"});
  testing::expect_error<Error>([&] { cut.side_of("layers.x.weight"); }, {"layers.x.weight"});
}

}  // namespace
}  // namespace fedsplit
