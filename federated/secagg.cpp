#include "federated/secagg.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "core/util/random.h"

namespace fedsplit::secagg {
namespace {

// Wire format: "SA" | kind byte | round id (u64) | fields; integers little-endian. Readers check every
// length against what is left, so a short or altered message is a FormatError, never an overread.
enum Kind : uint8_t { kAdvertise = 1, kKeyList, kShares, kForwarded, kMasked, kSurvivors, kUnmask };

class Writer {
 public:
  Writer(Kind kind, uint64_t round) {
    out_ = "SA";
    out_.push_back(static_cast<char>(kind));
    u64(round);
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void key(const Key& k) { out_.append(reinterpret_cast<const char*>(k.data()), k.size()); }
  void bytes(const std::string& b) {
    u64(b.size());
    out_ += b;
  }
  void share(const Share& s) {
    u64(s.x);
    for (uint64_t y : s.y) u64(y);
  }
  void words(const std::vector<uint32_t>& w) {
    u64(w.size());
    const size_t at = out_.size();
    out_.resize(at + 4 * w.size());
    for (size_t i = 0; i < w.size(); ++i)
      for (int b = 0; b < 4; ++b) out_[at + 4 * i + b] = static_cast<char>(w[i] >> (8 * b));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(const std::string& in, Kind kind, uint64_t round, const char* what) : in_(in), what_(what) {
    if (in.size() < 11 || in.compare(0, 2, "SA") != 0 || static_cast<uint8_t>(in[2]) != kind)
      throw FormatError(std::string("secure aggregation: not a ") + what + " message");
    pos_ = 3;
    if (u64() != round) throw FormatError(std::string("secure aggregation: a ") + what + " message of another round");
  }
  uint64_t u64() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(in_[pos_ + i])} << (8 * i);
    pos_ += 8;
    return v;
  }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  // A count of items of at least `item_bytes` each: bounded by what is left, so a forged count cannot
  // make the reader reserve memory the message does not hold.
  size_t count(size_t item_bytes) {
    const uint64_t n = u64();
    if (n > (in_.size() - pos_) / std::max<size_t>(item_bytes, 1)) fail();
    return static_cast<size_t>(n);
  }
  Key key() {
    need(32);
    Key k;
    std::memcpy(k.data(), in_.data() + pos_, 32);
    pos_ += 32;
    return k;
  }
  std::string bytes() {
    const size_t n = count(1);
    std::string b = in_.substr(pos_, n);
    pos_ += n;
    return b;
  }
  Share share() {
    Share s;
    s.x = u64();
    for (auto& y : s.y) y = u64();
    return s;
  }
  std::vector<uint32_t> words() {
    const size_t n = count(4);
    std::vector<uint32_t> w(n);
    for (size_t i = 0; i < n; ++i)
      for (int b = 0; b < 4; ++b) w[i] |= uint32_t{static_cast<uint8_t>(in_[pos_ + 4 * i + b])} << (8 * b);
    pos_ += 4 * n;
    return w;
  }
  void finish() const {
    if (pos_ != in_.size()) fail();
  }

 private:
  void need(size_t n) const {
    if (in_.size() - pos_ < n) fail();
  }
  [[noreturn]] void fail() const { throw FormatError(std::string("secure aggregation: a malformed ") + what_ + " message"); }
  const std::string& in_;
  const char* what_;
  size_t pos_ = 0;
};

constexpr size_t kShareBytes = 8 * (1 + kLimbs);

int sign(int64_t me, int64_t peer) { return me < peer ? 1 : -1; }
uint64_t point(int64_t client) { return static_cast<uint64_t>(client) + 1; }  // Shamir x of a holder

}  // namespace

Round::Round(RoundSetup setup) : setup_(std::move(setup)) {
  const auto& c = setup_.clients;
  if (c.size() < 2) throw ConfigError("secure aggregation needs at least 2 clients in a round (got " + std::to_string(c.size()) + ")");
  for (size_t i = 0; i < c.size(); ++i)
    if (c[i] < 0 || (i && c[i] <= c[i - 1])) throw ConfigError("secure aggregation: the round's clients must be distinct, ascending and >= 0");
  if (!(setup_.threshold >= 0 && setup_.threshold < 1)) throw ConfigError("secure.threshold must be in [0, 1)");
  if (setup_.neighbours < 0) throw ConfigError("secure.neighbours must be >= 0");
  if (setup_.vector_size < 1) throw ConfigError("secure aggregation: empty input vectors");
  const auto n = static_cast<int64_t>(c.size());
  if (setup_.neighbours == 0 || setup_.neighbours >= n - 1) {
    for (int64_t u : c) {
      auto& list = graph_[u];
      for (int64_t v : c)
        if (v != u) list.push_back(v);
    }
    return;
  }
  // SecAgg+: a public seeded cycle, each client joined to the k/2 nearest on either side (k rounded up to even).
  std::vector<int64_t> cycle = c;
  std::mt19937_64 rng(splitmix64(setup_.graph_seed ^ setup_.round_id));
  for (size_t i = cycle.size(); i > 1; --i) std::swap(cycle[i - 1], cycle[uniform_below(rng, i)]);
  const int64_t half = (setup_.neighbours + 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    std::set<int64_t> near;
    for (int64_t d = 1; d <= half; ++d) {
      near.insert(cycle[static_cast<size_t>((i + d) % n)]);
      near.insert(cycle[static_cast<size_t>((i - d + n) % n)]);
    }
    near.erase(cycle[static_cast<size_t>(i)]);
    graph_[cycle[static_cast<size_t>(i)]].assign(near.begin(), near.end());
  }
}

const std::vector<int64_t>& Round::neighbours(int64_t client) const {
  const auto it = graph_.find(client);
  if (it == graph_.end()) throw DataError("secure aggregation: client " + std::to_string(client) + " is not in this round");
  return it->second;
}

bool Round::are_neighbours(int64_t u, int64_t v) const {
  const auto& list = neighbours(u);
  return std::binary_search(list.begin(), list.end(), v);
}

int64_t Round::threshold(int64_t client) const {
  const auto degree = static_cast<int64_t>(neighbours(client).size());
  return std::min(degree, static_cast<int64_t>(std::floor(setup_.threshold * static_cast<double>(degree))) + 1);
}

// ---- client ----

Client::Client(std::shared_ptr<const Round> round, int64_t id) : round_(std::move(round)), id_(id) {
  round_->neighbours(id_);  // checks membership
}

std::string Client::advertise() {
  c_ = generate_key_pair();
  s_ = generate_key_pair();
  Writer w(kAdvertise, round_->setup().round_id);
  w.i64(id_);
  w.key(c_.public_key);
  w.key(s_.public_key);
  return w.take();
}

std::string Client::share_keys(const std::string& key_list) {
  const uint64_t round = round_->setup().round_id;
  Reader r(key_list, kKeyList, round, "key list");
  for (size_t i = 0, n = r.count(72); i < n; ++i) {
    const int64_t v = r.i64();
    const Key c = r.key(), s = r.key();
    if (v != id_ && round_->are_neighbours(id_, v)) peer_keys_[v] = {c, s};
  }
  r.finish();
  std::vector<int64_t> holders;
  for (const auto& [v, keys] : peer_keys_) holders.push_back(v);
  const int64_t t = round_->threshold(id_);
  if (static_cast<int64_t>(holders.size()) < t)
    throw SecAggAbort("secure aggregation: client " + std::to_string(id_) + " has " + std::to_string(holders.size()) +
                      " neighbours left, fewer than the threshold " + std::to_string(t));
  std::vector<uint64_t> xs;
  for (int64_t v : holders) xs.push_back(point(v));
  self_seed_ = random_key();
  const auto key_shares = split_secret(s_.secret_key, t, xs);
  const auto seed_shares = split_secret(self_seed_, t, xs);
  Writer w(kShares, round);
  w.i64(id_);
  w.u64(holders.size());
  for (size_t h = 0; h < holders.size(); ++h) {
    // Sender, recipient and round go inside the sealed box: the server cannot redirect a share.
    Writer plain(kShares, round);
    plain.i64(id_);
    plain.i64(holders[h]);
    plain.share(key_shares[h]);
    plain.share(seed_shares[h]);
    w.i64(holders[h]);
    w.bytes(seal(plain.take(), peer_keys_.at(holders[h]).first, c_.secret_key));
  }
  return w.take();
}

std::string Client::masked_input(const std::string& forwarded, std::vector<uint32_t> input) {
  const uint64_t round = round_->setup().round_id;
  if (static_cast<int64_t>(input.size()) != round_->setup().vector_size)
    throw DataError("secure aggregation: client " + std::to_string(id_) + "'s input has " + std::to_string(input.size()) +
                    " elements, the round expects " + std::to_string(round_->setup().vector_size));
  Reader r(forwarded, kForwarded, round, "forwarded shares");
  if (r.i64() != id_) throw FormatError("secure aggregation: shares forwarded to the wrong client");
  for (size_t i = 0, n = r.count(16); i < n; ++i) {
    const int64_t v = r.i64();
    const std::string sealed = r.bytes();
    const auto keys = peer_keys_.find(v);
    if (keys == peer_keys_.end()) throw FormatError("secure aggregation: a share from client " + std::to_string(v) + ", no neighbour");
    const auto plain = open(sealed, keys->second.first, c_.secret_key);
    if (!plain) throw FormatError("secure aggregation: client " + std::to_string(v) + "'s share does not open");
    Reader p(*plain, kShares, round, "share");
    if (p.i64() != v || p.i64() != id_) throw FormatError("secure aggregation: a share with the wrong sender or recipient");
    const Share key_share = p.share(), seed_share = p.share();
    p.finish();
    held_[v] = {key_share, seed_share};
  }
  r.finish();
  add_mask(input, self_seed_, 1);
  for (const auto& [v, shares] : held_) add_mask(input, agree(s_.secret_key, peer_keys_.at(v).second, round), sign(id_, v));
  Writer w(kMasked, round);
  w.i64(id_);
  w.words(input);
  return w.take();
}

std::string Client::unmask(const std::string& survivors) {
  const uint64_t round = round_->setup().round_id;
  Reader r(survivors, kSurvivors, round, "survivors");
  std::set<int64_t> alive;
  for (size_t i = 0, n = r.count(8); i < n; ++i) alive.insert(r.i64());
  r.finish();
  if (!alive.count(id_)) throw SecAggAbort("secure aggregation: client " + std::to_string(id_) + " is not among the survivors: it reveals nothing");
  int64_t alive_neighbours = 0;
  for (int64_t v : round_->neighbours(id_)) alive_neighbours += alive.count(v);
  const int64_t t = round_->threshold(id_);
  if (alive_neighbours < t)
    throw SecAggAbort("secure aggregation: client " + std::to_string(id_) + " sees " + std::to_string(alive_neighbours) +
                      " surviving neighbours, fewer than the threshold " + std::to_string(t) + ": it reveals nothing");
  Writer w(kUnmask, round);
  w.i64(id_);
  w.u64(held_.size());
  for (const auto& [v, shares] : held_) {
    const bool survived = alive.count(v) > 0;
    w.i64(v);
    w.u64(survived ? 1 : 0);  // 1: v's self-mask seed; 0: v's mask key (never both)
    w.share(survived ? shares.second : shares.first);
  }
  return w.take();
}

// ---- server ----

Server::Server(std::shared_ptr<const Round> round) : round_(std::move(round)) {}

void Server::receive_advertise(const std::string& message) {
  if (stage_ != 0) throw DataError("secure aggregation: keys arrived after the key list was sent");
  Reader r(message, kAdvertise, round_->setup().round_id, "advertise");
  const int64_t u = r.i64();
  const Key c = r.key(), s = r.key();
  r.finish();
  round_->neighbours(u);
  if (!keys_.emplace(u, std::make_pair(c, s)).second) throw DataError("secure aggregation: client " + std::to_string(u) + " advertised twice");
  u1_.insert(u);
}

std::string Server::key_list() {
  stage_ = 1;
  Writer w(kKeyList, round_->setup().round_id);
  w.u64(keys_.size());
  for (const auto& [u, k] : keys_) {
    w.i64(u);
    w.key(k.first);
    w.key(k.second);
  }
  return w.take();
}

void Server::receive_shares(const std::string& message) {
  if (stage_ != 1) throw DataError("secure aggregation: shares arrived out of turn");
  Reader r(message, kShares, round_->setup().round_id, "shares");
  const int64_t u = r.i64();
  if (!u1_.count(u) || u2_.count(u)) throw DataError("secure aggregation: shares from client " + std::to_string(u) + ", which did not advertise or sent twice");
  std::map<int64_t, std::string> sealed;
  for (size_t i = 0, n = r.count(16); i < n; ++i) {
    const int64_t v = r.i64();
    std::string box = r.bytes();
    if (!u1_.count(v) || !round_->are_neighbours(u, v) || !sealed.emplace(v, std::move(box)).second)
      throw DataError("secure aggregation: client " + std::to_string(u) + " sent a share for " + std::to_string(v) + ", no neighbour");
  }
  r.finish();
  for (auto& [v, box] : sealed) sealed_for_[v][u] = std::move(box);
  u2_.insert(u);
}

std::map<int64_t, std::string> Server::forwarded_shares() {
  stage_ = 2;
  std::map<int64_t, std::string> out;
  for (int64_t v : u2_) {
    Writer w(kForwarded, round_->setup().round_id);
    w.i64(v);
    std::vector<std::pair<int64_t, const std::string*>> from;
    for (const auto& [u, box] : sealed_for_[v])
      if (u2_.count(u)) from.emplace_back(u, &box);
    w.u64(from.size());
    for (const auto& [u, box] : from) {
      w.i64(u);
      w.bytes(*box);
    }
    out[v] = w.take();
  }
  sealed_for_.clear();
  return out;
}

void Server::receive_masked_input(const std::string& message) {
  if (stage_ != 2) throw DataError("secure aggregation: a masked input arrived out of turn");
  Reader r(message, kMasked, round_->setup().round_id, "masked input");
  const int64_t u = r.i64();
  if (!u2_.count(u) || u3_.count(u)) throw DataError("secure aggregation: a masked input from client " + std::to_string(u) + ", which shared no keys or sent twice");
  std::vector<uint32_t> y = r.words();
  r.finish();
  if (static_cast<int64_t>(y.size()) != round_->setup().vector_size)
    throw DataError("secure aggregation: client " + std::to_string(u) + "'s masked input has " + std::to_string(y.size()) + " elements");
  if (masked_sum_.empty()) masked_sum_.assign(y.size(), 0);
  for (size_t i = 0; i < y.size(); ++i) masked_sum_[i] += y[i];
  u3_.insert(u);
}

std::string Server::survivors() {
  stage_ = 3;
  Writer w(kSurvivors, round_->setup().round_id);
  w.u64(u3_.size());
  for (int64_t u : u3_) w.i64(u);
  return w.take();
}

void Server::receive_unmask(const std::string& message) {
  if (stage_ != 3) throw DataError("secure aggregation: unmasking shares arrived out of turn");
  Reader r(message, kUnmask, round_->setup().round_id, "unmask");
  const int64_t u = r.i64();
  if (!u3_.count(u) || u4_.count(u)) throw DataError("secure aggregation: unmasking shares from client " + std::to_string(u) + ", no survivor or sent twice");
  std::vector<std::tuple<int64_t, bool, Share>> revealed;
  for (size_t i = 0, n = r.count(16 + kShareBytes); i < n; ++i) {
    const int64_t v = r.i64();
    const bool seed = r.u64() == 1;
    const Share s = r.share();
    // A share of the wrong secret (a survivor's mask key, a dropped client's self seed) is refused:
    // with both, the server could strip one client's masks.
    if (!u2_.count(v) || seed != (u3_.count(v) > 0) || s.x != point(u) || !round_->are_neighbours(u, v))
      throw DataError("secure aggregation: client " + std::to_string(u) + " revealed a share it should not hold");
    revealed.emplace_back(v, seed, s);
  }
  r.finish();
  for (const auto& [v, seed, s] : revealed) (seed ? self_seed_shares_ : mask_key_shares_)[v].push_back(s);
  u4_.insert(u);
}

std::vector<uint32_t> Server::unmasked_sum() {
  stage_ = 4;
  const uint64_t round = round_->setup().round_id;
  auto rebuild = [&](int64_t v, std::map<int64_t, std::vector<Share>>& shares, const char* what) {
    const int64_t t = round_->threshold(v);
    const auto& have = shares[v];
    if (static_cast<int64_t>(have.size()) < t)
      throw SecAggAbort("secure aggregation aborted: " + std::to_string(have.size()) + " shares of client " + std::to_string(v) +
                        "'s " + what + ", the threshold is " + std::to_string(t) + "; nothing was revealed");
    return combine_shares(have, t);
  };
  // Every secret is rebuilt before any mask is removed: an abort reveals nothing.
  std::map<int64_t, Key> seeds, mask_keys;
  for (int64_t u : u3_) seeds[u] = rebuild(u, self_seed_shares_, "self-mask seed");
  for (int64_t v : u2_)
    if (!u3_.count(v)) mask_keys[v] = rebuild(v, mask_key_shares_, "mask key");
  std::vector<uint32_t> sum = std::move(masked_sum_);
  sum.resize(static_cast<size_t>(round_->setup().vector_size), 0);
  for (const auto& [u, seed] : seeds) add_mask(sum, seed, -1);
  for (const auto& [v, key] : mask_keys) {
    if (public_key_of(key) != keys_.at(v).second)
      throw SecAggAbort("secure aggregation aborted: client " + std::to_string(v) + "'s rebuilt mask key does not match its public key");
    for (int64_t w : round_->neighbours(v))
      if (u3_.count(w)) add_mask(sum, agree(key, keys_.at(w).second, round), -sign(w, v));
  }
  return sum;
}

}  // namespace fedsplit::secagg
