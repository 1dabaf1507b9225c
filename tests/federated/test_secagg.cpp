// labels: unit
// Secure aggregation (federated/secagg.h) and its primitives: Shamir sharing (any t of n shares rebuild
// the secret; fewer are refused), libsodium's key agreement, sealing and ChaCha20 masks; the protocol
// gives the exact sum of the survivors (mod 2^32, so exact means bit-equal) for every allowed set of
// dropouts, complete graph and SecAgg+; too few survivors abort without revealing; a client's masked
// input looks uniform and uncorrelated with its input.
#include <gtest/gtest.h>
#include <sodium.h>

#include <cmath>
#include <random>
#include <set>

#include "federated/secagg.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::secagg;
using namespace fedsplit::testing;

namespace {

Key counting_key(uint8_t start) {
  Key k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(start + i);
  return k;
}

std::vector<uint32_t> random_words(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> w(n);
  for (auto& x : w) x = static_cast<uint32_t>(rng());
  return w;
}

// Where clients drop out: before advertising, before sharing keys, before the masked input, before unmasking.
struct Drops {
  std::set<int64_t> advertise, share, masked, unmask;
};

// Runs one protocol round in process and returns the unmasked sum (throws what the protocol throws).
std::vector<uint32_t> run_round(const RoundSetup& setup, const std::map<int64_t, std::vector<uint32_t>>& inputs,
                                const Drops& drops, Server** server_out = nullptr) {
  auto round = std::make_shared<const Round>(setup);
  static std::unique_ptr<Server> server;
  server = std::make_unique<Server>(round);
  if (server_out) *server_out = server.get();
  std::map<int64_t, Client> clients;
  for (int64_t c : setup.clients) clients.emplace(c, Client(round, c));
  for (auto& [c, client] : clients)
    if (!drops.advertise.count(c)) server->receive_advertise(client.advertise());
  const std::string keys = server->key_list();
  for (auto& [c, client] : clients)
    if (!drops.advertise.count(c) && !drops.share.count(c)) server->receive_shares(client.share_keys(keys));
  for (const auto& [c, forwarded] : server->forwarded_shares())
    if (!drops.masked.count(c)) server->receive_masked_input(clients.at(c).masked_input(forwarded, inputs.at(c)));
  const std::string alive = server->survivors();
  for (int64_t c : server->masked())
    if (!drops.unmask.count(c)) server->receive_unmask(clients.at(c).unmask(alive));
  return server->unmasked_sum();
}

std::vector<uint32_t> sum_of(const std::map<int64_t, std::vector<uint32_t>>& inputs, const std::set<int64_t>& who) {
  std::vector<uint32_t> s(inputs.begin()->second.size(), 0);
  for (int64_t c : who)
    for (size_t i = 0; i < s.size(); ++i) s[i] += inputs.at(c)[i];
  return s;
}

RoundSetup setup_of(int64_t n, int64_t neighbours, int64_t size, double threshold = 0.5) {
  RoundSetup s;
  s.round_id = 42;
  for (int64_t c = 0; c < n; ++c) s.clients.push_back(3 * c + 1);  // client ids need not be 0..n-1
  s.neighbours = neighbours;
  s.threshold = threshold;
  s.vector_size = size;
  s.graph_seed = 9;
  return s;
}

std::map<int64_t, std::vector<uint32_t>> inputs_for(const RoundSetup& s) {
  std::map<int64_t, std::vector<uint32_t>> in;
  for (int64_t c : s.clients) in[c] = random_words(static_cast<size_t>(s.vector_size), 100 + static_cast<uint64_t>(c));
  return in;
}

}  // namespace

TEST(Shamir, AnyThresholdSubsetRebuildsTheSecret) {
  const Key secret = counting_key(200);  // bytes wrap past 255: every limb bit pattern is exercised
  const std::vector<uint64_t> xs{1, 2, 5, 9, 1000, (uint64_t{1} << 61) - 2};
  const auto shares = split_secret(secret, 3, xs);
  for (size_t a = 0; a < xs.size(); ++a)
    for (size_t b = a + 1; b < xs.size(); ++b)
      for (size_t c = b + 1; c < xs.size(); ++c) EXPECT_EQ(combine_shares({shares[a], shares[c], shares[b]}, 3), secret);
  expect_error<DataError>([&] { combine_shares({shares[0], shares[1]}, 3); }, {"fewer than the threshold 3"});
  expect_error<DataError>([&] { combine_shares({shares[0], shares[0], shares[1]}, 3); }, {"repeated"});
  // Two shares interpolated as if they were enough give something else (the secret needs a third):
  // almost always a value no 32-byte secret maps to, which is refused.
  try {
    EXPECT_NE(combine_shares({shares[0], shares[1]}, 2), secret) << "t-1 shares must not pin down the secret";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("do not belong together"), std::string::npos);
  }
  expect_error<ConfigError>([&] { split_secret(secret, 7, xs); }, {"threshold 7"});
  expect_error<ConfigError>([&] { split_secret(secret, 2, {1, 1}); }, {"repeated"});
}

TEST(Shamir, FewerThanThresholdSharesAreIndependentOfTheSecret) {
  // With t = 2, one share's values are uniform whatever the secret: the low bit of every limb is a fair coin.
  int ones_a = 0, ones_b = 0, draws = 0;
  for (int i = 0; i < 400; ++i) {
    const Share a = split_secret(counting_key(0), 2, {1, 2})[0], b = split_secret(counting_key(77), 2, {1, 2})[0];
    for (int limb = 0; limb < kLimbs; ++limb, ++draws) ones_a += a.y[limb] & 1, ones_b += b.y[limb] & 1;
  }
  // 2000 fair coins: 1000 ± 4.5 sigma (sigma 22.4).
  EXPECT_NEAR(ones_a, draws / 2, 100);
  EXPECT_NEAR(ones_b, draws / 2, 100);
}

TEST(SecAggCrypto, AgreementIsSymmetricAndBoundToTheRound) {
  const KeyPair a = generate_key_pair(), b = generate_key_pair();
  EXPECT_EQ(agree(a.secret_key, b.public_key, 7), agree(b.secret_key, a.public_key, 7));
  EXPECT_NE(agree(a.secret_key, b.public_key, 7), agree(a.secret_key, b.public_key, 8));
  EXPECT_EQ(public_key_of(a.secret_key), a.public_key);
  expect_error<DataError>([&] { agree(a.secret_key, Key{}, 7); }, {"low-order"});
}

TEST(SecAggCrypto, SealedSharesOpenOnlyBetweenTheirTwoKeys) {
  const KeyPair a = generate_key_pair(), b = generate_key_pair(), c = generate_key_pair();
  const std::string sealed = seal("share bytes", b.public_key, a.secret_key);
  EXPECT_EQ(open(sealed, a.public_key, b.secret_key).value(), "share bytes");
  EXPECT_FALSE(open(sealed, a.public_key, c.secret_key)) << "a third party cannot open it";
  std::string altered = sealed;
  altered.back() ^= 1;
  EXPECT_FALSE(open(altered, a.public_key, b.secret_key)) << "tampering is detected";
  EXPECT_FALSE(open("short", a.public_key, b.secret_key));
}

TEST(SecAggCrypto, MaskIsTheChaCha20KeystreamAcrossChunks) {
  const Key seed = counting_key(1);
  std::vector<uint32_t> mask(10000, 0);  // longer than one 4096-word chunk
  add_mask(mask, seed, 1);
  std::vector<uint8_t> stream(mask.size() * 4);
  const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {};
  crypto_stream_chacha20_ietf(stream.data(), stream.size(), nonce, seed.data());
  for (size_t i = 0; i < mask.size(); ++i) {
    const uint32_t want = stream[4 * i] | stream[4 * i + 1] << 8 | stream[4 * i + 2] << 16 | static_cast<uint32_t>(stream[4 * i + 3]) << 24;
    ASSERT_EQ(mask[i], want) << "word " << i;
  }
  add_mask(mask, seed, -1);
  EXPECT_EQ(mask, std::vector<uint32_t>(mask.size(), 0));
}

TEST(SecAgg, NoDropoutsGiveTheExactSum) {
  const RoundSetup s = setup_of(5, 0, 3000);
  const auto in = inputs_for(s);
  EXPECT_EQ(run_round(s, in, {}), sum_of(in, {s.clients.begin(), s.clients.end()}));
}

TEST(SecAgg, EveryAllowedSurvivorSetGivesTheExactSum) {
  // 6 clients, complete graph: each has 5 neighbours and threshold 3. Every set of up to 2 clients
  // dropping before their masked input (and, separately, before unmasking) leaves an exact sum.
  const RoundSetup s = setup_of(6, 0, 257);
  const auto in = inputs_for(s);
  const std::vector<int64_t>& c = s.clients;
  int cases = 0;
  for (size_t mask = 0; mask < (1u << c.size()); ++mask) {
    std::set<int64_t> dropped, alive;
    for (size_t i = 0; i < c.size(); ++i) (mask >> i & 1 ? dropped : alive).insert(c[i]);
    if (dropped.size() > 2) continue;
    Drops before_input;
    before_input.masked = dropped;
    EXPECT_EQ(run_round(s, in, before_input), sum_of(in, alive)) << "dropped before the masked input: mask " << mask;
    Drops before_unmask;
    before_unmask.unmask = dropped;  // their inputs count: their self masks are rebuilt from the others' shares
    EXPECT_EQ(run_round(s, in, before_unmask), sum_of(in, {c.begin(), c.end()})) << "dropped before unmasking: mask " << mask;
    ++cases;
  }
  EXPECT_EQ(cases, 1 + 6 + 15);
}

TEST(SecAgg, ClientsDroppingBeforeSharingAreSimplyLeftOut) {
  const RoundSetup s = setup_of(6, 0, 64);
  const auto in = inputs_for(s);
  Drops d;
  d.advertise = {s.clients[0]};
  d.share = {s.clients[1]};
  EXPECT_EQ(run_round(s, in, d), sum_of(in, {s.clients.begin() + 2, s.clients.end()}));
}

TEST(SecAgg, SecAggPlusWithThirtyPercentDropoutsGivesTheSurvivorsSum) {
  // Threshold 0.4: t = 5 of 12 neighbours, so that 30% random dropouts leave every survivor enough.
  const RoundSetup s = setup_of(40, 12, 1000, 0.4);
  const Round round(s);
  for (int64_t c : s.clients) {
    EXPECT_GE(round.neighbours(c).size(), 12u);
    EXPECT_LE(round.neighbours(c).size(), 13u);
    for (int64_t v : round.neighbours(c)) EXPECT_TRUE(round.are_neighbours(v, c)) << "the graph is symmetric";
  }
  const auto in = inputs_for(s);
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 3; ++trial) {
    std::vector<int64_t> order = s.clients;
    std::shuffle(order.begin(), order.end(), rng);
    Drops d;
    d.masked.insert(order.begin(), order.begin() + 12);  // 30% drop mid-round
    std::set<int64_t> alive(order.begin() + 12, order.end());
    EXPECT_EQ(run_round(s, in, d), sum_of(in, alive)) << "trial " << trial;
  }
}

TEST(SecAgg, TooFewSurvivorsAbortWithoutRevealing) {
  const RoundSetup s = setup_of(6, 0, 32);
  const auto in = inputs_for(s);
  // 3 of 6 drop before their input: each survivor sees 2 surviving neighbours, below its threshold 3.
  Drops d;
  d.masked = {s.clients[0], s.clients[1], s.clients[2]};
  expect_error<SecAggAbort>([&] { run_round(s, in, d); }, {"fewer than the threshold 3", "reveals nothing"});
  // Survivors answer but 4 of 6 vanish before unmasking: 2 shares per secret, below 3: the server aborts.
  Drops late;
  late.unmask = {s.clients[0], s.clients[1], s.clients[2], s.clients[3]};
  expect_error<SecAggAbort>([&] { run_round(s, in, late); }, {"shares of client", "nothing was revealed"});
}

TEST(SecAgg, ShareOfTheWrongSecretIsRefused) {
  // A server that lies about who survived would get mask-key shares of a client whose masked input it
  // holds, and could strip that client's pairwise masks. The honest server refuses such shares; here a
  // second server that missed client 3's input forges the survivors list that client 0 answers.
  const RoundSetup s = setup_of(4, 0, 8);
  auto round = std::make_shared<const Round>(s);
  Server honest(round), forger(round);
  std::vector<Client> clients;
  for (int64_t c : s.clients) clients.emplace_back(round, c);
  for (auto& c : clients) {
    const std::string adv = c.advertise();
    honest.receive_advertise(adv), forger.receive_advertise(adv);
  }
  const auto keys = honest.key_list();
  forger.key_list();
  for (auto& c : clients) {
    const std::string shares = c.share_keys(keys);
    honest.receive_shares(shares), forger.receive_shares(shares);
  }
  const auto fwd = honest.forwarded_shares();
  forger.forwarded_shares();
  const std::vector<uint32_t> zeros(8, 0);
  for (size_t i = 0; i < clients.size(); ++i) {
    const std::string y = clients[i].masked_input(fwd.at(s.clients[i]), zeros);
    honest.receive_masked_input(y);
    if (i < 3) forger.receive_masked_input(y);
  }
  honest.survivors();
  const std::string lie = forger.survivors();
  expect_error<DataError>([&] { honest.receive_unmask(clients[0].unmask(lie)); }, {"revealed a share it should not hold"});
  expect_error<DataError>([&] { honest.receive_advertise(clients[0].advertise()); }, {"after the key list"});
  expect_error<FormatError>([&] { clients[0].unmask("SA\x06" + std::string(8, '\0')); }, {"another round"});
}

TEST(SecAgg, MaskedInputLooksUniformWhateverTheInput) {
  // The server's view of one client's masked input: for an all-zero input and for a structured one,
  // the top bytes are uniform (chi-square, 255 dof, below the p = 0.001 critical value 330.5) and the
  // masked words are uncorrelated with the input (|r| < 4.5 / sqrt(n)).
  const int64_t n = 60000;
  RoundSetup s = setup_of(3, 0, n);
  auto round = std::make_shared<const Round>(s);
  std::vector<uint32_t> structured(n);
  for (int64_t i = 0; i < n; ++i) structured[i] = static_cast<uint32_t>(i * 65537u);
  for (const auto& input : {std::vector<uint32_t>(n, 0), structured}) {
    Server server(round);
    std::vector<Client> clients;
    for (int64_t c : s.clients) clients.emplace_back(round, c);
    for (auto& c : clients) server.receive_advertise(c.advertise());
    const auto keys = server.key_list();
    for (auto& c : clients) server.receive_shares(c.share_keys(keys));
    const auto fwd = server.forwarded_shares();
    const std::string message = clients[0].masked_input(fwd.at(s.clients[0]), input);
    std::vector<uint32_t> y(n);
    std::memcpy(y.data(), message.data() + message.size() - 4 * n, 4 * n);  // the words close the message
    std::vector<double> bins(256, 0);
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    for (int64_t i = 0; i < n; ++i) {
      ++bins[y[i] >> 24];
      const double a = input[i], b = y[i];
      sx += a, sy += b, sxx += a * a, syy += b * b, sxy += a * b;
    }
    double chi2 = 0;
    for (double b : bins) chi2 += (b - n / 256.0) * (b - n / 256.0) / (n / 256.0);
    EXPECT_LT(chi2, 330.5);
    const double var_x = sxx - sx * sx / n, var_y = syy - sy * sy / n;
    if (var_x > 0) {
      EXPECT_LT(std::abs((sxy - sx * sy / n) / std::sqrt(var_x * var_y)), 4.5 / std::sqrt(double(n)));
    }
    EXPECT_NE(y, input);
  }
}

TEST(SecAgg, BadSetupsAndMessagesAreRefused) {
  expect_error<ConfigError>([] { Round r(setup_of(1, 0, 4)); }, {"at least 2 clients"});
  RoundSetup unsorted = setup_of(3, 0, 4);
  std::swap(unsorted.clients[0], unsorted.clients[1]);
  expect_error<ConfigError>([&] { Round r(unsorted); }, {"ascending"});
  auto round = std::make_shared<const Round>(setup_of(3, 0, 4));
  Server server(round);
  Client client(round, round->setup().clients[0]);
  std::string adv = client.advertise();
  expect_error<FormatError>([&] { server.receive_advertise(adv.substr(0, adv.size() - 1)); }, {"malformed advertise"});
  server.receive_advertise(adv);
  expect_error<DataError>([&] { server.receive_advertise(adv); }, {"advertised twice"});
  expect_error<DataError>([&] { Client stranger(round, 999); }, {"client 999 is not in this round"});
}
