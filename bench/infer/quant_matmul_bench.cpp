// Times quant_matmul at the pretrain-base shapes (rows x cols: 640x384 = fused q/k/v, 2048x384 =
// fused gate/up, 384x1024, 384x384, 8192x384) with T activation rows, on 1 and 2 threads, for
// four variants: Q8_0 and Q4_0, each plain (GGUF's rows) and interleaved (to_layout). The variants
// alternate rep by rep, so load on a shared machine hits them alike; prints the median GMAC/s and
// the best of `reps` runs (the best is steadier on a shared machine), and each type's interleaved
// over plain (medians). Torch-free; built as build/bench/bench_quant_matmul_bench:
//   [NO_VNNI=1] build/bench/bench_quant_matmul_bench [T = 110] [reps = 15] [max threads = 2]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "compress/gguf_quant.h"
#include "infer/quant_kernels.h"
#include "infer/quant_kernels_impl.h"

using namespace fedsplit;

namespace {

std::vector<float> random_floats(int64_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

struct Variant {
  const char* name;
  std::vector<uint8_t> bytes;
  QuantMatrix w;
  std::vector<double> gmacs;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t T = argc > 1 ? std::atoll(argv[1]) : 110;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 15;
  const int max_threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const int64_t shapes[5][2] = {{640, 384}, {2048, 384}, {384, 1024}, {384, 384}, {8192, 384}};
  // NO_VNNI=1 times the plain AVX2 kernels on a CPU that has AVX512-VNNI.
  if (const char* v = std::getenv("NO_VNNI"); v != nullptr && v[0] == '1') quant_detail::force_no_vnni(true);
  std::mt19937 rng(7);
  std::printf("kernel %s%s, T %lld, %d reps\n", quant_kernel_name(), quant_detail::vnni_in_use() ? " (vnni)" : "",
              static_cast<long long>(T), reps);
  for (const auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1];
    const auto dense = random_floats(rows * cols, 0.05f, rng);
    // q8_0 plain, q8_0 x16, q4_0 plain, q4_0 x16.
    std::vector<Variant> variants(4);
    for (int t = 0; t < 2; ++t) {
      const GgmlType type = t == 0 ? GgmlType::Q8_0 : GgmlType::Q4_0;
      const auto plain = quantize_rows(type, dense.data(), rows, cols);
      for (int l = 0; l < 2; ++l) {
        const QuantLayout layout = l == 0 ? QuantLayout::plain : QuantLayout::interleaved;
        Variant& v = variants[2 * t + l];
        v.name = t == 0 ? (l == 0 ? "q8_0 plain" : "q8_0 x16  ") : (l == 0 ? "q4_0 plain" : "q4_0 x16  ");
        v.bytes = to_layout(type, plain.data(), rows, cols, layout);
        v.w = QuantMatrix{type, v.bytes.data(), rows, cols, layout};
      }
    }
    const auto x = random_floats(T * cols, 1.0f, rng);
    std::vector<float> y(static_cast<size_t>(T * rows));
    for (int threads = 1; threads <= max_threads; ++threads) {
      // Enough calls per rep for ~10 ms, so the timer and pool wake-up do not dominate.
      const double macs = static_cast<double>(rows) * cols * T;
      const int calls = std::max(1, static_cast<int>(2e8 / macs));
      for (auto& v : variants) {
        v.gmacs.clear();
        quant_matmul(v.w, x.data(), T, y.data(), threads);
      }
      for (int r = 0; r < reps; ++r) {
        for (auto& v : variants) {
          const auto t0 = std::chrono::steady_clock::now();
          for (int c = 0; c < calls; ++c) quant_matmul(v.w, x.data(), T, y.data(), threads);
          const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          v.gmacs.push_back(macs * calls / sec / 1e9);
        }
      }
      for (const auto& v : variants)
        std::printf("%5lldx%-5lld threads %d %s: %6.1f GMAC/s median, %6.1f best\n", static_cast<long long>(rows),
                    static_cast<long long>(cols), threads, v.name, median(v.gmacs),
                    *std::max_element(v.gmacs.begin(), v.gmacs.end()));
      std::printf("%5lldx%-5lld threads %d x16 / plain: q8_0 %.2f, q4_0 %.2f\n", static_cast<long long>(rows),
                  static_cast<long long>(cols), threads, median(variants[1].gmacs) / median(variants[0].gmacs),
                  median(variants[3].gmacs) / median(variants[2].gmacs));
    }
  }
  return 0;
}
