// Times quant_matmul at the pretrain-base shapes (rows x cols: 384x384, 1024x384, 384x1024,
// 8192x384) with T activation rows, Q8_0 and Q4_0, on 1 and 2 threads; prints the median GMAC/s
// and the best of `reps` runs (the best is steadier on a shared machine). Torch-free; built as
// build/bench/bench_quant_matmul_bench:
//   [NO_VNNI=1] build/bench/bench_quant_matmul_bench [T = 110] [reps = 9] [max threads = 2]
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

std::vector<uint8_t> random_weights(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = dist(rng);
  return quantize_rows(type, w.data(), rows, cols);
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t T = argc > 1 ? std::atoll(argv[1]) : 110;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 9;
  const int max_threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const int64_t shapes[4][2] = {{384, 384}, {1024, 384}, {384, 1024}, {8192, 384}};
  // NO_VNNI=1 times the plain AVX2 kernels on a CPU that has AVX512-VNNI.
  if (const char* v = std::getenv("NO_VNNI"); v != nullptr && v[0] == '1') quant_detail::force_no_vnni(true);
  std::mt19937 rng(7);
  std::printf("kernel %s%s, T %lld\n", quant_kernel_name(), quant_detail::vnni_in_use() ? " (vnni)" : "", static_cast<long long>(T));
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    for (const auto& s : shapes) {
      const auto bytes = random_weights(type, s[0], s[1], rng);
      const QuantMatrix w{type, bytes.data(), s[0], s[1]};
      std::vector<float> x(static_cast<size_t>(T * s[1]));
      std::normal_distribution<float> dist(0.0f, 1.0f);
      for (float& v : x) v = dist(rng);
      std::vector<float> y(static_cast<size_t>(T * s[0]));
      for (int threads = 1; threads <= max_threads; ++threads) {
        // Enough calls per rep for ~20 ms, so the timer and pool wake-up do not dominate.
        const double macs = static_cast<double>(s[0]) * s[1] * T;
        const int calls = std::max(1, static_cast<int>(4e8 / macs));
        std::vector<double> gmacs;
        quant_matmul(w, x.data(), T, y.data(), threads);
        for (int r = 0; r < reps; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          for (int c = 0; c < calls; ++c) quant_matmul(w, x.data(), T, y.data(), threads);
          const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          gmacs.push_back(macs * calls / sec / 1e9);
        }
        std::sort(gmacs.begin(), gmacs.end());
        std::printf("%s %5lldx%-5lld threads %d: %6.1f GMAC/s median, %6.1f best of %d\n",
                    type == GgmlType::Q8_0 ? "q8_0" : "q4_0", static_cast<long long>(s[0]),
                    static_cast<long long>(s[1]), threads, gmacs[gmacs.size() / 2], gmacs.back(), reps);
      }
    }
  }
  return 0;
}
