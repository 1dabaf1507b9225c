// labels: unit
// split/codec and split/noise: each codec's error bound, exact sizes on the wire, topk's selection,
// the noise defence's measured std, and FormatError / ConfigError for bad bytes and bad values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstring>
#include <set>
#include <string>

#include "core/util/error.h"
#include "split/codec.h"
#include "split/noise.h"
#include "tests/split/split_test_helpers.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using testing::expect_one_line_error;
using testing::max_diff;

// Header bytes of a message of `ndim` dimensions: magic, kind, dtype, ndim, index width, sizes.
int64_t header_bytes(int64_t ndim) { return 8 + 8 * ndim; }

// Activation-like values: normal with a few large outliers, seeded.
torch::Tensor activations(std::vector<int64_t> sizes, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto x = torch::randn(sizes, gen, torch::kFloat);
  x.view({-1}).slice(0, 0, x.numel(), 97).mul_(40);  // every 97th value an outlier
  return x;
}

TEST(Codec, Fp32IsExact) {
  const auto x = activations({2, 5, 16}, 1);
  const auto bytes = encode_tensor(x, parse_codec("fp32"));
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), header_bytes(3) + 4 * x.numel());
  const auto y = decode_tensor(bytes, "test");
  EXPECT_EQ(y.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(x, y));
}

// Round-to-nearest into a format with p significand bits has relative error <= 2^-p (unit roundoff),
// plus half the smallest subnormal step for values below the normal range.
TEST(Codec, Fp16AndBf16StayWithinTheirUnitRoundoff) {
  const auto x = activations({3, 4, 32}, 2);
  struct Case {
    const char* name;
    double unit_roundoff;
    double half_subnormal;
  };
  for (const auto& c : {Case{"fp16", std::ldexp(1.0, -11), std::ldexp(1.0, -25)},
                        Case{"bf16", std::ldexp(1.0, -8), std::ldexp(1.0, -134)}}) {
    const auto bytes = encode_tensor(x, parse_codec(c.name));
    EXPECT_EQ(static_cast<int64_t>(bytes.size()), header_bytes(3) + 2 * x.numel()) << c.name;
    const auto y = decode_tensor(bytes, "test");
    EXPECT_EQ(y.scalar_type(), torch::kFloat);
    const auto error = (y.to(torch::kDouble) - x.to(torch::kDouble)).abs();
    const auto bound = x.to(torch::kDouble).abs() * c.unit_roundoff + c.half_subnormal;
    EXPECT_TRUE((error <= bound).all().item<bool>()) << c.name << " max error " << error.max().item<double>();
    EXPECT_GT(error.max().item<double>(), 0) << c.name << " changed nothing: the test would not see a bad bound";
  }
}

TEST(Codec, DecodesToTheDtypeItWasEncodedFrom) {
  const auto x = activations({2, 8}, 3).to(torch::kBFloat16);
  const auto y = decode_tensor(encode_tensor(x, parse_codec("fp32")), "test");
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(x, y));
  const auto h = activations({2, 8}, 4).to(torch::kHalf);
  EXPECT_TRUE(torch::equal(h, decode_tensor(encode_tensor(h, parse_codec("fp16")), "test")));
}

TEST(Codec, Int8ErrorIsAtMostHalfAScalePerTokenRow) {
  auto x = activations({2, 6, 48}, 5);
  x[0][1].zero_();     // a zero row has scale 0 and decodes to zeros
  x[1][2][7] = 500.0;  // an outlier widens its own row's scale only
  const auto bytes = encode_tensor(x, parse_codec("int8"));
  const int64_t rows = 12;
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), header_bytes(3) + 4 * rows + x.numel());
  const auto y = decode_tensor(bytes, "test");
  const auto scale = (x.abs().amax(-1, /*keepdim=*/true) / 127.0).to(torch::kDouble);
  const auto error = (y.to(torch::kDouble) - x.to(torch::kDouble)).abs();
  // scale / 2 from rounding, with room for fp32 arithmetic in the scale and the product.
  EXPECT_TRUE((error <= scale * 0.5 * (1 + 1e-5) + 1e-30).all().item<bool>());
  EXPECT_TRUE(torch::equal(y[0][1], torch::zeros({48})));
  EXPECT_LT(error[1][3].max().item<double>(), error[1][2].max().item<double>() / 10);
  // The row's largest value is exact (q = +-127).
  EXPECT_NEAR(y[1][2][7].item<double>(), 500.0, 1e-4);
}

TEST(Codec, TopkKeepsExactlyTheKLargestPerRowAndZerosTheRest) {
  const auto x = activations({3, 4, 20}, 6);
  const auto bytes = encode_tensor(x, parse_codec("topk:0.25"));
  const int64_t rows = 12, k = 5;
  // k = 5 of 20; fp32 values and uint16 indices per kept value, plus the uint32 k.
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), header_bytes(3) + 4 + rows * k * (4 + 2));
  const auto y = decode_tensor(bytes, "test").reshape({rows, 20});
  const auto flat = x.reshape({rows, 20});
  for (int64_t r = 0; r < rows; ++r) {
    const auto top = std::get<1>(flat[r].abs().topk(k));
    std::set<int64_t> kept;
    for (int64_t i = 0; i < k; ++i) kept.insert(top[i].item<int64_t>());
    for (int64_t j = 0; j < 20; ++j) {
      const float want = kept.count(j) ? flat[r][j].item<float>() : 0.0f;
      EXPECT_EQ(y[r][j].item<float>(), want) << "row " << r << " column " << j;
    }
  }
}

TEST(Codec, TopkOnRowsLongerThanUint16UsesInt32Indices) {
  const auto x = activations({2, 70000}, 7);
  const auto bytes = encode_tensor(x, parse_codec("topk:0.001"));
  const int64_t k = 70;
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), header_bytes(2) + 4 + 2 * k * (4 + 4));
  const auto y = decode_tensor(bytes, "test");
  for (int64_t r = 0; r < 2; ++r) {
    const auto top = std::get<1>(x[r].abs().topk(k));
    EXPECT_TRUE(torch::equal(y[r].index_select(0, top), x[r].index_select(0, top)));
    EXPECT_EQ((y[r] != 0).sum().item<int64_t>(), k);
  }
}

TEST(Codec, TopkCount) {
  EXPECT_EQ(topk_count(0.1, 20), 2);
  EXPECT_EQ(topk_count(0.3, 10), 3);  // 0.3 * 10 is 3.0000000000000004 in floating point
  EXPECT_EQ(topk_count(0.11, 20), 3);
  EXPECT_EQ(topk_count(1e-9, 20), 1);
  EXPECT_EQ(topk_count(1.0, 20), 20);
  EXPECT_EQ(topk_count(0.5, 0), 0);
}

TEST(Codec, TokenIdsRoundTripAsInt32) {
  const auto ids = testing::random_ids(50000, 3, 7, 1);
  const auto bytes = encode_token_ids(ids);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), header_bytes(2) + 4 * ids.numel());
  EXPECT_TRUE(torch::equal(decode_token_ids(bytes, "test"), ids));
  EXPECT_THROW(encode_token_ids(torch::tensor({int64_t(-1)})), c10::Error);
  EXPECT_THROW(encode_token_ids(torch::tensor({int64_t(1) << 33})), c10::Error);
}

TEST(Codec, EveryTruncationAndTrailingByteIsAFormatError) {
  const auto x = activations({2, 3, 8}, 8);
  std::vector<std::string> messages;
  for (const char* c : {"fp32", "fp16", "bf16", "int8", "topk:0.3"}) messages.push_back(encode_tensor(x, parse_codec(c)));
  for (const auto& m : messages) {
    for (size_t n = 0; n < m.size(); ++n)
      expect_one_line_error<FormatError>([&] { decode_tensor(m.substr(0, n), "activation from rank 1"); },
                                         {"activation from rank 1"});
    expect_one_line_error<FormatError>([&] { decode_tensor(m + '\0', "test"); }, {"past the end"});
  }
  const auto ids = encode_token_ids(testing::random_ids(10, 2, 3, 2));
  for (size_t n = 0; n < ids.size(); ++n)
    expect_one_line_error<FormatError>([&] { decode_token_ids(ids.substr(0, n), "targets"); }, {"targets"});
}

TEST(Codec, CorruptHeadersAndPayloadsAreFormatErrors) {
  const auto x = activations({2, 3, 8}, 9);
  const auto good = encode_tensor(x, parse_codec("topk:0.5"));
  auto corrupt = [&](size_t at, const void* value, size_t n) {
    std::string m = good;
    std::memcpy(&m[at], value, n);
    return m;
  };
  const uint8_t bad_kind = 9, bad_dtype = 7, zero = 0, nine = 9, three = 3;
  const int64_t huge = int64_t(1) << 62, negative = -4;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {corrupt(0, "XSX1", 4), "magic"},
      {corrupt(4, &bad_kind, 1), "kind"},
      {corrupt(5, &bad_dtype, 1), "dtype"},
      {corrupt(6, &zero, 1), "ndim"},
      {corrupt(6, &nine, 1), "ndim"},
      {corrupt(7, &three, 1), "index width"},
      {corrupt(8, &huge, 8), ""},        // sizes far beyond the message
      {corrupt(16, &negative, 8), "negative size"},
  };
  for (const auto& [message, needle] : cases)
    expect_one_line_error<FormatError>([&] { decode_tensor(message, "test"); }, {needle});

  // topk: k larger than the row, and an index out of the row (the first index of the first row).
  const uint32_t big_k = 9;
  expect_one_line_error<FormatError>([&] { decode_tensor(corrupt(32, &big_k, 4), "test"); }, {"topk count"});
  const size_t first_index = 32 + 4 + 6 * 4 * 4;
  const int16_t out_of_row = 8;
  expect_one_line_error<FormatError>([&] { decode_tensor(corrupt(first_index, &out_of_row, 2), "test"); },
                                     {"indices"});
  // A repeated index would decode two kept values into one place: indices must be strictly ascending.
  int16_t first_value;
  std::memcpy(&first_value, &good[first_index], 2);
  expect_one_line_error<FormatError>([&] { decode_tensor(corrupt(first_index + 2, &first_value, 2), "test"); },
                                     {"ascending"});
  // int8: a negative scale.
  std::string int8 = encode_tensor(x, parse_codec("int8"));
  const float minus = -1.0f;
  std::memcpy(&int8[32], &minus, 4);
  expect_one_line_error<FormatError>([&] { decode_tensor(int8, "test"); }, {"scales"});

  // A tensor where ids are expected and the other way round; bytes that are no message at all.
  const auto ids = encode_token_ids(testing::random_ids(10, 2, 3, 2));
  expect_one_line_error<FormatError>([&] { decode_token_ids(good, "targets"); }, {"targets"});
  expect_one_line_error<FormatError>([&] { decode_tensor(ids, "test"); }, {"token ids"});
  expect_one_line_error<FormatError>([&] { decode_tensor(std::string(200, 'z'), "test"); }, {"magic"});
}

TEST(Codec, ValuesParseAndPrintBack) {
  for (const char* v : {"fp32", "fp16", "bf16", "int8", "topk:0.1", "topk:1", "topk:0.025"})
    EXPECT_EQ(to_string(parse_codec(v)), v);
  EXPECT_EQ(parse_codec("topk:0.1").kind, CodecKind::topk);
  EXPECT_DOUBLE_EQ(parse_codec("topk:0.1").topk_fraction, 0.1);
}

TEST(Codec, BadValuesAreConfigErrorsNamingTheKey) {
  for (const char* v : {"", "int4", "FP32", "fp32 ", "topk", "topk:", "topk:0", "topk:-0.1", "topk:1.5", "topk:abc",
                        "topk:0.1x", "topk:nan"})
    expect_one_line_error<ConfigError>([&] { parse_codec(v); }, {"split.codec", "'" + std::string(v) + "'", "int8"});
  expect_one_line_error<ConfigError>([] { parse_codec("int4", "split.grad_codec"); }, {"split.grad_codec"});
}

TEST(Noise, MeasuredStdIsTheRequestedFractionOfTheRms) {
  const auto x = activations({16, 64, 64}, 10) * 3;
  const double rms = x.square().mean().sqrt().item<double>();
  ActivationNoise noise({0.1, 42});
  const auto noisy = noise.apply(x);
  const double measured = (noisy - x).std().item<double>();
  EXPECT_NEAR(measured / rms, 0.1, 0.1 * 0.03);
  EXPECT_NEAR((noisy - x).mean().item<double>(), 0.0, 0.1 * rms * 0.03);

  // Seeded: the same seed repeats the noise, another seed does not; sigma 0 adds nothing.
  EXPECT_TRUE(torch::equal(ActivationNoise({0.1, 42}).apply(x), noisy));
  EXPECT_FALSE(torch::equal(ActivationNoise({0.1, 43}).apply(x), noisy));
  EXPECT_FALSE(torch::equal(noise.apply(x), noisy));  // the next draw is fresh
  EXPECT_TRUE(torch::equal(ActivationNoise({0.0, 42}).apply(x), x));
  EXPECT_FALSE(noisy.requires_grad());
}

TEST(Noise, NegativeOrNonFiniteSigmaIsAConfigError) {
  expect_one_line_error<ConfigError>([] { ActivationNoise({-0.5, 0}); }, {"split.noise_sigma"});
  expect_one_line_error<ConfigError>([] { ActivationNoise({std::nan(""), 0}); }, {"split.noise_sigma"});
}

}  // namespace
}  // namespace fedsplit
