// labels: unit
// The engine's Q8_0 / Q4_0 CPU kernels: results against the dequantized matrix, AVX2 against
// portable, thread counts and batch against single vectors bit for bit (around the AVX2 tile
// sizes too), all of it on the interleaved layout of both types as well, which must give the plain
// layout's bits; to_layout, dequantize_matrix_row and argument errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "compress/gguf_quant.h"
#include "core/util/error.h"
#include "infer/quant_kernels.h"
#include "infer/quant_kernels_impl.h"
#include "infer/thread_pool.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using fedsplit::testing::expect_one_line_error;

struct Shape {
  int64_t rows;
  int64_t cols;
};
// The interleaved layout groups 16 rows (the VNNI tile takes 2 groups at a time): 16 and 4096 are whole
// groups, 33, 37 and 50 (an odd count) groups and a plain tail, 1 to 7 a tail alone.
const Shape kShapes[] = {{1, 32}, {1, 256}, {3, 32}, {7, 64}, {16, 64}, {33, 96}, {37, 2048}, {50, 64}, {4096, 1024}};
const GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q4_0};

const QuantLayout kLayouts[] = {QuantLayout::plain, QuantLayout::interleaved};

const char* layout_name(QuantLayout layout) { return layout == QuantLayout::plain ? "plain" : "interleaved"; }

std::vector<float> random_values(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// A quantized random matrix that owns its bytes, in `layout`; `plain` keeps GGUF's rows.
struct Matrix {
  std::vector<uint8_t> plain;
  std::vector<uint8_t> bytes;
  QuantMatrix view;
  Matrix(GgmlType type, Shape s, uint32_t seed, QuantLayout layout = QuantLayout::plain) {
    const auto w = random_values(s.rows * s.cols, seed);
    plain = quantize_rows(type, w.data(), s.rows, s.cols);
    bytes = to_layout(type, plain.data(), s.rows, s.cols, layout);
    view = QuantMatrix{type, bytes.data(), s.rows, s.cols, layout};
  }
  QuantMatrix plain_view() const { return QuantMatrix{view.type, plain.data(), view.rows, view.cols}; }
};

// The dequantized matrix times x, in double, and the scale errors are measured against: the L2
// norm over all products W[r][c] * x[c]. With random data that is the typical size of y, but unlike
// ||y|| it does not vanish when a row's sum cancels (a 1-row result can be ~0 by chance, which made
// a plain relative error meaningless).
struct Reference {
  std::vector<double> y;
  double term_norm = 0.0;
};

Reference reference(const QuantMatrix& w, const float* x) {
  std::vector<float> dense(static_cast<size_t>(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) dequantize_matrix_row(w, r, dense.data() + r * w.cols);
  Reference ref;
  ref.y.assign(static_cast<size_t>(w.rows), 0.0);
  double sq = 0.0;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      const double term = static_cast<double>(dense[r * w.cols + c]) * x[c];
      ref.y[r] += term;
      sq += term * term;
    }
  }
  ref.term_norm = std::sqrt(sq);
  return ref;
}

// ||got - want|| / scale.
template <typename A, typename B>
double relative_l2(const std::vector<A>& got, const std::vector<B>& want, double scale) {
  double diff = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    diff += d * d;
  }
  return std::sqrt(diff) / scale;
}

std::vector<float> matvec(const QuantMatrix& w, const std::vector<float>& x, int threads) {
  std::vector<float> y(static_cast<size_t>(w.rows), -1.0f);
  quant_matvec(w, x.data(), y.data(), threads);
  return y;
}

// Restores the CPU's kernel choice after a test that forces the portable one.
struct PortableGuard {
  explicit PortableGuard(bool on) { force_portable_kernels(on); }
  ~PortableGuard() { force_portable_kernels(false); }
};

// Runs `check` on every type, layout and shape: a random matrix and `x_rows` random activation
// rows, seeded from `seed` onwards (the same data for both layouts), under a trace naming the case
// and the kernel in use.
void for_each_case(uint32_t seed, int64_t x_rows,
                   const std::function<void(const Matrix&, const Shape&, const std::vector<float>&)>& check) {
  for (GgmlType type : kTypes) {
    for (const Shape& s : kShapes) {
      for (QuantLayout layout : kLayouts) {
        SCOPED_TRACE(ggml_type_name(static_cast<uint32_t>(type)) + " " + layout_name(layout) + " " +
                     std::to_string(s.rows) + "x" + std::to_string(s.cols) + " " + quant_kernel_name());
        const Matrix m(type, s, seed, layout);
        check(m, s, random_values(x_rows * s.cols, seed + 1));
      }
      seed += 2;
    }
  }
}

void expect_close_to_reference(bool portable) {
  PortableGuard guard(portable);
  if (portable) {
    EXPECT_STREQ(quant_kernel_name(), "portable");
  }
  for_each_case(1, 1, [](const Matrix& m, const Shape&, const std::vector<float>& x) {
    // The reference uses the exact dequantized weights, so the only error is the activation's
    // rounding to 8 bits per block of 32 (step absmax/127, i.e. at most 1/254 of the block's
    // absmax per value); summed over a row with random signs it stays well under 1%.
    const Reference ref = reference(m.view, x.data());
    EXPECT_LT(relative_l2(matvec(m.view, x, 1), ref.y, ref.term_norm), 1e-2);
  });
}

TEST(QuantKernels, MatchTheDequantizedMatrixWithTheCpuKernels) { expect_close_to_reference(false); }

TEST(QuantKernels, MatchTheDequantizedMatrixWithThePortableKernels) { expect_close_to_reference(true); }

TEST(QuantKernels, ForcePortableSwitchesTheKernel) {
  {
    PortableGuard guard(true);
    EXPECT_STREQ(quant_kernel_name(), "portable");
  }
  const std::string name = quant_kernel_name();
  EXPECT_TRUE(name == "avx2" || name == "portable") << name;
}

TEST(QuantKernels, Avx2AgreesWithPortable) {
  if (std::string(quant_kernel_name()) != "avx2") GTEST_SKIP() << "no AVX2 kernels on this CPU";
  for_each_case(100, 1, [](const Matrix& m, const Shape&, const std::vector<float>& x) {
    const auto fast = matvec(m.view, x, 2);
    std::vector<float> portable;
    {
      PortableGuard guard(true);
      portable = matvec(m.view, x, 2);
    }
    // Same activation codes and the same integer dot per block: only the float summation order
    // over blocks differs.
    EXPECT_LT(relative_l2(fast, portable, reference(m.view, x.data()).term_norm), 1e-5);
  });
}

void expect_thread_counts_identical(bool portable) {
  PortableGuard guard(portable);
  for_each_case(200, 1, [](const Matrix& m, const Shape&, const std::vector<float>& x) {
    // Each output is one dot-product call by one thread in a fixed order: bit for bit the same.
    const auto one = matvec(m.view, x, 1);
    for (int threads : {2, 3, 8}) {
      const auto many = matvec(m.view, x, threads);
      EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0) << threads;
    }
  });
}

TEST(QuantKernels, ThreadCountsGiveIdenticalResults) { expect_thread_counts_identical(false); }

TEST(QuantKernels, ThreadCountsGiveIdenticalResultsPortable) { expect_thread_counts_identical(true); }

void expect_matmul_rows_equal_matvec(bool portable) {
  PortableGuard guard(portable);
  const int64_t batch = 5;
  for_each_case(300, batch, [&](const Matrix& m, const Shape& s, const std::vector<float>& x) {
    for (int threads : {1, 3}) {
      std::vector<float> y(static_cast<size_t>(batch * s.rows), -1.0f);
      quant_matmul(m.view, x.data(), batch, y.data(), threads);
      for (int64_t n = 0; n < batch; ++n) {
        const std::vector<float> xn(x.begin() + n * s.cols, x.begin() + (n + 1) * s.cols);
        const auto yn = matvec(m.view, xn, 1);
        EXPECT_EQ(std::memcmp(yn.data(), y.data() + n * s.rows, yn.size() * sizeof(float)), 0)
            << "batch row " << n << ", threads " << threads;
      }
    }
  });
}

TEST(QuantKernels, MatmulRowsEqualMatvec) { expect_matmul_rows_equal_matvec(false); }

TEST(QuantKernels, MatmulRowsEqualMatvecPortable) { expect_matmul_rows_equal_matvec(true); }

// The AVX2 GEMM tiles 8 activation rows per lane group and 2 groups by 4 (VNNI) or 2 weight rows;
// batches below 4 use the GEMV (8 weight rows per step). Batches around those sizes and the shapes'
// row counts (1, 3, 7, 33, 37: partial tiles) must give every thread count the same bits, each
// batch row the bits of quant_matvec, and results close to the dequantized product (a padding or
// lane mix-up that is consistent between the paths would still fail that).
void expect_tiled_matmul_consistent(bool portable) {
  PortableGuard guard(portable);
  for (int64_t batch : {2, 3, 4, 7, 9, 16, 17, 33}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    for_each_case(800 + 40 * static_cast<uint32_t>(batch), batch,
                  [&](const Matrix& m, const Shape& s, const std::vector<float>& x) {
      std::vector<float> one(static_cast<size_t>(batch * s.rows), -1.0f);
      quant_matmul(m.view, x.data(), batch, one.data(), 1);
      for (int threads : {2, 3, 8}) {
        std::vector<float> many(one.size(), -2.0f);
        quant_matmul(m.view, x.data(), batch, many.data(), threads);
        EXPECT_EQ(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)), 0) << threads;
      }
      for (int64_t n = 0; n < batch; ++n) {
        const std::vector<float> xn(x.begin() + n * s.cols, x.begin() + (n + 1) * s.cols);
        const std::vector<float> yn(one.begin() + n * s.rows, one.begin() + (n + 1) * s.rows);
        EXPECT_EQ(std::memcmp(matvec(m.view, xn, 1).data(), yn.data(), yn.size() * sizeof(float)), 0)
            << "batch row " << n;
        if (n == 0 || n == batch - 1) {
          const Reference ref = reference(m.view, xn.data());
          // Looser than 1e-2: with 32 columns a few rounding errors need not average out (the
          // portable kernels reach 1.6e-2 here too); a lane or padding mix-up errs by ~1.
          EXPECT_LT(relative_l2(yn, ref.y, ref.term_norm), 5e-2) << "batch row " << n;
        }
      }
    });
  }
}

TEST(QuantKernels, TiledMatmulMatchesMatvecThreadsAndReference) {
  expect_tiled_matmul_consistent(false);
  if (quant_detail::vnni_in_use()) {
    quant_detail::force_no_vnni(true);
    expect_tiled_matmul_consistent(false);
    quant_detail::force_no_vnni(false);
  }
}

TEST(QuantKernels, TiledMatmulMatchesMatvecThreadsAndReferencePortable) { expect_tiled_matmul_consistent(true); }

TEST(QuantKernels, ANonFiniteActivationRowStaysInItsRow) {
  // Row 5 of a 12-row batch holds an infinity: its outputs are NaN, and the rows sharing its lane
  // group (0-7) or tile are untouched, equal to their matvec. 29 rows: an interleaved group and a
  // plain tail.
  const int64_t batch = 12;
  const Shape s{29, 96};
  auto x = random_values(batch * s.cols, 901);
  x[5 * s.cols + 40] = INFINITY;
  for (GgmlType type : kTypes) {
    for (QuantLayout layout : kLayouts) {
      SCOPED_TRACE(ggml_type_name(static_cast<uint32_t>(type)) + " " + layout_name(layout));
      const Matrix m(type, s, 900, layout);
      std::vector<float> y(static_cast<size_t>(batch * s.rows));
      quant_matmul(m.view, x.data(), batch, y.data(), 2);
      for (int64_t n = 0; n < batch; ++n) {
        const std::vector<float> xn(x.begin() + n * s.cols, x.begin() + (n + 1) * s.cols);
        const auto yn = matvec(m.view, xn, 1);
        for (int64_t r = 0; r < s.rows; ++r) {
          if (n == 5) {
            EXPECT_TRUE(std::isnan(y[n * s.rows + r])) << r;
          } else {
            EXPECT_EQ(y[n * s.rows + r], yn[r]) << "row " << n << ", " << r;
          }
        }
      }
    }
  }
}

// The interleaved layout's results are the plain layout's, bit for bit, with every kernel family
// (VNNI, plain AVX2, portable), for whole groups and groups with a plain tail, the GEMV's batches
// (1-3) and the GEMM's, and any thread count.
void expect_interleaved_equals_plain() {
  const Shape shapes[] = {{16, 32}, {32, 256}, {45, 96}, {50, 64}, {130, 384}};
  uint32_t seed = 1000;
  for (GgmlType type : kTypes) {
    for (const Shape& s : shapes) {
      const Matrix m(type, s, seed++, QuantLayout::interleaved);
      for (int64_t batch : {1, 2, 3, 4, 9, 17, 40}) {
        const auto x = random_values(batch * s.cols, seed++);
        for (int threads : {1, 2, 3}) {
          SCOPED_TRACE(ggml_type_name(static_cast<uint32_t>(type)) + " " + std::to_string(s.rows) + "x" +
                       std::to_string(s.cols) + " batch " + std::to_string(batch) + " threads " +
                       std::to_string(threads) + " " + quant_kernel_name());
          std::vector<float> plain(static_cast<size_t>(batch * s.rows), -1.0f), inter(plain.size(), -2.0f);
          quant_matmul(m.plain_view(), x.data(), batch, plain.data(), threads);
          quant_matmul(m.view, x.data(), batch, inter.data(), threads);
          EXPECT_EQ(std::memcmp(plain.data(), inter.data(), plain.size() * sizeof(float)), 0);
        }
      }
    }
  }
}

TEST(QuantKernels, InterleavedEqualsPlainBitForBit) {
  expect_interleaved_equals_plain();
  if (quant_detail::vnni_in_use()) {
    quant_detail::force_no_vnni(true);
    expect_interleaved_equals_plain();
    quant_detail::force_no_vnni(false);
  }
  PortableGuard guard(true);
  expect_interleaved_equals_plain();
}

TEST(QuantKernels, ToLayoutAndDequantizeMatrixRow) {
  for (GgmlType type : kTypes) {
    const size_t block_bytes = type == GgmlType::Q8_0 ? 34 : 18;
    for (const Shape& s : {Shape{7, 64}, Shape{16, 32}, Shape{37, 96}}) {
      SCOPED_TRACE(ggml_type_name(static_cast<uint32_t>(type)) + " " + std::to_string(s.rows) + "x" +
                   std::to_string(s.cols));
      const Matrix m(type, s, 1100, QuantLayout::interleaved);
      ASSERT_EQ(m.bytes.size(), m.plain.size());
      EXPECT_EQ(to_layout(type, m.plain.data(), s.rows, s.cols, QuantLayout::plain), m.plain);
      // The rows past the last full group keep their plain bytes and offset.
      const size_t groups_bytes = static_cast<size_t>(s.rows / 16 * 16 * (s.cols / 32)) * block_bytes;
      EXPECT_TRUE(std::equal(m.plain.begin() + groups_bytes, m.plain.end(), m.bytes.begin() + groups_bytes));
      if (s.rows >= 16) {
        EXPECT_NE(m.bytes, m.plain);
      }
      std::vector<float> dense(static_cast<size_t>(s.rows * s.cols));
      dequantize_values(type, m.plain.data(), s.rows * s.cols, dense.data());
      for (int64_t r = 0; r < s.rows; ++r) {
        std::vector<float> a(static_cast<size_t>(s.cols)), b(a.size());
        dequantize_matrix_row(m.view, r, a.data());
        dequantize_matrix_row(m.plain_view(), r, b.data());
        EXPECT_EQ(std::memcmp(a.data(), dense.data() + r * s.cols, a.size() * sizeof(float)), 0) << r;
        EXPECT_EQ(std::memcmp(b.data(), dense.data() + r * s.cols, b.size() * sizeof(float)), 0) << r;
      }
    }
  }
  // Hand-made: row k of 16 has scale k + 1 and every nibble k, so weight = (k - 8) * (k + 1).
  std::vector<uint8_t> plain(16 * 18);
  for (int k = 0; k < 16; ++k) {
    const uint16_t d = fp32_to_fp16(static_cast<float>(k + 1));
    plain[k * 18] = static_cast<uint8_t>(d & 0xFF);
    plain[k * 18 + 1] = static_cast<uint8_t>(d >> 8);
    for (int j = 0; j < 16; ++j) plain[k * 18 + 2 + j] = static_cast<uint8_t>(k | (k << 4));
  }
  const auto inter = to_layout(GgmlType::Q4_0, plain.data(), 16, 32, QuantLayout::interleaved);
  // Scales side by side, then chunk 0 of rows 0..15: row 1's bytes 0-3 at 32 + 4.
  EXPECT_EQ(fp16_to_fp32(static_cast<uint16_t>(inter[2] | (inter[3] << 8))), 2.0f);
  EXPECT_EQ(inter[32 + 4], 0x11);
  EXPECT_EQ(inter[32 + 64 + 4 * 15], 0xFF);
  const QuantMatrix w{GgmlType::Q4_0, inter.data(), 16, 32, QuantLayout::interleaved};
  for (int k = 0; k < 16; ++k) {
    std::vector<float> row(32);
    dequantize_matrix_row(w, k, row.data());
    for (float v : row) EXPECT_EQ(v, static_cast<float>((k - 8) * (k + 1))) << k;
  }
}

// A hand-made Q8_0 group: row k has scale k + 1; even rows alternate the extreme codes -128 and
// 127 (the plain AVX2 tile's sign trick must keep |-128| = 128 exact), odd rows code j is
// 8k + j - 64. x holds exact codes +-127 (d_x = 1), so every result is an exact integer times
// k + 1, the same in every kernel and layout.
TEST(QuantKernels, Q8_0InterleavedChunksAndExtremeCodes) {
  const auto code = [](int k, int j) { return k % 2 == 0 ? (j % 2 ? 127 : -128) : 8 * k + j - 64; };
  std::vector<uint8_t> plain(16 * 34);
  for (int k = 0; k < 16; ++k) {
    const uint16_t d = fp32_to_fp16(static_cast<float>(k + 1));
    plain[k * 34] = static_cast<uint8_t>(d & 0xFF);
    plain[k * 34 + 1] = static_cast<uint8_t>(d >> 8);
    for (int j = 0; j < 32; ++j) plain[k * 34 + 2 + j] = static_cast<uint8_t>(static_cast<int8_t>(code(k, j)));
  }
  const auto inter = to_layout(GgmlType::Q8_0, plain.data(), 16, 32, QuantLayout::interleaved);
  // Scales side by side, then chunk i (code bytes 4i..4i+3) of rows 0..15 in turn.
  for (int k = 0; k < 16; ++k) {
    EXPECT_EQ(fp16_to_fp32(static_cast<uint16_t>(inter[2 * k] | (inter[2 * k + 1] << 8))), k + 1.0f) << k;
    for (int j = 0; j < 32; ++j)
      EXPECT_EQ(static_cast<int8_t>(inter[32 + 64 * (j / 4) + 4 * k + j % 4]), code(k, j)) << k << " " << j;
  }
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = (j % 3 == 0 ? -1.0f : 1.0f) * 127.0f;
  std::vector<float> want(16);
  for (int k = 0; k < 16; ++k) {
    int64_t dot = 0;
    for (int j = 0; j < 32; ++j) dot += code(k, j) * static_cast<int64_t>(x[j]);
    want[k] = static_cast<float>(dot * (k + 1));
  }
  const auto check = [&](const char* kernels) {
    for (QuantLayout layout : kLayouts) {
      const QuantMatrix w{GgmlType::Q8_0, layout == QuantLayout::plain ? plain.data() : inter.data(), 16, 32, layout};
      std::vector<float> y(16);
      quant_matvec(w, x.data(), y.data(), 1);
      for (int k = 0; k < 16; ++k) EXPECT_EQ(y[k], want[k]) << kernels << " " << layout_name(layout) << " " << k;
      // Five equal activation rows: the GEMM tiles too.
      std::vector<float> xs, ys(5 * 16);
      for (int n = 0; n < 5; ++n) xs.insert(xs.end(), x.begin(), x.end());
      quant_matmul(w, xs.data(), 5, ys.data(), 1);
      for (int k = 0; k < 16; ++k)
        EXPECT_EQ(ys[4 * 16 + k], want[k]) << kernels << " " << layout_name(layout) << " " << k;
    }
  };
  check(quant_kernel_name());
  if (quant_detail::vnni_in_use()) {
    quant_detail::force_no_vnni(true);
    check("avx2 without vnni");
    quant_detail::force_no_vnni(false);
  }
  PortableGuard guard(true);
  check("portable");
}

TEST(QuantKernels, LayoutChoiceAndErrors) {
  const bool avx2 = std::string(quant_kernel_name()) == "avx2";
  EXPECT_EQ(preferred_layout(GgmlType::Q4_0, 32, 64), avx2 ? QuantLayout::interleaved : QuantLayout::plain);
  EXPECT_EQ(preferred_layout(GgmlType::Q4_0, 15, 64), QuantLayout::plain);
  EXPECT_EQ(preferred_layout(GgmlType::Q8_0, 32, 64), avx2 ? QuantLayout::interleaved : QuantLayout::plain);
  EXPECT_EQ(preferred_layout(GgmlType::Q8_0, 16, 32), avx2 ? QuantLayout::interleaved : QuantLayout::plain);
  EXPECT_EQ(preferred_layout(GgmlType::Q8_0, 15, 64), QuantLayout::plain);
  EXPECT_EQ(preferred_layout(GgmlType::F32, 32, 64), QuantLayout::plain);
  {
    PortableGuard guard(true);
    EXPECT_EQ(preferred_layout(GgmlType::Q4_0, 32, 64), QuantLayout::plain);
    EXPECT_EQ(preferred_layout(GgmlType::Q8_0, 32, 64), QuantLayout::plain);
  }
  std::vector<uint8_t> bytes(34 * 16, 0);
  expect_one_line_error<DataError>(
      [&] { to_layout(GgmlType::F16, bytes.data(), 16, 32, QuantLayout::interleaved); }, {"F16", "Q8_0 or Q4_0"});
  expect_one_line_error<DataError>(
      [&] { to_layout(GgmlType::Q4_0, bytes.data(), 16, 48, QuantLayout::interleaved); }, {"multiple of 32"});
  expect_one_line_error<DataError>(
      [&] { to_layout(GgmlType::Q8_0, bytes.data(), 16, 48, QuantLayout::interleaved); }, {"multiple of 32"});
  std::vector<float> x(32, 1.0f), y(16, 0.0f);
  expect_one_line_error<DataError>(
      [&] { dequantize_matrix_row(QuantMatrix{GgmlType::Q4_0, bytes.data(), 16, 32}, 16, y.data()); }, {"row 16"});
}

TEST(QuantKernels, Q4_0NibbleLayoutAndExtremeCodes) {
  // One hand-made Q4_0 block with d = 1: weight j = (j % 16) - 8 from the low nibbles, weight
  // j + 16 = 7 - (j % 16) from the high nibbles; one Q8_0 block with codes -128..127 extremes.
  std::vector<uint8_t> q4(18, 0);
  q4[0] = 0x00;
  q4[1] = 0x3c;  // fp16 1.0
  for (int j = 0; j < 16; ++j) q4[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  std::vector<uint8_t> q8(34, 0);
  q8[0] = 0x00;
  q8[1] = 0x3c;
  for (int j = 0; j < 32; ++j) q8[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j % 2 ? 127 : -128));
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = (j % 3 == 0 ? -1.0f : 1.0f) * 127.0f;  // exact codes, d_x = 1
  for (bool portable : {false, true}) {
    PortableGuard guard(portable);
    for (const auto* bytes : {&q4, &q8}) {
      const QuantMatrix w{bytes == &q4 ? GgmlType::Q4_0 : GgmlType::Q8_0, bytes->data(), 1, 32};
      const auto want = reference(w, x.data()).y;
      float got = 0.0f;
      quant_matvec(w, x.data(), &got, 1);
      EXPECT_EQ(static_cast<double>(got), want[0]) << quant_kernel_name();
    }
  }
}

TEST(QuantKernels, RejectsUnsupportedTypesAndShapes) {
  std::vector<uint8_t> bytes(34 * 4, 0);
  std::vector<float> x(64, 1.0f);
  std::vector<float> y(4, 0.0f);
  expect_one_line_error<DataError>(
      [&] { quant_matvec(QuantMatrix{GgmlType::F32, bytes.data(), 1, 32}, x.data(), y.data(), 1); },
      {"F32", "Q8_0 or Q4_0"});
  expect_one_line_error<DataError>(
      [&] { quant_matvec(QuantMatrix{GgmlType::Q8_0, bytes.data(), 1, 48}, x.data(), y.data(), 1); },
      {"Q8_0", "1x48", "multiple of 32"});
  expect_one_line_error<DataError>(
      [&] { quant_matmul(QuantMatrix{GgmlType::Q4_0, bytes.data(), 1, 32}, x.data(), -1, y.data(), 1); },
      {"batch"});
  // Empty products are fine and write nothing.
  quant_matvec(QuantMatrix{GgmlType::Q8_0, bytes.data(), 0, 32}, x.data(), y.data(), 4);
  quant_matmul(QuantMatrix{GgmlType::Q8_0, bytes.data(), 2, 32}, x.data(), 0, y.data(), 4);
}

TEST(QuantKernels, VnniEqualsPlainAvx2BitForBit) {
  if (!quant_detail::vnni_in_use()) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  // dpbusd forms the same int32 sums as maddubs + madd, so every output must be identical.
  const int64_t batch = 6;
  for_each_case(700, batch, [&](const Matrix& m, const Shape& s, const std::vector<float>& x) {
    std::vector<float> vnni(static_cast<size_t>(batch * s.rows)), plain(vnni.size());
    quant_matmul(m.view, x.data(), batch, vnni.data(), 2);
    quant_detail::force_no_vnni(true);
    EXPECT_FALSE(quant_detail::vnni_in_use());
    quant_matmul(m.view, x.data(), batch, plain.data(), 2);
    quant_detail::force_no_vnni(false);
    EXPECT_EQ(std::memcmp(vnni.data(), plain.data(), vnni.size() * sizeof(float)), 0);
  });
}

TEST(QuantKernels, Avx2QuantizesActivationsLikePortable) {
  if (std::string(quant_kernel_name()) != "avx2") GTEST_SKIP() << "no AVX2 kernels on this CPU";
  // Row r of W is the unit vector e_r, so y[r] = d_w * 127 * d_x * code_x[r] with no other rounding:
  // equal outputs mean equal activation codes and scales. x has ties (k + 0.5 with step 1) that
  // must round to even, signed zeros, a zero block and large values.
  const int64_t cols = 256;
  std::vector<float> dense(static_cast<size_t>(cols * cols), 0.0f);
  for (int64_t r = 0; r < cols; ++r) dense[r * cols + r] = 1.0f;
  const auto bytes = quantize_rows(GgmlType::Q8_0, dense.data(), cols, cols);
  const QuantMatrix w{GgmlType::Q8_0, bytes.data(), cols, cols};
  std::vector<float> x(static_cast<size_t>(cols), 0.0f);
  for (int64_t j = 0; j < 32; ++j) x[j] = j == 0 ? 127.0f : static_cast<float>(j % 9) - 4.5f;  // ties
  for (int64_t j = 32; j < 64; ++j) x[j] = j % 2 ? -0.0f : 0.0f;                              // zero block
  const auto more = random_values(cols - 64, 600);
  for (int64_t j = 64; j < cols; ++j) x[j] = more[j - 64] * (j < 160 ? 1e-3f : 1e4f);
  const auto fast = matvec(w, x, 1);
  std::vector<float> portable;
  {
    PortableGuard guard(true);
    portable = matvec(w, x, 1);
  }
  for (int64_t r = 0; r < cols; ++r) EXPECT_EQ(fast[r], portable[r]) << r;
  // Code of x[j] = portable[j] / portable[0] * 127 (x[0] = 127 has code 127): ties go to even.
  const auto code = [&](int64_t j) { return std::nearbyint(portable[j] / portable[0] * 127.0f); };
  EXPECT_EQ(code(3), -2.0f);  // -1.5
  EXPECT_EQ(code(5), 0.0f);   // 0.5
  EXPECT_EQ(code(7), 2.0f);   // 2.5
  EXPECT_EQ(code(8), 4.0f);   // 3.5
}

TEST(QuantKernels, ManyPooledCallsGiveIdenticalResults) {
  // The persistent pool is reused across hundreds of small regions (as in a decode step) and
  // across thread counts; every call must match the single-threaded one bit for bit.
  for (GgmlType type : kTypes) {
    const Matrix m(type, {384, 384}, 400);
    const auto x = random_values(384, 401);
    const auto want = matvec(m.view, x, 1);
    for (int call = 0; call < 300; ++call) {
      const int threads = 1 + call % 3;
      const auto got = matvec(m.view, x, threads);
      ASSERT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0)
          << "call " << call << ", threads " << threads;
    }
  }
}

TEST(QuantKernels, ConcurrentCallersGiveIdenticalResults) {
  // Two callers (as pipeline ranks running as threads) share the pool: one gets it, the other
  // runs inline; both must get the single-threaded results.
  const Matrix a(GgmlType::Q8_0, {256, 512}, 500);
  const Matrix b(GgmlType::Q4_0, {300, 256}, 501);
  const auto xa = random_values(512, 502);
  const auto xb = random_values(256, 503);
  const auto want_a = matvec(a.view, xa, 1);
  const auto want_b = matvec(b.view, xb, 1);
  int bad_a = 0;
  int bad_b = 0;
  auto loop = [](const Matrix& m, const std::vector<float>& x, const std::vector<float>& want, int* bad) {
    for (int call = 0; call < 200; ++call) {
      const auto got = matvec(m.view, x, 2 + call % 2);
      if (std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) != 0) ++*bad;
    }
  };
  std::thread ta(loop, std::cref(a), std::cref(xa), std::cref(want_a), &bad_a);
  std::thread tb(loop, std::cref(b), std::cref(xb), std::cref(want_b), &bad_b);
  ta.join();
  tb.join();
  EXPECT_EQ(bad_a, 0);
  EXPECT_EQ(bad_b, 0);
}

TEST(ThreadPool, CoversEveryIndexOnceInFixedChunks) {
  for (int threads : {1, 2, 3, 5}) {
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      std::vector<int64_t> chunk_of(static_cast<size_t>(n), -1);
      parallel_for(threads, n, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          ++hits[i];
          chunk_of[i] = begin;
        }
      });
      const int64_t chunks = threads <= 1 ? std::min<int64_t>(n, 1) : std::min<int64_t>(4 * threads, n);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(hits[i], 1) << threads << " " << n << " " << i;
        // Index i lies in chunk c = the last c with c * n / chunks <= i.
        int64_t c = chunks - 1;
        while (c * n / chunks > i) --c;
        EXPECT_EQ(chunk_of[i], c * n / chunks) << threads << " " << n << " " << i;
      }
    }
  }
}

TEST(ThreadPool, RethrowsAChunksExceptionAndStaysUsable) {
  EXPECT_THROW(parallel_for(2, 10,
                            [](int64_t begin, int64_t) {
                              if (begin > 0) throw std::runtime_error("chunk failed");
                            }),
               std::runtime_error);
  std::vector<int64_t> values(100, 0);
  parallel_for(2, 100, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) values[i] = i;
  });
  int64_t sum = 0;
  for (int64_t v : values) sum += v;
  EXPECT_EQ(sum, 4950);
}

TEST(ThreadPool, WorkersThatFellAsleepStillCoverEverything) {
  // Idle workers stop polling after a while and sleep; the next regions must still be complete.
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
    std::vector<int> hits(500, 0);
    parallel_for(3, 500, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) ++hits[i];
    });
    for (int h : hits) ASSERT_EQ(h, 1) << "round " << round;
  }
}

TEST(ThreadPool, NestedRegionsRunInline) {
  std::vector<int> hits(64, 0);
  parallel_for(2, 4, [&](int64_t b0, int64_t e0) {
    for (int64_t o = b0; o < e0; ++o)
      parallel_for(2, 16, [&](int64_t b1, int64_t e1) {
        for (int64_t i = b1; i < e1; ++i) ++hits[o * 16 + i];
      });
  });
  for (int h : hits) EXPECT_EQ(h, 1);
}

}  // namespace
}  // namespace fedsplit
