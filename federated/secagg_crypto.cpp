#include "federated/secagg_crypto.h"

#include <sodium.h>

#include <cstring>

#include "core/util/error.h"

namespace fedsplit::secagg {
namespace {

void ensure_sodium() {
  static const int ready = sodium_init();
  if (ready < 0) throw Error("libsodium failed to initialise (sodium_init)");
}

}  // namespace

KeyPair generate_key_pair() {
  ensure_sodium();
  KeyPair k;
  crypto_box_keypair(k.public_key.data(), k.secret_key.data());
  return k;
}

Key random_key() {
  ensure_sodium();
  Key k;
  randombytes_buf(k.data(), k.size());
  return k;
}

Key public_key_of(const Key& secret) {
  ensure_sodium();
  Key k;
  crypto_scalarmult_base(k.data(), secret.data());
  return k;
}

Key agree(const Key& my_secret, const Key& their_public, uint64_t context) {
  ensure_sodium();
  static_assert(crypto_scalarmult_BYTES == 32 && crypto_box_PUBLICKEYBYTES == 32, "X25519 sizes");
  Key shared;
  if (crypto_scalarmult(shared.data(), my_secret.data(), their_public.data()) != 0)
    throw DataError("secure aggregation: a peer's public key is a low-order point");
  const Key mine = public_key_of(my_secret);
  const bool mine_first = std::memcmp(mine.data(), their_public.data(), 32) < 0;
  crypto_generichash_state h;
  crypto_generichash_init(&h, nullptr, 0, 32);
  crypto_generichash_update(&h, shared.data(), shared.size());
  crypto_generichash_update(&h, (mine_first ? mine : their_public).data(), 32);
  crypto_generichash_update(&h, (mine_first ? their_public : mine).data(), 32);
  uint8_t ctx[8];
  for (int i = 0; i < 8; ++i) ctx[i] = static_cast<uint8_t>(context >> (8 * i));
  crypto_generichash_update(&h, ctx, sizeof ctx);
  Key seed;
  crypto_generichash_final(&h, seed.data(), seed.size());
  sodium_memzero(shared.data(), shared.size());
  return seed;
}

void add_mask(std::vector<uint32_t>& vector, const Key& seed, int sign) {
  ensure_sodium();
  // The keystream in blocks of 16 KiB, continuing ChaCha20's block counter, so memory stays flat.
  constexpr size_t kWords = 4096;
  static_assert(kWords * 4 % 64 == 0, "whole ChaCha20 blocks per chunk");
  uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  std::array<uint8_t, kWords * 4> zeros{}, stream{};
  for (size_t begin = 0; begin < vector.size(); begin += kWords) {
    const size_t n = std::min(kWords, vector.size() - begin);
    crypto_stream_chacha20_ietf_xor_ic(stream.data(), zeros.data(), n * 4, nonce,
                                       static_cast<uint32_t>(begin * 4 / 64), seed.data());
    uint32_t* out = vector.data() + begin;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t m = static_cast<uint32_t>(stream[4 * i]) | static_cast<uint32_t>(stream[4 * i + 1]) << 8 |
                         static_cast<uint32_t>(stream[4 * i + 2]) << 16 | static_cast<uint32_t>(stream[4 * i + 3]) << 24;
      out[i] = sign > 0 ? out[i] + m : out[i] - m;
    }
  }
}

std::string seal(const std::string& plain, const Key& their_public, const Key& my_secret) {
  ensure_sodium();
  std::string out(crypto_box_NONCEBYTES + crypto_box_MACBYTES + plain.size(), '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  randombytes_buf(bytes, crypto_box_NONCEBYTES);
  if (crypto_box_easy(bytes + crypto_box_NONCEBYTES, reinterpret_cast<const unsigned char*>(plain.data()), plain.size(),
                      bytes, their_public.data(), my_secret.data()) != 0)
    throw DataError("secure aggregation: cannot encrypt a share for a peer with a low-order public key");
  return out;
}

std::optional<std::string> open(const std::string& sealed, const Key& their_public, const Key& my_secret) {
  ensure_sodium();
  if (sealed.size() < crypto_box_NONCEBYTES + crypto_box_MACBYTES) return std::nullopt;
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  std::string plain(sealed.size() - crypto_box_NONCEBYTES - crypto_box_MACBYTES, '\0');
  if (crypto_box_open_easy(reinterpret_cast<unsigned char*>(plain.data()), bytes + crypto_box_NONCEBYTES,
                           sealed.size() - crypto_box_NONCEBYTES, bytes, their_public.data(), my_secret.data()) != 0)
    return std::nullopt;
  return plain;
}

}  // namespace fedsplit::secagg
