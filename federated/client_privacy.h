// The server's ledger of local DP-SGD: which client has taken how many DP-SGD steps at which sampling
// rate q and noise multiplier σ, and what that costs each client in (ε, δ) by the RDP accountant.
//
// A step of client i draws a batch of B of its N_i training windows, so q_i = B / N_i. Batches come
// from shuffled passes over the data (each window once per epoch), not from Poisson sampling; treating
// them as Poisson-sampled at rate B / N_i is the usual approximation (Opacus and TF Privacy make it too).
//
// Checkpoint JSON: {"clients": {"<client index>": [{"q": q, "sigma": σ, "steps": n}, ...]}}, one entry
// per distinct (q, σ) the client used, steps summed. It holds no infinities (σ = 0 is stored as 0).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace fedsplit {

class ClientPrivacyLedger {
 public:
  /// Records `steps` DP-SGD steps of `client` at sampling rate q in (0, 1] and noise multiplier σ >= 0
  /// (DataError otherwise).
  void charge(int64_t client, double q, double sigma, int64_t steps);
  /// Reads an update's meta "dp_sgd" ({"q", "sigma", "steps"}) and charges `client`; returns "" or why
  /// the entry is missing or malformed (nothing is charged then).
  std::string charge_update(int64_t client, const nlohmann::json& meta);

  /// DP-SGD steps `client` has taken (0 for a client never charged).
  int64_t steps(int64_t client) const;
  /// ε at δ of `client`'s steps (0 before any; +inf with σ = 0).
  double epsilon(int64_t client, double delta) const;
  /// (client, ε) of the client with the largest ε at δ; (-1, 0) while the ledger is empty.
  std::pair<int64_t, double> max_epsilon(double delta) const;
  bool empty() const { return charges_.empty(); }

  nlohmann::json to_json() const;
  /// DataError for anything but what to_json writes.
  static ClientPrivacyLedger from_json(const nlohmann::json& json);

 private:
  struct Charge {
    double q, sigma;
    int64_t steps;
  };
  std::map<int64_t, std::vector<Charge>> charges_;
  // ε per client at cached_delta_: computing RDP for every client each round would cost a few ms each.
  mutable std::map<int64_t, double> cache_;
  mutable double cached_delta_ = -1;
};

}  // namespace fedsplit
