#include "federated/rdp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "core/util/error.h"

namespace fedsplit {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string str(double x) {
  std::ostringstream out;
  out.precision(17);
  out << x;
  return out.str();
}

/// log(e^a + e^b) without overflow.
double log_add(double a, double b) {
  if (a < b) std::swap(a, b);
  if (b == -kInf) return a;
  return a + std::log1p(std::exp(b - a));
}

/// log(½·erfc(x)), also where erfc(x) underflows: the asymptotic series
/// erfc(x) = e^{−x²}/(x√π)·(1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …), relative error < 3e-12 for x >= 20.
double log_half_erfc(double x) {
  if (x < 20) return std::log(0.5 * std::erfc(x));
  const double u = 1 / (x * x);
  const double series = 1 - u / 2 + 3 * u * u / 4 - 15 * u * u * u / 8 + 105 * u * u * u * u / 16;
  return -x * x - std::log(x) - 0.5 * std::log(M_PI) - std::log(2.0) + std::log(series);
}

/// log(e^x − 1) for x > 0.
double log_expm1(double x) { return x > 30 ? x + std::log1p(-std::exp(-x)) : std::log(std::expm1(x)); }

/// log A_α for integer α: A_α = Σ_k C(α,k) (1−q)^{α−k} q^k e^{(k²−k)/(2σ²)}. The binomial weights sum
/// to 1, so A_α − 1 = Σ_{k>=2} C(α,k) (1−q)^{α−k} q^k (e^{(k²−k)/(2σ²)} − 1): summing that (all terms
/// positive) and taking log1p keeps full relative precision as q → 0, where A_α − 1 ~ q².
double log_a_integer(double q, double sigma, int64_t alpha) {
  const double log_q = std::log(q), log_1mq = std::log1p(-q), two_s2 = 2 * sigma * sigma;
  double log_a_minus_1 = -kInf, log_binom = std::log(static_cast<double>(alpha));  // log C(α, 1)
  for (int64_t k = 2; k <= alpha; ++k) {
    log_binom += std::log(static_cast<double>(alpha - k + 1)) - std::log(static_cast<double>(k));
    const double kd = static_cast<double>(k);
    const double term = log_binom + kd * log_q + (alpha - kd) * log_1mq + log_expm1((kd * kd - kd) / two_s2);
    log_a_minus_1 = log_add(log_a_minus_1, term);
  }
  return log_add(0.0, log_a_minus_1);  // log(1 + (A − 1))
}

/// Signed sum kept as separate log-sums of its positive and negative terms.
struct SignedLogSum {
  double pos = -kInf, neg = -kInf;
  void add(bool negative, double log_term) { (negative ? neg : pos) = log_add(negative ? neg : pos, log_term); }
  /// log of the sum; −inf when rounding left it <= 0.
  double value() const { return neg >= pos ? -kInf : pos + std::log1p(-std::exp(neg - pos)); }
};

/// log A_α for fractional α (Mironov, Talwar, Zhang 2019, Sec. 3.3): split the integral at
/// z0 = σ² log(1/q − 1) + ½, where q·e^{(2z−1)/(2σ²)} = 1 − q, and expand (1−q + q·x)^α binomially on
/// each side (in powers of the smaller summand, so both series converge):
///   A0 = Σ_k C(α,k) (1−q)^{α−k} q^k e^{(k²−k)/(2σ²)} · ½erfc((k − z0)/(√2σ))
///   A1 = Σ_k C(α,k) q^{α−k} (1−q)^k e^{(j²−j)/(2σ²)} · ½erfc((z0 − j)/(√2σ)),  j = α − k.
/// C(α,k) alternates in sign once k > α + 1 and the terms then shrink, so the truncation error is below
/// the last term; we stop when both parts' terms are under e^{−36} of the running total (about 1e-16
/// relative), and past kMaxTerms add the last terms' size to stay an upper bound.
double log_a_fractional(double q, double sigma, double alpha) {
  constexpr int kMaxTerms = 20000;
  const double log_q = std::log(q), log_1mq = std::log1p(-q), two_s2 = 2 * sigma * sigma;
  const double z0 = sigma * sigma * (log_1mq - log_q) + 0.5, scale = std::sqrt(2.0) * sigma;
  SignedLogSum a0, a1;
  double log_binom = 0, last0 = kInf, last1 = kInf;  // log|C(α, 0)|
  bool negative = false;
  for (int k = 0; k < kMaxTerms; ++k) {
    if (k > 0) {
      const double factor = alpha - k + 1;
      log_binom += std::log(std::fabs(factor)) - std::log(static_cast<double>(k));
      if (factor < 0) negative = !negative;
    }
    const double j = alpha - k;
    const double s0 = log_binom + k * log_q + j * log_1mq + (1.0 * k * k - k) / two_s2 + log_half_erfc((k - z0) / scale);
    const double s1 = log_binom + j * log_q + k * log_1mq + (j * j - j) / two_s2 + log_half_erfc((z0 - j) / scale);
    a0.add(negative, s0);
    a1.add(negative, s1);
    const double total = log_add(a0.value(), a1.value());
    if (k > alpha + 1 && s0 < last0 && s1 < last1 && std::max(s0, s1) < total - 36) return total;
    last0 = s0;
    last1 = s1;
  }
  return log_add(log_add(a0.value(), a1.value()), log_add(last0, last1));
}

void check_order(double alpha) {
  if (!(alpha > 1))
    throw ConfigError("RDP order " + str(alpha) + " is not > 1: list orders above 1 (Opacus uses 1.1 to 63)");
}

void check_conversion(const std::vector<double>& orders, const std::vector<double>& rdp, double delta) {
  if (!(delta > 0 && delta < 1)) throw ConfigError("delta = " + str(delta) + " is outside (0, 1)");
  if (orders.size() != rdp.size() || orders.empty())
    throw ConfigError("RDP conversion needs one value per order: " + std::to_string(orders.size()) + " orders, " +
                      std::to_string(rdp.size()) + " values");
  for (const double a : orders) check_order(a);
}

}  // namespace

std::vector<double> default_rdp_orders() {
  std::vector<double> orders;
  for (int x = 1; x < 100; ++x) orders.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

std::vector<double> sampled_gaussian_rdp(double q, double sigma, const std::vector<double>& orders) {
  if (!(q >= 0 && q <= 1)) throw ConfigError("sampling rate q = " + str(q) + " is outside [0, 1]");
  if (!(sigma >= 0)) throw ConfigError("noise multiplier sigma = " + str(sigma) + " is negative");
  std::vector<double> rdp;
  rdp.reserve(orders.size());
  for (const double alpha : orders) {
    check_order(alpha);
    if (q == 0) {
      rdp.push_back(0);
    } else if (sigma == 0 || std::isinf(alpha)) {
      rdp.push_back(kInf);
    } else if (q == 1) {
      rdp.push_back(alpha / (2 * sigma * sigma));
    } else {
      const double log_a = alpha == std::floor(alpha) ? log_a_integer(q, sigma, static_cast<int64_t>(alpha))
                                                      : log_a_fractional(q, sigma, alpha);
      rdp.push_back(std::max(0.0, log_a / (alpha - 1)));  // a divergence is >= 0; rounding may dip below
    }
  }
  return rdp;
}

std::pair<double, double> rdp_to_epsilon(const std::vector<double>& orders, const std::vector<double>& rdp,
                                         double delta) {
  check_conversion(orders, rdp, delta);
  double best = kInf, best_order = orders.front();
  for (size_t i = 0; i < orders.size(); ++i) {
    const double a = orders[i], r = std::isnan(rdp[i]) ? kInf : rdp[i];
    double eps;
    if (r <= 0 || delta * delta + std::expm1(-r) > 0) {
      // KL <= D_α, and TV <= sqrt(1 − e^{−KL}) (Bretagnolle–Huber): already (0, δ)-DP.
      eps = 0;
    } else if (std::isinf(a)) {
      eps = r;  // the limit α → ∞ of the formula below
    } else {
      eps = r + std::log1p(-1 / a) - (std::log(delta) + std::log(a)) / (a - 1);
    }
    if (eps < best) {
      best = eps;
      best_order = a;
    }
  }
  return {std::max(0.0, best), best_order};
}

std::pair<double, double> rdp_to_epsilon_classic(const std::vector<double>& orders, const std::vector<double>& rdp,
                                                 double delta) {
  check_conversion(orders, rdp, delta);
  double best = kInf, best_order = orders.front();
  for (size_t i = 0; i < orders.size(); ++i) {
    const double r = std::isnan(rdp[i]) ? kInf : rdp[i];
    const double eps = r - std::log(delta) / (orders[i] - 1);
    if (eps < best) {
      best = eps;
      best_order = orders[i];
    }
  }
  return {best, best_order};
}

RdpAccountant::RdpAccountant(std::vector<double> orders) : orders_(std::move(orders)), rdp_(orders_.size(), 0.0) {
  if (orders_.empty()) throw ConfigError("RdpAccountant needs at least one RDP order");
  for (const double a : orders_) check_order(a);
}

void RdpAccountant::step(double q, double sigma, int64_t steps) {
  if (steps < 0) throw ConfigError("RdpAccountant::step: steps = " + std::to_string(steps) + " is negative");
  if (steps == 0) return;
  const std::vector<double> one = sampled_gaussian_rdp(q, sigma, orders_);
  for (size_t i = 0; i < rdp_.size(); ++i) rdp_[i] += static_cast<double>(steps) * one[i];
}

double RdpAccountant::epsilon(double delta) const {
  return rdp_to_epsilon(orders_, rdp_, delta).first;
}

void RdpAccountant::load(std::vector<double> rdp) {
  if (rdp.size() != orders_.size())
    throw DataError("RDP checkpoint holds " + std::to_string(rdp.size()) + " values, the accountant tracks " +
                    std::to_string(orders_.size()) + " orders: restore with the orders it was saved with");
  rdp_ = std::move(rdp);
}

}  // namespace fedsplit
