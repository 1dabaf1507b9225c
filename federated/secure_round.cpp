#include "federated/secure_round.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>

#include "core/comm/link_model.h"
#include "core/comm/world.h"
#include "core/config/recipe.h"
#include "core/util/error.h"
#include "core/util/log.h"
#include "core/util/random.h"
#include "federated/client_host.h"
#include "federated/dp.h"
#include "federated/dp_aggregator.h"
#include "core/comm/message.h"
#include "federated/sampling.h"
#include "federated/secagg.h"

namespace fedsplit {
namespace {

const std::vector<std::string> kStages{"advertise", "share", "masked", "unmask"};

// A rank's bundle: a count, then each string with its length (little-endian u64s).
std::string pack(const std::vector<std::string>& items) {
  std::string out;
  auto u64 = [&out](uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  };
  u64(items.size());
  for (const auto& s : items) u64(s.size()), out += s;
  return out;
}

std::vector<std::string> unpack(const std::string& in, const std::string& from) {
  size_t pos = 0;
  auto u64 = [&]() {
    if (in.size() - pos < 8) throw FormatError("secure aggregation: a truncated bundle from " + from);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(in[pos + i])} << (8 * i);
    pos += 8;
    return v;
  };
  const uint64_t n = u64();
  if (n > in.size() / 8) throw FormatError("secure aggregation: a malformed bundle from " + from);
  std::vector<std::string> out;
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t len = u64();
    if (len > in.size() - pos) throw FormatError("secure aggregation: a truncated bundle from " + from);
    out.push_back(in.substr(pos, len));
    pos += len;
  }
  return out;
}

// Every rank's strings at rank 0 (a world of one: its own), in rank order.
std::vector<std::string> gather(World& world, const std::vector<std::string>& mine) {
  if (world.rank() != 0) {
    world.send_bytes(pack(mine), 0);
    return {};
  }
  std::vector<std::string> all = mine;
  for (int r = 1; r < world.size(); ++r)
    for (auto& s : unpack(world.recv_bytes(r), "rank " + std::to_string(r))) all.push_back(std::move(s));
  return all;
}

// The client id that opens every client message and every forwarded bundle (after the secagg header:
// "SA", kind, round id).
int64_t client_of(const std::string& message) {
  if (message.size() < 19) throw FormatError("secure aggregation: a message too short to name its client");
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(message[11 + i])} << (8 * i);
  return static_cast<int64_t>(v);
}

// The clients that fail to send from `stage` on (simulation), seeded by the round.
std::set<int64_t> dropouts(const SecureOptions& s, const std::vector<int64_t>& sample, uint64_t seed, int64_t round,
                           int64_t attempt) {
  const auto n = static_cast<int64_t>(sample.size());
  const auto k = static_cast<int64_t>(std::llround(s.dropout_fraction * static_cast<double>(n)));
  std::set<int64_t> out;
  if (k == 0) return out;
  for (int64_t i : sample_clients(n, k, splitmix64(seed ^ 0xD809u), round, attempt)) out.insert(sample[static_cast<size_t>(i)]);
  return out;
}

// What a client masks: its update minus the round's model; under distributed DP clipped to C and with
// its share of the noise, N(0, (σC)²/min_clients), so that the sum of at least min_clients shares
// has std >= σC.
TensorMap client_delta(const TensorMap& update, const TensorMap& global, const SecureRoundContext& cx, int64_t client,
                       int64_t noise_round) {
  TensorMap delta;
  for (const auto& [name, t] : update) delta[name] = t.to(torch::kFloat64) - global.at(name).to(torch::kFloat64);
  if (cx.privacy.dp == "distributed") {
    clip_update(delta, cx.privacy.clip);
    add_gaussian_noise(delta, cx.privacy.noise_multiplier / std::sqrt(static_cast<double>(cx.min_clients)), cx.privacy.clip,
                       client_seed(cx.seed ^ 0xD15Full, noise_round, client));
  }
  return delta;
}

// One hosted client's state across the four steps.
struct HostedClient {
  int64_t id;
  std::unique_ptr<secagg::Client> protocol;
  std::vector<uint32_t> input;
};

}  // namespace

void bind_secure_options(Recipe& r, SecureOptions& o) {
  r.add_choice("secure.aggregation", &o.aggregation, {"none", "secagg"},
               "secure aggregation: the server learns only the sum of the client updates (secagg)");
  r.add("secure.neighbours", &o.neighbours, "SecAgg+ neighbours per client (0: every other client, as in Bonawitz et al.)", 0, 1 << 20);
  r.add("secure.threshold", &o.threshold, "share of a client's neighbours needed to rebuild its secrets (0.5: a majority)", 0.0, 0.999);
  r.add("secure.range", &o.range, "largest |value| of a client's update delta; larger ones are clamped", 1e-9, 1e9);
  r.add("secure.dropout_fraction", &o.dropout_fraction, "simulation: share of the sampled clients that drop mid-round", 0.0, 1.0);
  r.add_choice("secure.dropout_stage", &o.dropout_stage, kStages, "the step the simulated dropouts fail to send");
}

void check_secure_options(const SecureOptions& secure, const PrivacyOptions& privacy, const std::string& robust_rule,
                          const std::string& lora) {
  if (secure.aggregation == "none") {
    if (privacy.dp == "distributed")
      throw ConfigError("privacy.dp = distributed adds the noise on the clients, which needs secure.aggregation = secagg "
                        "(without it, use privacy.dp = central)");
    return;
  }
  if (robust_rule != "none")
    throw ConfigError("robust.rule = " + robust_rule + " needs every client's update, which secure.aggregation hides: choose one");
  if (privacy.dp == "central")
    throw ConfigError("privacy.dp = central clips updates the server cannot see under secure.aggregation: use privacy.dp = distributed");
  if (lora != "fedavg" && lora != "ffa")
    throw ConfigError("secure.aggregation sums updates of one shape: use federated.lora_aggregation = fedavg or ffa (got " + lora + ")");
  if (privacy.dp == "distributed" && privacy.adaptive_clip)
    throw ConfigError("privacy.adaptive_clip needs the server to count clipped updates, which privacy.dp = distributed hides: set it to false");
}

double secure_sum_bound(const SecureOptions& secure, const PrivacyOptions& privacy, int64_t per_round) {
  return privacy.dp == "distributed" ? secure.range * static_cast<double>(per_round) : secure.range;
}

std::optional<SecureOutcome> run_secure_round(World& world, UpdateSource& host, const SecureRoundContext& cx,
                                              const std::vector<int64_t>& sample, int64_t round, int64_t attempt) {
  const bool serving = world.rank() == 0;
  const bool distributed_dp = cx.privacy.dp == "distributed";
  secagg::RoundSetup setup;
  setup.round_id = splitmix64(cx.seed ^ splitmix64(static_cast<uint64_t>(round) * 1000003 + static_cast<uint64_t>(attempt)));
  setup.clients = sample;
  setup.neighbours = cx.secure.neighbours;
  setup.threshold = cx.secure.threshold;
  setup.vector_size = cx.encoding.size();
  setup.graph_seed = cx.seed;
  auto protocol_round = std::make_shared<const secagg::Round>(setup);
  const std::set<int64_t> dropping = dropouts(cx.secure, sample, cx.seed, round, attempt);
  auto drops_at = [&](int64_t c, const std::string& stage) {
    if (!dropping.count(c)) return false;
    const auto at = std::find(kStages.begin(), kStages.end(), cx.secure.dropout_stage);
    return std::find(kStages.begin(), kStages.end(), stage) >= at;
  };

  // The clients this rank hosts train, then encode their deltas.
  double sample_weight = 0;
  for (int64_t c : sample) sample_weight += static_cast<double>(cx.roster.samples[static_cast<size_t>(c)]);
  std::vector<HostedClient> hosted;
  std::vector<std::string> bundle;
  for (int64_t c : sample) {
    if (host_rank(c, world.size()) != world.rank()) continue;
    const Message update = decode_message(host.train_client(c), "client " + cx.roster.names[static_cast<size_t>(c)]);
    nlohmann::json note{{"client", c}, {"status", update.meta.value("status", "")}, {"reason", update.meta.value("reason", "")},
                        {"tokens", update.meta.value("tokens", 0.0)}, {"wall_s", update.meta.value("wall_s", 0.0)},
                        {"dp_sgd", update.meta.value("dp_sgd", nlohmann::json())}};
    std::string advertise;
    if (note["status"] == "ok" && !drops_at(c, "advertise")) {
      try {
        // FedAvg weight n_c / (samples of the round's sample); under distributed DP every client counts 1.
        const double weight =
            distributed_dp ? 1.0 : static_cast<double>(cx.roster.samples[static_cast<size_t>(c)]) / sample_weight;
        const TensorMap delta = client_delta(update.tensors, host.round_global(), cx, c, round * 64 + attempt);
        HostedClient p{c, std::make_unique<secagg::Client>(protocol_round, c),
                       cx.encoding.encode(delta, weight, update.meta.value("loss", 0.0))};
        advertise = p.protocol->advertise();
        hosted.push_back(std::move(p));
      } catch (const DataError& e) {
        note["status"] = "failed";
        note["reason"] = e.what();
      }
    } else if (note["status"] == "ok") {
      note["status"] = "dropped";
    }
    bundle.push_back(pack({note.dump(), advertise}));
  }

  SecureOutcome out;
  std::unique_ptr<secagg::Server> server;
  std::set<int64_t> seen;  // clients that sent a note
  auto exclude = [&](int64_t c, const std::string& why) { out.excluded.emplace_back(c, why); };
  auto charge = [&](int64_t c, const std::string& message, bool up) {
    auto& cost = out.costs[c];
    (up ? cost.bytes_up : cost.bytes_down) += static_cast<int64_t>(message.size());
  };
  std::optional<LinkClass> link;
  if (!cx.link.empty()) link = parse_link("client", cx.link, "network.link");

  // 1. advertise
  const auto notes = gather(world, bundle);
  if (serving) {
    server = std::make_unique<secagg::Server>(protocol_round);
    for (const auto& entry : notes) {
      const auto parts = unpack(entry, "a client note");
      if (parts.size() != 2) throw FormatError("secure aggregation: a malformed client note");
      const auto note = nlohmann::json::parse(parts[0]);
      const int64_t c = note.at("client").get<int64_t>();
      seen.insert(c);
      out.costs[c].tokens = note.value("tokens", 0.0);
      out.costs[c].wall_s = note.value("wall_s", 0.0);
      if (note.value("status", "") == "ok") out.costs[c].dp_sgd = note.value("dp_sgd", nlohmann::json());
      const std::string status = note.value("status", "");
      if (status == "ok") {
        charge(c, parts[1], true);
        try {
          server->receive_advertise(parts[1]);
        } catch (const Error& e) {
          exclude(c, e.what());
        }
      } else if (status == "silent") {
        exclude(c, "sent no update before the deadline");
      } else if (status == "dropped") {
        exclude(c, "dropped out before advertising its keys");
      } else {
        exclude(c, note.value("reason", "its training failed"));
      }
    }
  }

  // 2. share keys
  std::string keys = serving ? server->key_list() : std::string();
  world.broadcast_bytes(keys, 0);
  bundle.clear();
  for (auto& p : hosted) {
    if (drops_at(p.id, "share")) continue;
    try {
      bundle.push_back(p.protocol->share_keys(keys));
    } catch (const secagg::SecAggAbort& e) {
      log_warn(e.what());
    }
  }
  for (const auto& m : gather(world, bundle)) {
    const int64_t c = client_of(m);
    charge(c, m, true);
    try {
      server->receive_shares(m);
    } catch (const Error& e) {
      exclude(c, e.what());
    }
  }

  // 3. masked input: rank 0 forwards each client its shares, one bundle per rank.
  std::map<int64_t, std::string> forwarded;
  if (serving) {
    for (int64_t c : server->advertised()) charge(c, keys, false);
    auto all = server->forwarded_shares();
    for (int r = 1; r < world.size(); ++r) {
      std::vector<std::string> for_rank;
      for (const auto& [c, m] : all)
        if (host_rank(c, world.size()) == r) for_rank.push_back(m);
      world.send_bytes(pack(for_rank), r);
    }
    for (const auto& [c, m] : all) {
      charge(c, m, false);
      if (host_rank(c, world.size()) == 0) forwarded[c] = m;
    }
  } else {
    for (auto& m : unpack(world.recv_bytes(0), "rank 0")) forwarded[client_of(m)] = m;
  }
  bundle.clear();
  for (auto& p : hosted) {
    const auto it = forwarded.find(p.id);
    if (it == forwarded.end() || drops_at(p.id, "masked")) continue;
    bundle.push_back(p.protocol->masked_input(it->second, std::move(p.input)));
  }
  for (const auto& m : gather(world, bundle)) {
    const int64_t c = client_of(m);
    charge(c, m, true);
    const auto i = static_cast<size_t>(c);
    const auto& cost = out.costs[c];
    const double sim_s = cost.tokens / cx.roster.speeds[i] + exchange_seconds(link, cost.bytes_down, cost.bytes_up, 3);
    if (cx.deadline_s > 0 && sim_s > cx.deadline_s) {  // late: treated as a dropout, its masks are removed
      exclude(c, "late: needed " + std::to_string(sim_s) + " simulated s, deadline " + std::to_string(cx.deadline_s) + " s");
      continue;
    }
    try {
      server->receive_masked_input(m);
    } catch (const Error& e) {
      exclude(c, e.what());
    }
  }

  // 4. unmask; with fewer survivors than min_clients the list goes out empty and no client reveals anything.
  std::string alive;
  if (serving) {
    const auto n = static_cast<int64_t>(server->masked().size());
    if (n < cx.min_clients)
      out.aborted = std::to_string(n) + " masked inputs, fewer than federated.min_clients = " + std::to_string(cx.min_clients) +
                    ": the round was aborted before unmasking";
    alive = server->survivors();
    if (!out.aborted.empty()) alive = secagg::Server(protocol_round).survivors();
  }
  world.broadcast_bytes(alive, 0);
  bundle.clear();
  for (auto& p : hosted) {
    if (drops_at(p.id, "unmask") || !forwarded.count(p.id) || drops_at(p.id, "masked")) continue;
    try {
      bundle.push_back(p.protocol->unmask(alive));
    } catch (const secagg::SecAggAbort&) {
      // Left out, or too few survivors: the client reveals nothing (rank 0 reports the round).
    }
  }
  const auto answers = gather(world, bundle);
  if (!serving) return std::nullopt;
  for (int64_t c : server->masked()) charge(c, alive, false);
  for (const auto& m : answers) {
    const int64_t c = client_of(m);
    charge(c, m, true);
    try {
      server->receive_unmask(m);
    } catch (const Error& e) {
      log_warn("round ", round + 1, ": client ", cx.roster.names[static_cast<size_t>(c)], "'s unmasking shares refused: ", e.what());
    }
  }
  if (out.aborted.empty()) {
    try {
      out.sum = cx.encoding.decode(server->unmasked_sum());
    } catch (const secagg::SecAggAbort& e) {
      out.aborted = e.what();
    }
  }

  // Who is in the sum, and why the others are not.
  const auto& u1 = server->advertised();
  const auto& u2 = server->shared();
  const auto& u3 = server->masked();
  std::set<int64_t> excluded;
  for (const auto& [c, why] : out.excluded) excluded.insert(c);
  for (int64_t c : sample) {
    if (excluded.count(c) || u3.count(c)) continue;
    if (!seen.count(c)) exclude(c, "sent nothing");
    else if (!u1.count(c)) exclude(c, "its keys were refused");
    else if (!u2.count(c)) exclude(c, "dropped out before sharing its keys");
    else exclude(c, "dropped out (or was late) before its masked input: its masks were removed with its neighbours' shares");
  }
  if (out.aborted.empty()) out.survivors.assign(u3.begin(), u3.end());
  out.stages = {{"sampled", sample.size()}, {"advertised", u1.size()}, {"shared", u2.size()},
                {"masked", u3.size()}, {"unmasked", server->unmasked().size()}};
  return out;
}

}  // namespace fedsplit
