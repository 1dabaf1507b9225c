// Cost of one secure-aggregation round against plain aggregation of the same updates, as the number of
// clients grows. Every client holds an update of --size fp32 values (default 124,000: the FedLoRA update
// of recipes/fedlora-sotu.ini, 496,879 bytes). Per configuration it prints:
//   plain    bytes a client uploads (the update message) and the server's time to decode and average them
//   secure   bytes up and down of a client whose input is in the sum (keys, sealed shares, masked
//            input, unmasking shares; mean over them), a client's compute (encoding, key agreement, sharing, masking; mean over clients), the
//            server's compute (routing, summing, rebuilding secrets, removing masks)
// for the complete graph (Bonawitz et al.) and SecAgg+ (k neighbours), without and with dropouts (a
// share of the clients vanishing before their masked input, so the server also removes their masks).
// Everything runs in this process on one thread; clients are simulated one after another.
// Usage: bench_secagg [--clients 10,100,1000] [--size N] [--dropout 0.1] [--complete-max 100]
#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "federated/aggregator.h"
#include "federated/fixed_point.h"
#include "core/comm/message.h"
#include "federated/secagg.h"

using namespace fedsplit;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

torch::Tensor update_of(int64_t client, int64_t size) {
  torch::manual_seed(static_cast<uint64_t>(client));
  return 0.01 * torch::randn({size});
}

struct Cost {
  double client_s = 0, server_s = 0;
  double up = 0, down = 0;  // bytes of a client whose input is in the sum (mean over them)
  int64_t survivors = 0;
};

Cost plain_round(int64_t n, int64_t size) {
  Cost c;
  std::vector<std::string> messages;
  auto t0 = Clock::now();
  for (int64_t i = 0; i < n; ++i) {
    Message m;
    m.meta = {{"client", i}, {"samples", 100}};
    m.tensors["w"] = update_of(i, size);
    messages.push_back(encode_message(m));
    c.up += static_cast<double>(messages.back().size());
  }
  c.client_s = seconds_since(t0) / static_cast<double>(n);
  t0 = Clock::now();
  WeightedMean mean;
  for (int64_t i = 0; i < n; ++i) mean.add(decode_message(messages[static_cast<size_t>(i)], "bench").tensors, {i, 100.0});
  mean.finalize();
  c.server_s = seconds_since(t0);
  c.up /= static_cast<double>(n);
  c.survivors = n;
  return c;
}

Cost secure_round(int64_t n, int64_t size, int64_t neighbours, double dropout) {
  secagg::RoundSetup setup;
  setup.round_id = 1;
  for (int64_t i = 0; i < n; ++i) setup.clients.push_back(i);
  setup.neighbours = neighbours;
  setup.threshold = 0.5;
  const UpdateEncoding encoding({{"w", {size}}}, 1.0, 1.0);
  setup.vector_size = encoding.size();
  auto round = std::make_shared<const secagg::Round>(setup);
  std::set<int64_t> dropped;
  std::mt19937_64 rng(7);
  while (static_cast<double>(dropped.size()) < std::round(dropout * static_cast<double>(n))) dropped.insert(static_cast<int64_t>(rng() % n));

  Cost c;
  double client_s = 0, server_s = 0;
  std::map<int64_t, double> up, down;
  std::map<int64_t, secagg::Client> clients;
  secagg::Server server(round);
  auto timed = [](double& acc, auto&& fn) {
    const auto t0 = Clock::now();
    auto out = fn();
    acc += seconds_since(t0);
    return out;
  };
  for (int64_t i = 0; i < n; ++i) {
    clients.emplace(i, secagg::Client(round, i));
    const std::string m = timed(client_s, [&] { return clients.at(i).advertise(); });
    up[i] += static_cast<double>(m.size());
    timed(server_s, [&] { server.receive_advertise(m); return 0; });
  }
  const std::string keys = timed(server_s, [&] { return server.key_list(); });
  for (auto& [i, client] : clients) {
    const std::string m = timed(client_s, [&] { return client.share_keys(keys); });
    up[i] += static_cast<double>(m.size());
    down[i] += static_cast<double>(keys.size());
    timed(server_s, [&] { server.receive_shares(m); return 0; });
  }
  const auto forwarded = timed(server_s, [&] { return server.forwarded_shares(); });
  for (const auto& [i, f] : forwarded) {
    down[i] += static_cast<double>(f.size());
    if (dropped.count(i)) continue;
    const std::string m = timed(client_s, [&] {
      const double weight = 1.0 / static_cast<double>(n);
      return clients.at(i).masked_input(f, encoding.encode({{"w", update_of(i, size)}}, weight, 3.0));
    });
    up[i] += static_cast<double>(m.size());
    timed(server_s, [&] { server.receive_masked_input(m); return 0; });
  }
  const std::string alive = timed(server_s, [&] { return server.survivors(); });
  for (int64_t i : server.masked()) {
    const std::string m = timed(client_s, [&] { return clients.at(i).unmask(alive); });
    up[i] += static_cast<double>(m.size());
    down[i] += static_cast<double>(alive.size());
    timed(server_s, [&] { server.receive_unmask(m); return 0; });
  }
  const auto sum = timed(server_s, [&] { return encoding.decode(server.unmasked_sum()); });
  // Check the result against the plain mean of the survivors' updates (the bench must not report a wrong round).
  torch::Tensor expect = torch::zeros({size}, torch::kFloat64);
  for (int64_t i : server.masked()) expect += update_of(i, size).to(torch::kFloat64) / static_cast<double>(n);
  const double error = (sum.values.at("w").to(torch::kFloat64) - expect).abs().max().item<double>();
  if (error > 1e-6) throw std::runtime_error("secure sum off by " + std::to_string(error));
  c.survivors = static_cast<int64_t>(server.masked().size());
  for (int64_t i : server.masked()) c.up += up[i] / static_cast<double>(c.survivors), c.down += down[i] / static_cast<double>(c.survivors);
  c.client_s = client_s / static_cast<double>(n);
  c.server_s = server_s;
  return c;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoll(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> counts{10, 100, 1000};
  int64_t size = 124000, complete_max = 100;
  double dropout = 0.1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--clients") counts = parse_list(v);
    else if (k == "--size") size = std::stoll(v);
    else if (k == "--dropout") dropout = std::stod(v);
    else if (k == "--complete-max") complete_max = std::stoll(v);
    else {
      std::cerr << "bench_secagg: unknown flag " << k << " (--clients, --size, --dropout, --complete-max)\n";
      return 2;
    }
  }
  torch::set_num_threads(1);
  std::cout << "secure aggregation vs plain, " << size << " values per update, one thread\n";
  std::cout << std::left << std::setw(8) << "clients" << std::setw(15) << "graph" << std::setw(9) << "dropout" << std::right
            << std::setw(12) << "up B/client" << std::setw(10) << "x plain" << std::setw(14) << "down B/client"
            << std::setw(13) << "client s" << std::setw(12) << "server s" << std::setw(11) << "x plain\n";
  std::cout << std::fixed;
  for (int64_t n : counts) {
    const Cost plain = plain_round(n, size);
    auto line = [&](const std::string& graph, double drop, const Cost& c, const Cost* base) {
      std::cout << std::left << std::setw(8) << n << std::setw(15) << graph << std::setw(9) << std::setprecision(2) << drop
                << std::right << std::setw(12) << std::setprecision(0) << c.up << std::setw(10) << std::setprecision(3)
                << (base ? c.up / base->up : 1.0) << std::setw(14) << std::setprecision(0) << c.down << std::setw(13)
                << std::setprecision(4) << c.client_s << std::setw(12) << c.server_s << std::setw(10) << std::setprecision(2)
                << (base ? c.server_s / base->server_s : 1.0) << "\n"
                << std::flush;
    };
    line("plain", 0, plain, nullptr);
    const auto k = static_cast<int64_t>(2 * std::ceil(std::log2(static_cast<double>(n))));
    std::vector<std::pair<std::string, int64_t>> graphs;
    if (n <= complete_max) graphs.emplace_back("complete", 0);
    if (k < n - 1) graphs.emplace_back("secagg+ k=" + std::to_string(k), k);
    for (const auto& [graph, neighbours] : graphs)
      for (double drop : {0.0, dropout}) line(graph, drop, secure_round(n, size, neighbours, drop), &plain);
  }
  return 0;
}
