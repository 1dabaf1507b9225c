// Secure aggregation: the server learns the sum of the clients' vectors over Z_2^32 and nothing about
// any single one (Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine
// Learning", its honest-but-curious variant), with the sparse neighbour graph of SecAgg+ (Bell et al.
// 2020) as an option. Messages are byte strings, so the same code runs in one process or across ranks.
//
// One round, for the clients U sampled in it (each step keeps the clients that answered):
//   1. advertise      client u makes two X25519 key pairs (c: to encrypt shares, s: to agree masks) and
//                     sends their public keys                                      -> U1
//   2. share keys     the server sends U1's keys to all; u draws a self-mask seed b_u and sends its
//                     neighbours (in U1) Shamir shares of s_sk_u and b_u, each sealed to the holder -> U2
//   3. masked input   the server forwards each client the shares addressed to it; u sends
//                     y_u = x_u + PRG(b_u) + sum_{v in N(u) ∩ U2} ±PRG(agree(s_sk_u, s_pk_v))  (+ if u < v)
//                                                                                  -> U3 (the survivors)
//   4. unmask         the server names U3; u reveals, for each neighbour v in U2, its share of b_v if v
//                     survived and of s_sk_v if v dropped (never both)             -> U4
// The server then rebuilds b_u for u in U3 and s_sk_v for v in U2 \ U3 from t shares each, removes the
// self masks and the dropped clients' pairwise masks, and holds sum_{u in U3} x_u exactly. If some
// secret has fewer than t shares, or a client sees fewer than t of its neighbours survive, the round
// aborts (SecAggAbort) and nothing is revealed.
// Neighbours: every other sampled client (complete graph, Bonawitz), or k of them (SecAgg+: clients on a
// cycle in a public seeded order, each joined to its k/2 nearest on either side). Threshold of a client
// with d neighbours: t = min(d, floor(threshold · d) + 1) (threshold 0.5: a strict majority).
// Not covered: the actively malicious server of the paper's Sec. 4 (consistency round, signatures, a PKI).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/util/error.h"
#include "federated/secagg_crypto.h"
#include "federated/shamir.h"

namespace fedsplit::secagg {

/// The protocol stopped without revealing anything (too many clients dropped).
struct SecAggAbort : Error {
  using Error::Error;
};

/// What everyone knows about a round before it starts.
struct RoundSetup {
  uint64_t round_id = 0;          ///< binds keys, masks and shares to one attempt of one round
  std::vector<int64_t> clients;   ///< the sampled clients, ascending (at least 2)
  int64_t neighbours = 0;         ///< k of SecAgg+; 0 (or >= clients - 1) = every other client
  double threshold = 0.5;         ///< share of a client's neighbours needed to rebuild its secrets, in [0, 1)
  int64_t vector_size = 0;        ///< ring elements per input
  uint64_t graph_seed = 0;        ///< orders SecAgg+'s cycle (public)
};

/// A RoundSetup checked once, with its neighbour graph.
class Round {
 public:
  /// Throws ConfigError for fewer than 2 clients, unsorted or repeated clients, or values out of range.
  explicit Round(RoundSetup setup);
  const RoundSetup& setup() const { return setup_; }
  /// u's neighbours, ascending. Throws DataError for a client not in the round.
  const std::vector<int64_t>& neighbours(int64_t client) const;
  bool are_neighbours(int64_t u, int64_t v) const;
  /// Shares needed to rebuild `client`'s secrets.
  int64_t threshold(int64_t client) const;

 private:
  RoundSetup setup_;
  std::map<int64_t, std::vector<int64_t>> graph_;
};

/// One client's side of a round. Each step takes the server's last message and returns the client's
/// reply; a message that is not well-formed or not for this round throws FormatError.
class Client {
 public:
  Client(std::shared_ptr<const Round> round, int64_t id);
  std::string advertise();
  std::string share_keys(const std::string& key_list);
  /// `input`: setup().vector_size elements. Throws DataError for another size.
  std::string masked_input(const std::string& forwarded_shares, std::vector<uint32_t> input);
  /// Throws SecAggAbort when it is not among the survivors or fewer than threshold(id) of its neighbours are.
  std::string unmask(const std::string& survivors);

 private:
  std::shared_ptr<const Round> round_;
  int64_t id_;
  KeyPair c_, s_;
  Key self_seed_{};
  std::map<int64_t, std::pair<Key, Key>> peer_keys_;  // U1: client -> (c_pk, s_pk)
  std::map<int64_t, std::pair<Share, Share>> held_;   // neighbour v in U2 -> my shares of (s_sk_v, b_v)
};

/// The server's side. receive_* take one client's message (FormatError/DataError for a bad one: the
/// caller leaves that client out); the other calls close a step and produce what the clients get next.
class Server {
 public:
  explicit Server(std::shared_ptr<const Round> round);
  void receive_advertise(const std::string& message);
  std::string key_list();
  void receive_shares(const std::string& message);
  /// Per client of U2, the shares addressed to it.
  std::map<int64_t, std::string> forwarded_shares();
  void receive_masked_input(const std::string& message);
  std::string survivors();
  void receive_unmask(const std::string& message);
  /// sum_{u in U3} x_u mod 2^32. Throws SecAggAbort when a secret it needs has fewer than t shares.
  std::vector<uint32_t> unmasked_sum();

  const std::set<int64_t>& advertised() const { return u1_; }
  const std::set<int64_t>& shared() const { return u2_; }
  const std::set<int64_t>& masked() const { return u3_; }
  const std::set<int64_t>& unmasked() const { return u4_; }

 private:
  std::shared_ptr<const Round> round_;
  std::map<int64_t, std::pair<Key, Key>> keys_;                     // U1: (c_pk, s_pk)
  std::map<int64_t, std::map<int64_t, std::string>> sealed_for_;    // recipient -> sender -> sealed shares
  std::vector<uint32_t> masked_sum_;                                // sum of U3's y_u
  std::map<int64_t, std::vector<Share>> self_seed_shares_, mask_key_shares_;  // owner -> revealed shares
  std::set<int64_t> u1_, u2_, u3_, u4_;
  int stage_ = 0;
};

}  // namespace fedsplit::secagg
