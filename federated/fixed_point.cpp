#include "federated/fixed_point.h"

#include <torch/torch.h>

#include <cmath>

#include "core/util/error.h"

namespace fedsplit {
namespace {

constexpr double kLossStep = 1.0 / 65536;

uint32_t to_ring(double scaled) { return static_cast<uint32_t>(static_cast<int64_t>(std::llround(scaled))); }
double from_ring(uint32_t v) { return static_cast<double>(static_cast<int32_t>(v)); }

}  // namespace

UpdateEncoding::UpdateEncoding(std::map<std::string, std::vector<int64_t>> shapes, double range, double sum_bound)
    : shapes_(std::move(shapes)), range_(range), step_(sum_bound / 0x1p30) {
  if (!(range > 0) || !(sum_bound >= range)) throw ConfigError("secure.range must be > 0 (got " + std::to_string(range) + ")");
  for (const auto& [name, shape] : shapes_) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    values_ += n;
  }
}

std::vector<uint32_t> UpdateEncoding::encode(const TensorMap& update, double weight, double loss) const {
  if (!std::isfinite(weight) || !std::isfinite(loss)) throw DataError("secure aggregation: a non-finite weight or loss");
  std::vector<uint32_t> out;
  out.reserve(static_cast<size_t>(size()));
  int64_t clamped = 0;
  for (const auto& [name, shape] : shapes_) {
    const auto it = update.find(name);
    if (it == update.end() || it->second.sizes().vec() != shape)
      throw DataError("secure aggregation: the update's " + name + " is missing or has another shape");
    const torch::Tensor t = it->second.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const double* x = t.data_ptr<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(x[i])) throw DataError("secure aggregation: the update's " + name + " holds non-finite values");
      double v = x[i];
      if (std::abs(v) > range_) v = std::copysign(range_, v), ++clamped;
      out.push_back(to_ring(v * weight / step_));
    }
  }
  out.push_back(to_ring(weight * loss / kLossStep));
  out.push_back(static_cast<uint32_t>(clamped));
  return out;
}

UpdateEncoding::Sum UpdateEncoding::decode(const std::vector<uint32_t>& sum) const {
  if (static_cast<int64_t>(sum.size()) != size())
    throw DataError("secure aggregation: a sum of " + std::to_string(sum.size()) + " elements, expected " + std::to_string(size()));
  Sum out;
  size_t at = 0;
  for (const auto& [name, shape] : shapes_) {
    torch::Tensor t = torch::empty(shape, torch::kFloat64);
    double* x = t.data_ptr<double>();
    for (int64_t i = 0; i < t.numel(); ++i) x[i] = from_ring(sum[at++]) * step_;
    out.values[name] = t.to(torch::kFloat32);
  }
  out.weighted_loss = from_ring(sum[at++]) * kLossStep;
  out.clamped = static_cast<int64_t>(sum[at]);
  return out;
}

}  // namespace fedsplit
