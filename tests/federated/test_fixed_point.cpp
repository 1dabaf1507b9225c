// labels: unit
// The fixed-point ring encoding of secure aggregation: the ring sum of n encodings decodes to the sum
// of the weighted values within n · step / 2 per value (step = sum_bound / 2^30), negative sums
// included (they wrap around 2^32); values beyond ±range are clamped and counted; the weighted loss
// travels in the same vector; bad updates are refused.
#include <gtest/gtest.h>

#include "core/util/error.h"
#include "federated/fixed_point.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

std::vector<uint32_t> ring_sum(const std::vector<std::vector<uint32_t>>& vectors) {
  std::vector<uint32_t> s(vectors.at(0).size(), 0);
  for (const auto& v : vectors)
    for (size_t i = 0; i < s.size(); ++i) s[i] += v[i];
  return s;
}

}  // namespace

TEST(FixedPoint, RingSumDecodesToTheWeightedSum) {
  const UpdateEncoding enc({{"a", {3, 4}}, {"b", {5}}}, 1.0, 1.0);
  EXPECT_EQ(enc.size(), 12 + 5 + 2);
  EXPECT_DOUBLE_EQ(enc.step(), 0x1p-30);
  torch::manual_seed(3);
  const int n = 7;
  std::vector<std::vector<uint32_t>> encoded;
  torch::Tensor sum_a = torch::zeros({3, 4}, torch::kFloat64), sum_b = torch::zeros({5}, torch::kFloat64);
  double loss = 0;
  for (int i = 0; i < n; ++i) {
    const TensorMap u{{"a", 0.9 * torch::rand({3, 4}) - 0.45}, {"b", torch::randn({5}) * 0.2}};
    const double w = 1.0 / n;
    encoded.push_back(enc.encode(u, w, 2.0 + i));
    sum_a += w * u.at("a").to(torch::kFloat64);
    sum_b += w * u.at("b").to(torch::kFloat64);
    loss += w * (2.0 + i);
  }
  const auto decoded = enc.decode(ring_sum(encoded));
  // Each term rounds by at most step / 2, and the fp32 result adds its own rounding (values < 1).
  const double bound = n * enc.step() / 2 + 6e-8;
  EXPECT_LE((decoded.values.at("a").to(torch::kFloat64) - sum_a).abs().max().item<double>(), bound);
  EXPECT_LE((decoded.values.at("b").to(torch::kFloat64) - sum_b).abs().max().item<double>(), bound);
  EXPECT_NEAR(decoded.weighted_loss, loss, n * 0x1p-17);
  EXPECT_EQ(decoded.clamped, 0);
}

TEST(FixedPoint, SumsNearTheBoundAndNegativeSumsDecode) {
  // Distributed-DP bound: every client adds a whole value, so the sum may reach n · range. Negative
  // values are two's complement (near 2^32), so their ring sums wrap around and still decode.
  const int n = 4;
  const UpdateEncoding enc({{"x", {2}}}, 1.0, 1.0 * n);
  std::vector<std::vector<uint32_t>> encoded;
  for (int i = 0; i < n; ++i) encoded.push_back(enc.encode({{"x", torch::tensor({0.99f, -0.99f})}}, 1.0, 0.0));
  const auto decoded = enc.decode(ring_sum(encoded));
  EXPECT_NEAR(decoded.values.at("x")[0].item<double>(), 3.96, 1e-6);
  EXPECT_NEAR(decoded.values.at("x")[1].item<double>(), -3.96, 1e-6);
}

TEST(FixedPoint, ValuesBeyondTheRangeAreClampedAndCounted) {
  const UpdateEncoding enc({{"x", {4}}}, 0.5, 0.5);
  const auto v = enc.encode({{"x", torch::tensor({0.1f, 0.7f, -2.0f, -0.5f})}}, 1.0, 0.0);
  const auto decoded = enc.decode(v);
  const auto x = decoded.values.at("x");
  EXPECT_NEAR(x[1].item<double>(), 0.5, 1e-7);
  EXPECT_NEAR(x[2].item<double>(), -0.5, 1e-7);
  EXPECT_NEAR(x[0].item<double>(), 0.1, 1e-7);
  EXPECT_EQ(decoded.clamped, 2) << "exactly ±range is kept, beyond it is clamped";
}

TEST(FixedPoint, BadUpdatesAreRefused) {
  const UpdateEncoding enc({{"x", {2}}}, 1.0, 1.0);
  expect_error<DataError>([&] { enc.encode({{"y", torch::zeros({2})}}, 1.0, 0.0); }, {"x is missing or has another shape"});
  expect_error<DataError>([&] { enc.encode({{"x", torch::zeros({3})}}, 1.0, 0.0); }, {"x is missing or has another shape"});
  expect_error<DataError>([&] { enc.encode({{"x", torch::tensor({0.f, NAN})}}, 1.0, 0.0); }, {"non-finite"});
  expect_error<DataError>([&] { enc.decode(std::vector<uint32_t>(3)); }, {"expected 4"});
  expect_error<ConfigError>([] { UpdateEncoding bad({{"x", {1}}}, 0.0, 1.0); }, {"secure.range"});
}
