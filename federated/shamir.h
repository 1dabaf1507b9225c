// Shamir's t-of-n secret sharing of 32-byte secrets (Shamir 1979), for secure aggregation's dropout
// recovery. The secret is cut into five 7-byte limbs, each the constant term of its own random
// polynomial of degree t-1 over the prime field GF(2^61 - 1); holder x gets the five polynomials' values
// at x. Any t shares give the secret back by Lagrange interpolation at 0; t-1 shares are uniformly
// distributed whatever the secret (the coefficients come from libsodium's CSPRNG).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "federated/secagg_crypto.h"

namespace fedsplit::secagg {

constexpr int kLimbs = 5;  ///< 7-byte limbs of a 32-byte secret

struct Share {
  uint64_t x = 0;                   ///< the holder's evaluation point, 1 .. 2^61 - 2
  std::array<uint64_t, kLimbs> y{};  ///< one field element per limb
};

/// Shares of `secret` for the holders at `xs` (distinct, non-zero, below 2^61 - 1), any `threshold` of
/// which rebuild it. Throws ConfigError when threshold is not in 1..xs.size() or an x is out of range or repeated.
std::vector<Share> split_secret(const Key& secret, int64_t threshold, const std::vector<uint64_t>& xs);

/// The secret from `threshold` or more shares (the first `threshold` are used). Throws DataError when
/// there are fewer, when two have the same x, or when the result is not a secret split_secret could
/// have made (a limb out of range: a wrong or altered share).
Key combine_shares(const std::vector<Share>& shares, int64_t threshold);

}  // namespace fedsplit::secagg
