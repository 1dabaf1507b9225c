// labels: unit
// Local DP-SGD in a client's training (federated/local_training.h) and the server's per-client ledger
// (federated/client_privacy.h). The applied gradient is read in mask_gradients, which runs right after
// it is formed. Without noise and clipping it is the batch gradient (fp32 sums in another order: within
// 1e-5 of the largest entry); with a tiny clip it is the mean of the per-example gradients each scaled
// to the clip, computed here independently (1e-6 relative); the noise is reproducible from its seed and
// has standard deviation σ·clip/B (within 5% over ~10^4 coordinates); each client's ε is the
// accountant's for its (q, σ, steps) exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "core/data/dataset.h"
#include "core/data/shards.h"
#include "core/model/decoder.h"
#include "core/util/error.h"
#include "federated/client_privacy.h"
#include "federated/dp.h"
#include "federated/local_training.h"
#include "federated/rdp_accountant.h"
#include "tests/core/test_data_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

constexpr int64_t kBatch = 4;

class LocalDpSgd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_.emplace("local_dp");
    std::vector<Document> docs;
    for (int i = 0; i < 12; ++i) {
      std::string text = "example " + std::to_string(i) + ": ";
      for (int k = 0; k < 40 + 7 * i; ++k) text += static_cast<char>('a' + (i * 5 + k * k) % 26);
      docs.push_back({text, {}});
    }
    ShardWriteOptions o;
    o.corpus = "synthetic";
    shard_ = *dir_ / "docs.h5";
    write_token_shard(shard_, docs, ByteTokenizer(), o);
  }
  static void TearDownTestSuite() { dir_.reset(); }

  // A fresh stream over the same windows: every call yields the same batches in the same order.
  static TokenDataset data() {
    DatasetOptions o;
    o.seq_len = 12;
    o.batch_size = kBatch;
    o.val_fraction = 0;
    o.split_seed = o.shuffle_seed = 3;
    return TokenDataset({shard_}, o);
  }

  // The same small llama every call.
  static Decoder model() {
    torch::manual_seed(11);
    DecoderConfig c;
    c.vocab_size = 259;
    c.hidden_size = 16;
    c.num_layers = 1;
    c.num_heads = 2;
    c.num_kv_heads = 2;
    c.intermediate_size = 24;
    c.max_position = 16;
    return Decoder(c);
  }

  static TensorMap params(Decoder& m) {
    TensorMap out;
    for (const auto& p : m->named_parameters()) out[p.key()] = p.value().detach().clone();
    return out;
  }

  // Trains a fresh model for `o.steps` steps; returns the gradient applied at the last step (fp32).
  static TensorMap applied_gradient(const LocalTrainingOptions& o, TensorMap* after = nullptr) {
    Decoder m = model();
    TokenDataset d = data();
    TensorMap grad;
    auto capture = [&] {
      grad.clear();
      for (const auto& p : m->named_parameters()) grad[p.key()] = p.value().grad().clone();
    };
    auto logits = [&m](const torch::Tensor& ids) { return m->forward(ids); };
    const LocalResult r = train_locally(*m, logits, d, o, torch::kCPU, capture);
    EXPECT_EQ(r.steps, o.steps);
    EXPECT_TRUE(r.finite);
    if (after) *after = params(m);
    return grad;
  }

  static LocalTrainingOptions sgd(int64_t steps = 1) {
    LocalTrainingOptions o;
    o.steps = steps;
    o.optimizer = "sgd";
    o.lr = 0.1;
    o.grad_clip = 0;
    return o;
  }

  static inline std::optional<TempDir> dir_;
  static inline std::string shard_;
};

double norm(const TensorMap& m) {
  double sq = 0;
  for (const auto& [name, t] : m) sq += t.to(torch::kFloat64).pow(2).sum().item<double>();
  return std::sqrt(sq);
}

double max_abs(const TensorMap& m) {
  double x = 0;
  for (const auto& [name, t] : m) x = std::max(x, t.abs().max().item<double>());
  return x;
}

}  // namespace

TEST_F(LocalDpSgd, WithoutClippingOrNoiseItIsThePlainBatchGradient) {
  LocalTrainingOptions o = sgd();
  o.dp_sgd = true;
  o.dp_clip = 1e9;
  o.dp_noise_multiplier = 0;
  TensorMap plain_after, dp_after;
  const TensorMap plain = applied_gradient(sgd(), &plain_after);
  const TensorMap dp = applied_gradient(o, &dp_after);
  ASSERT_EQ(dp.size(), plain.size());
  const double scale = max_abs(plain);
  ASSERT_GT(scale, 0);
  for (const auto& [name, g] : plain) {
    EXPECT_TRUE(torch::allclose(dp.at(name), g, 0, 1e-5 * scale)) << name;
    // The SGD step used that gradient: the parameters agree to the same tolerance times lr.
    EXPECT_TRUE(torch::allclose(dp_after.at(name), plain_after.at(name), 0, 1e-5 * scale * 0.1 + 1e-7)) << name;
  }
}

TEST_F(LocalDpSgd, TinyClipGivesTheMeanOfPerExampleGradientsScaledToTheClip) {
  const double clip = 1e-3;
  LocalTrainingOptions o = sgd();
  o.dp_sgd = true;
  o.dp_clip = clip;
  o.dp_noise_multiplier = 0;
  const TensorMap got = applied_gradient(o);

  // The reference: the first batch, one row at a time, each whole gradient scaled to norm `clip`.
  Decoder m = model();
  TokenDataset d = data();
  const Batch batch = d.next_batch();
  ASSERT_EQ(batch.input_ids.size(0), kBatch);
  TensorMap want;
  for (int64_t i = 0; i < kBatch; ++i) {
    m->zero_grad();
    next_token_loss(m->forward(batch.input_ids.narrow(0, i, 1)), batch.targets.narrow(0, i, 1)).backward();
    TensorMap g;
    for (const auto& p : m->named_parameters()) g[p.key()] = p.value().grad().to(torch::kFloat64);
    const double n = norm(g);
    ASSERT_GT(n, 100 * clip) << "every example is clipped";
    for (const auto& [name, t] : g) {
      auto& w = want[name];
      w = w.defined() ? w + t * (clip / n) / kBatch : t * (clip / n) / kBatch;
    }
  }
  const double scale = max_abs(want);
  for (const auto& [name, w] : want) EXPECT_TRUE(torch::allclose(got.at(name).to(torch::kFloat64), w, 0, 1e-6 * scale)) << name;
  EXPECT_LE(norm(got), clip * (1 + 1e-6));
  EXPECT_GT(norm(got), 0.1 * clip) << "the examples' directions mostly agree";
}

TEST_F(LocalDpSgd, NoiseIsSeededAndHasStdSigmaClipOverBatch) {
  LocalTrainingOptions o = sgd(2);
  o.dp_sgd = true;
  o.dp_clip = 0.1;
  o.dp_noise_multiplier = 1.5;
  o.dp_noise_seed = 42;
  TensorMap a, b, c;
  applied_gradient(o, &a);
  applied_gradient(o, &b);
  o.dp_noise_seed = 43;
  applied_gradient(o, &c);
  bool any_differs = false;
  for (const auto& [name, t] : a) {
    EXPECT_TRUE(torch::equal(t, b.at(name))) << name << ": the same seed gives the same run";
    any_differs = any_differs || !torch::equal(t, c.at(name));
  }
  EXPECT_TRUE(any_differs) << "another seed draws other noise";

  // The noise alone: the same step with σ and without (same data, same clipping).
  LocalTrainingOptions quiet = sgd();
  quiet.dp_sgd = true;
  quiet.dp_clip = 0.1;
  quiet.dp_noise_multiplier = 0;
  LocalTrainingOptions noisy = quiet;
  noisy.dp_noise_multiplier = 1.5;
  noisy.dp_noise_seed = 7;
  const TensorMap clean = applied_gradient(quiet), noised = applied_gradient(noisy);
  std::vector<torch::Tensor> diffs;
  for (const auto& [name, t] : noised) diffs.push_back((t - clean.at(name)).to(torch::kFloat64).flatten());
  const torch::Tensor noise = torch::cat(diffs);
  const double want = 1.5 * 0.1 / kBatch;
  ASSERT_GT(noise.numel(), 9000);
  // Relative standard error of a sample std is 1/sqrt(2n) < 0.75% here: 5% is over 6 standard errors.
  EXPECT_NEAR(noise.std().item<double>(), want, 0.05 * want);
  EXPECT_NEAR(noise.mean().item<double>(), 0, 6 * want / std::sqrt(static_cast<double>(noise.numel())));
}

TEST(DpSgdAccumulator, ClipsAllTensorsOfAnExampleTogether) {
  DpSgdAccumulator sum(1.0);
  // Example 1: norm 5 over two tensors, scaled by 1/5; example 2: norm 0.5, kept.
  const auto f64 = torch::kFloat64;
  EXPECT_DOUBLE_EQ(sum.add({{"a", torch::tensor({3.0}, f64)}, {"b", torch::tensor({0.0, 4.0}, f64)}}), 5.0);
  EXPECT_DOUBLE_EQ(sum.add({{"a", torch::tensor({0.3}, f64)}, {"b", torch::tensor({0.4, 0.0}, f64)}}), 0.5);
  const TensorMap mean = sum.noisy_mean(0, 1);
  EXPECT_TRUE(torch::allclose(mean.at("a"), torch::tensor({(0.6 + 0.3) / 2}, torch::kFloat64), 0, 1e-15));
  EXPECT_TRUE(torch::allclose(mean.at("b"), torch::tensor({0.4 / 2, 0.8 / 2}, torch::kFloat64), 0, 1e-15));
  expect_one_line_error<ConfigError>([] { DpSgdAccumulator(0.0); }, {"clip = 0"});
  expect_one_line_error<ConfigError>([] { DpSgdAccumulator(1.0).noisy_mean(0, 1); }, {"no example"});
}

TEST(ClientPrivacyLedger, EachClientsEpsilonIsTheAccountantsForItsSteps) {
  ClientPrivacyLedger ledger;
  EXPECT_EQ(ledger.max_epsilon(1e-5), std::make_pair(int64_t{-1}, 0.0));
  ledger.charge(0, 0.1, 1.1, 40);
  ledger.charge(3, 0.25, 1.1, 20);
  EXPECT_EQ(ledger.charge_update(0, {{"dp_sgd", {{"q", 0.1}, {"sigma", 1.1}, {"steps", 10}}}}), "");
  EXPECT_EQ(ledger.steps(0), 50);
  EXPECT_EQ(ledger.steps(3), 20);
  EXPECT_EQ(ledger.steps(7), 0);
  RdpAccountant a0, a3;
  a0.step(0.1, 1.1, 50);
  a3.step(0.25, 1.1, 20);
  EXPECT_DOUBLE_EQ(ledger.epsilon(0, 1e-5), a0.epsilon(1e-5));
  EXPECT_DOUBLE_EQ(ledger.epsilon(3, 1e-5), a3.epsilon(1e-5));
  EXPECT_DOUBLE_EQ(ledger.epsilon(0, 1e-6), a0.epsilon(1e-6)) << "another delta is not served from the cache";
  EXPECT_EQ(ledger.epsilon(7, 1e-5), 0.0);
  const auto [client, eps] = ledger.max_epsilon(1e-5);
  EXPECT_EQ(client, a0.epsilon(1e-5) > a3.epsilon(1e-5) ? 0 : 3);
  EXPECT_DOUBLE_EQ(eps, std::max(a0.epsilon(1e-5), a3.epsilon(1e-5)));
  // A client that changes q later adds a second entry: RDP composes across them.
  ledger.charge(3, 0.5, 1.1, 5);
  RdpAccountant a3b;
  a3b.step(0.25, 1.1, 20);
  a3b.step(0.5, 1.1, 5);
  EXPECT_DOUBLE_EQ(ledger.epsilon(3, 1e-5), a3b.epsilon(1e-5));

  // Through a checkpoint's text and back: the same charges, the same epsilons.
  const ClientPrivacyLedger back = ClientPrivacyLedger::from_json(nlohmann::json::parse(ledger.to_json().dump()));
  EXPECT_EQ(back.to_json(), ledger.to_json());
  for (int64_t c : {0, 3}) {
    EXPECT_EQ(back.steps(c), ledger.steps(c));
    EXPECT_DOUBLE_EQ(back.epsilon(c, 1e-5), ledger.epsilon(c, 1e-5));
  }

  // σ = 0: no privacy (ε = +inf), and nothing non-finite in the JSON.
  ClientPrivacyLedger none;
  none.charge(2, 0.5, 0.0, 3);
  EXPECT_EQ(none.max_epsilon(1e-5).second, std::numeric_limits<double>::infinity());
  EXPECT_EQ(none.to_json().dump().find("null"), std::string::npos);
  EXPECT_EQ(ClientPrivacyLedger::from_json(none.to_json()).steps(2), 3);
}

TEST(ClientPrivacyLedger, MalformedChargesAreRefused) {
  ClientPrivacyLedger ledger;
  EXPECT_NE(ledger.charge_update(1, {{"loss", 2.0}}).find("lacks the local DP-SGD accounting"), std::string::npos);
  EXPECT_NE(ledger.charge_update(1, {{"dp_sgd", {{"q", "x"}}}}).find("malformed"), std::string::npos);
  EXPECT_NE(ledger.charge_update(1, {{"dp_sgd", {{"q", 1.5}, {"sigma", 1.0}, {"steps", 3}}}}).find("q = 1.5"),
            std::string::npos);
  EXPECT_NE(ledger.charge_update(1, {{"dp_sgd", {{"q", 0.5}, {"sigma", -1.0}, {"steps", 3}}}}).find("noise multiplier"),
            std::string::npos);
  EXPECT_TRUE(ledger.empty()) << "nothing is charged from a bad entry";
  expect_one_line_error<DataError>([] { ClientPrivacyLedger::from_json({{"clients", {{"x1", nlohmann::json::array()}}}}); },
                                   {"client key 'x1'"});
  expect_one_line_error<DataError>([] { ClientPrivacyLedger::from_json(nlohmann::json::array()); }, {"expected"});
}
