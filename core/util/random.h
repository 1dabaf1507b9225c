// Seeded draws that give the same numbers on every platform (the std distributions and std::shuffle
// differ between standard libraries): SplitMix64 for mixing seeds, unbiased bounded draws.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>

namespace fedsplit {

/// SplitMix64's finaliser: a well-mixed 64-bit value for `x` (combine seeds as splitmix64(a ^ b)).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Unbiased draw from [0, bound): rejects the values that would favour small results.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  while (true) {
    const uint64_t x = rng();
    if (x >= threshold) return x % bound;
  }
}

/// N(0, 1) draws by Box–Muller from 53-bit uniforms of a mt19937_64 seeded with splitmix64(seed); keeps the
/// second draw of each pair.
class SeededNormal {
 public:
  explicit SeededNormal(uint64_t seed) : rng_(splitmix64(seed)) {}
  double operator()() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - static_cast<double>(rng_() >> 11) * 0x1p-53;  // (0, 1]: log(u1) is finite
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)), theta = 2.0 * M_PI * u2;
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return r * std::cos(theta);
  }

 private:
  std::mt19937_64 rng_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace fedsplit
