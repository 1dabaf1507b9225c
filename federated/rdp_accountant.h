// Rényi-DP accounting for the sampled Gaussian mechanism (DP-FedAvg rounds, DP-SGD steps).
//
// One step samples each record (client, example) with probability q (Poisson sampling) and adds
// N(0, σ²) noise to a sum of contributions of L2 norm <= 1 (σ is the noise multiplier). Its RDP at
// order α is ε(α) = log(A_α)/(α−1) with A_α = E_{z~N(0,σ²)}[((1−q) + q·e^{(2z−1)/(2σ²)})^α]
// (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism",
// Sec. 3.3). Steps compose by adding RDP order by order (Mironov 2017, Prop. 1), and the total
// converts to (ε, δ)-DP at the best tracked order.
//
// Conversion (rdp_to_epsilon): ε = min_α [ rdp(α) + log((α−1)/α) − (log δ + log α)/(α−1) ]
// (Balle et al. 2020, "Hypothesis Testing Interpretations and Rényi DP", arXiv:2001.05990 Eq. 20;
// Canonne, Kamath, Steinke 2020, arXiv:2004.00010 Prop. 12), the one Opacus and Google's
// dp_accounting (behind TF Privacy) use today.
// rdp_to_epsilon_classic is the looser ε = min_α rdp(α) + log(1/δ)/(α−1) (Mironov 2017, Prop. 3)
// that older TF Privacy and Opacus releases reported.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace fedsplit {

/// The orders α at which RDP is tracked (Opacus' default list: 1 + x/10 for x in 1..99, then 12..63).
std::vector<double> default_rdp_orders();

/// RDP ε(α) of one step of the sampled Gaussian mechanism with sampling rate q in [0, 1] and noise
/// multiplier σ >= 0, at each order (> 1, +inf allowed). Integer α: the exact binomial sum; fractional
/// α: the two-sided erfc series of Mironov et al. 2019 (Sec. 3.3), summed with its signs to
/// convergence. All in log space. q = 1 gives α/(2σ²), q = 0 gives 0, σ = 0 (q > 0) gives +inf.
/// Throws ConfigError for q, σ or an order out of range.
std::vector<double> sampled_gaussian_rdp(double q, double sigma, const std::vector<double>& orders);

/// (ε, best order) for a total RDP curve at δ in (0, 1), by the Balle et al. 2020 conversion above
/// (ε >= 0; an order whose rdp(α) alone gives (0, δ)-DP through the KL bound δ >= sqrt(1 − e^{−rdp})
/// counts as ε = 0). Throws ConfigError for δ out of range or lists of different lengths.
std::pair<double, double> rdp_to_epsilon(const std::vector<double>& orders, const std::vector<double>& rdp,
                                         double delta);

/// (ε, best order) by the classic conversion ε = rdp(α) + log(1/δ)/(α−1) (Mironov 2017, Prop. 3):
/// looser; for comparing with numbers published before 2020.
std::pair<double, double> rdp_to_epsilon_classic(const std::vector<double>& orders, const std::vector<double>& rdp,
                                                 double delta);

/// Accumulates the RDP of every step of a run (a server's DP-FedAvg rounds, a client's DP-SGD steps).
class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = default_rdp_orders());
  /// Records `steps` steps at sampling rate q and noise multiplier σ (mechanisms compose by adding RDP).
  void step(double q, double sigma, int64_t steps = 1);
  /// ε at δ for everything recorded so far (0 before any step).
  double epsilon(double delta) const;
  /// The tracked orders.
  const std::vector<double>& orders() const { return orders_; }
  /// For checkpoints: the accumulated RDP per order, and restoring it.
  const std::vector<double>& rdp() const { return rdp_; }
  /// Throws DataError when `rdp` has not one value per order.
  void load(std::vector<double> rdp);

 private:
  std::vector<double> orders_;  ///< α values, each > 1
  std::vector<double> rdp_;     ///< accumulated RDP at each order
};

}  // namespace fedsplit
