// Seeded draws that give the same numbers on every platform (the std distributions and std::shuffle
// differ between standard libraries): SplitMix64 for mixing seeds, unbiased bounded draws.
#pragma once
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

}  // namespace fedsplit
