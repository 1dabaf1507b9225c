#include "federated/shamir.h"

#include <sodium.h>

#include <set>
#include <string>

#include "core/util/error.h"

namespace fedsplit::secagg {
namespace {

constexpr uint64_t kPrime = (uint64_t{1} << 61) - 1;  // a Mersenne prime: reduction is a shift and an add
constexpr int kLimbBytes = 7;

uint64_t reduce(unsigned __int128 x) {
  uint64_t r = static_cast<uint64_t>(x & kPrime) + static_cast<uint64_t>(x >> 61);
  r = (r & kPrime) + (r >> 61);
  return r == kPrime ? 0 : r;
}
uint64_t mul(uint64_t a, uint64_t b) { return reduce(static_cast<unsigned __int128>(a) * b); }
uint64_t add(uint64_t a, uint64_t b) { return reduce(static_cast<unsigned __int128>(a) + b); }
uint64_t sub(uint64_t a, uint64_t b) { return add(a, kPrime - b); }
uint64_t power(uint64_t base, uint64_t e) {
  uint64_t r = 1;
  for (; e; e >>= 1, base = mul(base, base))
    if (e & 1) r = mul(r, base);
  return r;
}
uint64_t inverse(uint64_t a) { return power(a, kPrime - 2); }  // Fermat: a^(p-2) = a^-1 for a != 0

// A uniform field element: 61 random bits, redrawn in the rare case they are >= p.
uint64_t random_element() {
  while (true) {
    uint64_t v;
    randombytes_buf(&v, sizeof v);
    v &= kPrime;
    if (v < kPrime) return v;
  }
}

std::array<uint64_t, kLimbs> limbs_of(const Key& secret) {
  std::array<uint64_t, kLimbs> out{};
  for (size_t i = 0; i < secret.size(); ++i) out[i / kLimbBytes] |= uint64_t{secret[i]} << (8 * (i % kLimbBytes));
  return out;
}

}  // namespace

std::vector<Share> split_secret(const Key& secret, int64_t threshold, const std::vector<uint64_t>& xs) {
  if (threshold < 1 || threshold > static_cast<int64_t>(xs.size()))
    throw ConfigError("secret sharing: threshold " + std::to_string(threshold) + " needs 1 to " +
                      std::to_string(xs.size()) + " holders");
  std::set<uint64_t> seen;
  for (uint64_t x : xs)
    if (x == 0 || x >= kPrime || !seen.insert(x).second)
      throw ConfigError("secret sharing: holder point " + std::to_string(x) + " is zero, too large or repeated");
  const auto secret_limbs = limbs_of(secret);
  std::vector<Share> shares(xs.size());
  for (size_t h = 0; h < xs.size(); ++h) shares[h].x = xs[h];
  std::vector<uint64_t> coefficients(static_cast<size_t>(threshold));
  for (int limb = 0; limb < kLimbs; ++limb) {
    coefficients[0] = secret_limbs[static_cast<size_t>(limb)];
    for (size_t k = 1; k < coefficients.size(); ++k) coefficients[k] = random_element();
    for (auto& share : shares) {
      uint64_t y = 0;  // Horner's rule from the highest coefficient
      for (size_t k = coefficients.size(); k-- > 0;) y = add(mul(y, share.x), coefficients[k]);
      share.y[static_cast<size_t>(limb)] = y;
    }
    sodium_memzero(coefficients.data(), coefficients.size() * sizeof(uint64_t));
  }
  return shares;
}

Key combine_shares(const std::vector<Share>& shares, int64_t threshold) {
  if (threshold < 1 || static_cast<int64_t>(shares.size()) < threshold)
    throw DataError("secret sharing: " + std::to_string(shares.size()) + " shares, fewer than the threshold " +
                    std::to_string(threshold));
  const auto t = static_cast<size_t>(threshold);
  std::set<uint64_t> seen;
  for (size_t i = 0; i < t; ++i)
    if (shares[i].x == 0 || shares[i].x >= kPrime || !seen.insert(shares[i].x).second)
      throw DataError("secret sharing: share point " + std::to_string(shares[i].x) + " is invalid or repeated");
  // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i).
  std::array<uint64_t, kLimbs> limbs{};
  for (size_t i = 0; i < t; ++i) {
    uint64_t num = 1, den = 1;
    for (size_t j = 0; j < t; ++j) {
      if (j == i) continue;
      num = mul(num, shares[j].x);
      den = mul(den, sub(shares[j].x, shares[i].x));
    }
    const uint64_t basis = mul(num, inverse(den));
    for (int limb = 0; limb < kLimbs; ++limb)
      limbs[static_cast<size_t>(limb)] = add(limbs[static_cast<size_t>(limb)], mul(basis, shares[i].y[static_cast<size_t>(limb)]));
  }
  Key secret{};
  for (int limb = 0; limb < kLimbs; ++limb) {
    const int bytes = limb + 1 < kLimbs ? kLimbBytes : static_cast<int>(secret.size()) - kLimbBytes * (kLimbs - 1);
    if (limbs[static_cast<size_t>(limb)] >> (8 * bytes))
      throw DataError("secret sharing: the shares do not belong together (a wrong or altered share)");
    for (int b = 0; b < bytes; ++b)
      secret[static_cast<size_t>(limb * kLimbBytes + b)] = static_cast<uint8_t>(limbs[static_cast<size_t>(limb)] >> (8 * b));
  }
  return secret;
}

}  // namespace fedsplit::secagg
