// The cryptographic primitives of secure aggregation, every one of them libsodium's (nothing here is
// hand-rolled): X25519 key pairs, key agreement hashed with BLAKE2b into a pairwise seed, the ChaCha20
// stream cipher as the pseudorandom generator that expands a seed into a mask over Z_2^32, and
// crypto_box (X25519, XSalsa20-Poly1305) for the secret shares that travel through the server.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fedsplit::secagg {

using Key = std::array<uint8_t, 32>;

struct KeyPair {
  Key public_key{};
  Key secret_key{};
};

/// A fresh X25519 key pair from libsodium's CSPRNG.
KeyPair generate_key_pair();

/// 32 bytes from libsodium's CSPRNG (a self-mask seed).
Key random_key();

/// The X25519 public key of `secret`.
Key public_key_of(const Key& secret);

/// The seed two parties share: BLAKE2b-256 over X25519(my_secret, their_public), both public keys (in
/// a fixed order, so both ends hash the same bytes) and `context` (the round), keyed by nothing else.
/// Throws DataError when their public key is a low-order point (the shared secret would be all zeros).
Key agree(const Key& my_secret, const Key& their_public, uint64_t context);

/// Adds sign · PRG(seed) to `vector` element-wise modulo 2^32, where PRG(seed) is the ChaCha20 (IETF)
/// keystream under key `seed` and a zero nonce, read as little-endian uint32. `sign` is +1 or -1.
void add_mask(std::vector<uint32_t>& vector, const Key& seed, int sign);

/// `plain` encrypted and authenticated from the owner of `my_secret` to the owner of `their_public`:
/// a random 24-byte nonce followed by crypto_box_easy's output (16 bytes longer than `plain`).
std::string seal(const std::string& plain, const Key& their_public, const Key& my_secret);

/// The plaintext of seal()'s output, or nothing when it was not sealed between these two keys or was
/// altered.
std::optional<std::string> open(const std::string& sealed, const Key& their_public, const Key& my_secret);

}  // namespace fedsplit::secagg
