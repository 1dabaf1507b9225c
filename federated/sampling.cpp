#include "federated/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/util/random.h"

namespace fedsplit {
namespace {

// The first `size` entries of a seeded shuffle of 0..n-1, ascending.
std::vector<int64_t> draw(int64_t n, int64_t size, uint64_t seed) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  size = std::min(size, n);
  for (int64_t i = 0; i < size; ++i) {
    const auto j = i + static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(n - i)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  order.resize(static_cast<size_t>(size));
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace

int64_t sample_size(int64_t clients, double fraction, int64_t count) {
  const int64_t n = count > 0 ? count : static_cast<int64_t>(std::llround(fraction * static_cast<double>(clients)));
  return std::clamp<int64_t>(n, 1, clients);
}

std::vector<int64_t> sample_clients(int64_t clients, int64_t size, uint64_t seed, int64_t round, int64_t attempt) {
  return draw(clients, size, splitmix64(seed ^ splitmix64(static_cast<uint64_t>(round) * 1000003u +
                                                          static_cast<uint64_t>(attempt) + 0x5A3Full)));
}

std::vector<bool> pick_share(int64_t clients, double fraction, uint64_t seed) {
  std::vector<bool> out(static_cast<size_t>(clients), false);
  const auto n = static_cast<int64_t>(std::llround(fraction * static_cast<double>(clients)));
  for (int64_t c : draw(clients, n, splitmix64(seed ^ 0x57A66Eull))) out[static_cast<size_t>(c)] = true;
  return out;
}

int host_rank(int64_t client, int world_size) {
  return world_size <= 1 ? 0 : 1 + static_cast<int>(client % (world_size - 1));
}

uint64_t client_seed(uint64_t seed, int64_t round, int64_t client) {
  return splitmix64(seed ^ splitmix64(static_cast<uint64_t>(round) << 32 ^ static_cast<uint64_t>(client)));
}

}  // namespace fedsplit
