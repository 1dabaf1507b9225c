// labels: unit
// Each simulated attack does what it says: sign flipping and scaling rewrite the delta exactly, noise
// replaces it by an independent draw of the stated spread, colluders agree on one direction, label
// flipping shifts every target, and the attackers are the ones the recipe names or draws.
#include <gtest/gtest.h>

#include "core/data/dataset.h"
#include "core/util/error.h"
#include "federated/attacks.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

TensorMap model(double base) {
  return {{"a", torch::full({3, 4}, base)}, {"b", torch::arange(5, torch::kFloat32) * base}};
}

TensorMap delta_of(const TensorMap& x, const TensorMap& global) {
  TensorMap d;
  for (const auto& [k, t] : x) d[k] = t - global.at(k).narrow(0, 0, t.size(0));
  return d;
}

double cosine(const TensorMap& a, const TensorMap& b) {
  double dot = 0, na = 0, nb = 0;
  for (const auto& [k, t] : a) {
    dot += (t * b.at(k)).sum().item<double>();
    na += t.pow(2).sum().item<double>();
    nb += b.at(k).pow(2).sum().item<double>();
  }
  return dot / std::sqrt(na * nb);
}

}  // namespace

TEST(Attacks, SignFlipAndScaleRewriteTheDeltaExactly) {
  torch::manual_seed(0);
  const TensorMap global = model(1.0);
  TensorMap honest = global;
  for (auto& [k, t] : honest) t = t + torch::randn_like(t);
  AttackOptions o;
  o.scale = 3;
  for (const std::string kind : {"sign_flip", "scale"}) {
    TensorMap x = honest;
    attack_update(kind, x, global, o, 1, 2);
    const auto d = delta_of(x, global), h = delta_of(honest, global);
    for (const auto& [k, t] : d)
      EXPECT_TRUE(torch::allclose(t, h.at(k) * (kind == "sign_flip" ? -3.0 : 3.0), 1e-5, 1e-6)) << kind << " " << k;
  }
}

TEST(Attacks, NoiseReplacesTheDeltaWithTheStatedSpread) {
  const TensorMap global{{"w", torch::zeros({400, 500})}};
  TensorMap x{{"w", torch::full({400, 500}, 5.0f)}};
  AttackOptions o;
  o.noise_std = 0.2;
  attack_update("noise", x, global, o, 7, 8);
  EXPECT_NEAR(x.at("w").mean().item<double>(), 0.0, 0.002) << "the honest delta (5) is gone";
  EXPECT_NEAR(x.at("w").std().item<double>(), 0.2, 0.002);
  TensorMap again{{"w", torch::full({400, 500}, 5.0f)}};
  attack_update("noise", again, global, o, 7, 8);
  EXPECT_TRUE(torch::equal(again.at("w"), x.at("w"))) << "seeded";
}

TEST(Attacks, CollidersShareOneDirectionAndScaleTheirNorm) {
  torch::manual_seed(1);
  const TensorMap global = model(0.0);
  TensorMap a = model(1.0), b = model(-2.0);
  const auto da = delta_of(a, global), db = delta_of(b, global);
  AttackOptions o;
  o.scale = 5;
  attack_update("collude", a, global, o, 11, 99);
  attack_update("collude", b, global, o, 12, 99);
  EXPECT_NEAR(cosine(delta_of(a, global), delta_of(b, global)), 1.0, 1e-6) << "one shared direction";
  EXPECT_LT(std::abs(cosine(delta_of(a, global), da)), 0.9) << "not the honest direction";
  auto norm = [](const TensorMap& m) {
    double s = 0;
    for (const auto& [k, t] : m) s += t.pow(2).sum().item<double>();
    return std::sqrt(s);
  };
  EXPECT_NEAR(norm(delta_of(b, global)), 5 * norm(db), 1e-3 * norm(db));
}

TEST(Attacks, LowerRankUpdatesAreComparedWithTheLeadingBlock) {
  const TensorMap global{{"lora_A", torch::ones({8, 4})}};
  TensorMap x{{"lora_A", torch::full({2, 4}, 3.0f)}};
  AttackOptions o;
  o.scale = 1;
  attack_update("sign_flip", x, global, o, 1, 2);
  EXPECT_TRUE(torch::allclose(x.at("lora_A"), torch::full({2, 4}, -1.0f))) << "1 - (3 - 1)";
}

TEST(Attacks, LabelFlipShiftsEveryTarget) {
  Batch b;
  b.input_ids = torch::tensor({{1, 2, 3}}, torch::kInt64);
  b.targets = torch::tensor({{2, 3, 9}}, torch::kInt64);
  poison_batch(b, 2, 10);
  EXPECT_TRUE(torch::equal(b.targets, torch::tensor({{4, 5, 1}}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(b.input_ids, torch::tensor({{1, 2, 3}}, torch::kInt64))) << "inputs untouched";
}

TEST(Attacks, AttackersAreNamedOrDrawn) {
  const std::vector<std::string> names = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
  AttackOptions o;
  o.fraction = 0.2;
  o.kind = "scale";
  o.clients = "c=label_flip";
  const auto picked = pick_attackers(o, names, 3);
  EXPECT_EQ(picked.at(2), "label_flip");
  int64_t drawn = 0;
  for (const auto& [c, kind] : picked) drawn += kind == "scale";
  EXPECT_GE(drawn, 1);
  EXPECT_LE(drawn, 2) << "round(0.2 * 10) drawn, one of them may be named";
  EXPECT_EQ(picked, pick_attackers(o, names, 3)) << "seeded";
  o.clients = "z=scale";
  expect_one_line_error<ConfigError>([&] { pick_attackers(o, names, 3); }, {"attack.clients", "'z'"});
  o.clients = "a=explode";
  expect_one_line_error<ConfigError>([&] { pick_attackers(o, names, 3); }, {"attack.clients", "explode"});
}
