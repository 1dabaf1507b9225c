#include "federated/lora_aggregation.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

const std::string kA = ".lora_A.weight";
const std::string kB = ".lora_B.weight";

enum class Part { kA, kB, kOther };

Part part_of(const std::string& key) { return has_suffix(key, kA) ? Part::kA : has_suffix(key, kB) ? Part::kB : Part::kOther; }

// The module path of a lora_A / lora_B key.
std::string module_of(const std::string& key) { return key.substr(0, key.size() - kA.size()); }

std::string client(size_t i) { return "client " + std::to_string(i); }

torch::Tensor f64(const torch::Tensor& t) { return t.to(torch::kFloat64); }

// Checks what every aggregation needs (see the header's Errors) and returns Σ n_i. `global_rank` 0
// means no bound on r_i; `b_only` is FFA's form, where lora_A keys are refused.
double check_updates(const std::vector<LoraUpdate>& updates, int64_t global_rank, bool b_only) {
  if (updates.empty()) throw DataError("no client updates to aggregate");
  const TensorMap& first = updates.front().tensors;
  double total = 0;
  for (size_t i = 0; i < updates.size(); ++i) {
    const LoraUpdate& u = updates[i];
    if (!(u.weight > 0) || !std::isfinite(u.weight))
      throw DataError(client(i) + " has weight " + std::to_string(u.weight) + ": weights must be positive");
    if (u.rank <= 0) throw DataError(client(i) + " has rank " + std::to_string(u.rank) + ": ranks must be positive");
    if (global_rank > 0 && u.rank > global_rank)
      throw DataError(client(i) + " has rank " + std::to_string(u.rank) + " above the global rank " + std::to_string(global_rank));
    if (!std::isfinite(u.scaling)) throw DataError(client(i) + "'s scaling is not finite");
    total += u.weight;
    for (const auto& [key, t] : u.tensors) {
      if (b_only && part_of(key) == Part::kA)
        throw DataError(client(i) + " sent " + key + ": FFA clients send B only (A is frozen and shared)");
      if (!first.count(key)) throw DataError(client(i) + "'s update has tensor " + key + ", which client 0's lacks");
    }
    for (const auto& [key, t0] : first) {
      const auto it = u.tensors.find(key);
      if (it == u.tensors.end()) throw DataError(client(i) + "'s update has no tensor " + key + " (client 0's has)");
      const torch::Tensor& t = it->second;
      const Part part = part_of(key);
      if (part == Part::kOther) {
        if (t.sizes() != t0.sizes()) throw DataError(client(i) + "'s tensor " + key + " has another shape than client 0's");
        continue;
      }
      // A [r_i, in] with client 0's in; B [out, r_i] with client 0's out.
      const int64_t rank_dim = part == Part::kA ? 0 : 1, other_dim = 1 - rank_dim;
      if (t.dim() != 2 || t.size(rank_dim) != u.rank || t.size(other_dim) != t0.size(other_dim))
        throw DataError(client(i) + "'s tensor " + key + " has shape " + c10::str(t.sizes()) + ", expected " +
                        (part == Part::kA ? "[" + std::to_string(u.rank) + ", " + std::to_string(t0.size(1)) + "]"
                                          : "[" + std::to_string(t0.size(0)) + ", " + std::to_string(u.rank) + "]") +
                        " (its rank is " + std::to_string(u.rank) + ")");
    }
  }
  // Key sets are client 0's everywhere, so pairing A with B once there covers every client.
  for (const auto& [key, t] : first) {
    const Part part = part_of(key);
    if (part == Part::kOther) continue;
    if (part == Part::kB && !b_only && !first.count(module_of(key) + kA))
      throw DataError("client 0's update has " + key + " but no " + module_of(key) + kA);
    if (part == Part::kA && !first.count(module_of(key) + kB))
      throw DataError("client 0's update has " + key + " but no " + module_of(key) + kB);
  }
  return total;
}

// Keys other than lora_A / lora_B: the plain n-weighted mean.
void average_others(const std::vector<LoraUpdate>& updates, double total, TensorMap& out) {
  for (const auto& [key, t0] : updates.front().tensors) {
    if (part_of(key) != Part::kOther) continue;
    torch::Tensor sum = torch::zeros(t0.sizes(), t0.options().dtype(torch::kFloat64));
    for (const auto& u : updates) sum.add_(f64(u.tensors.at(key)), u.weight / total);
    out.emplace(key, sum.to(t0.scalar_type()));
  }
}

// Zero-pads the rank dimension of a lora_A / lora_B key's tensors to `rank` and sums them with
// `weights` (already normalised), in fp64.
torch::Tensor padded_sum(const std::vector<LoraUpdate>& updates, const std::string& key, int64_t rank,
                         const std::vector<double>& weights) {
  const torch::Tensor& t0 = updates.front().tensors.at(key);
  const int64_t rank_dim = part_of(key) == Part::kA ? 0 : 1;
  std::vector<int64_t> shape = t0.sizes().vec();
  shape[rank_dim] = rank;
  torch::Tensor sum = torch::zeros(shape, t0.options().dtype(torch::kFloat64));
  for (size_t i = 0; i < updates.size(); ++i)
    sum.narrow(rank_dim, 0, updates[i].rank).add_(f64(updates[i].tensors.at(key)), weights[i]);
  return sum.to(t0.scalar_type());
}

// ‖B A‖_F without forming the [out, in] product: ‖BA‖² = tr(Aᵀ Bᵀ B A) = Σ_jk (BᵀB)_jk (AAᵀ)_jk, two
// r×r Gram matrices, so norm weighting stays cheap for wide modules.
double product_norm(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor a64 = f64(a), b64 = f64(b);
  const double sq = (b64.t().mm(b64) * a64.mm(a64.t())).sum().item<double>();
  return std::sqrt(std::max(sq, 0.0));  // rounding can leave a tiny negative for a zero product
}

}  // namespace

std::map<std::string, int64_t> lora_modules(const TensorMap& lora) {
  std::map<std::string, int64_t> out;
  for (const auto& [key, t] : lora) {
    const Part part = part_of(key);
    if (part == Part::kOther) continue;
    const std::string module = module_of(key);
    if (t.dim() != 2) throw DataError("LoRA tensor " + key + " of module " + module + " is not 2-D");
    const int64_t rank = t.size(part == Part::kA ? 0 : 1);
    const auto [it, added] = out.emplace(module, rank);
    if (!added && it->second != rank)
      throw DataError("module " + module + ": lora_A has " + std::to_string(part == Part::kA ? rank : it->second) +
                      " rows but lora_B " + std::to_string(part == Part::kA ? it->second : rank) + " columns");
  }
  return out;
}

TensorMap truncate_lora(const TensorMap& global, int64_t rank) {
  if (rank <= 0) throw DataError("cannot truncate a LoRA to rank " + std::to_string(rank) + ": ranks must be positive");
  torch::NoGradGuard no_grad;
  TensorMap out;
  for (const auto& [key, t] : global) {
    const Part part = part_of(key);
    if (part == Part::kOther) {
      out.emplace(key, t.clone());
      continue;
    }
    const int64_t rank_dim = part == Part::kA ? 0 : 1;
    if (t.dim() != 2 || t.size(rank_dim) < rank)
      throw DataError("cannot truncate " + key + " of shape " + c10::str(t.sizes()) + " to rank " + std::to_string(rank));
    out.emplace(key, t.narrow(rank_dim, 0, rank).clone(torch::MemoryFormat::Contiguous));
  }
  return out;
}

TensorMap aggregate_hetlora(const std::vector<LoraUpdate>& updates, int64_t global_rank, bool norm_weighting) {
  if (global_rank <= 0) throw DataError("the global LoRA rank must be positive, not " + std::to_string(global_rank));
  const double total = check_updates(updates, global_rank, false);
  torch::NoGradGuard no_grad;
  TensorMap out;
  for (const auto& [module, rank0] : lora_modules(updates.front().tensors)) {
    std::vector<double> w(updates.size());
    double sum = 0;
    for (size_t i = 0; i < updates.size(); ++i) {
      const auto& t = updates[i].tensors;
      w[i] = updates[i].weight;
      if (norm_weighting) w[i] *= std::abs(updates[i].scaling) * product_norm(t.at(module + kA), t.at(module + kB));
      if (!std::isfinite(w[i])) throw DataError(client(i) + "'s LoRA product for " + module + " is not finite");
      sum += w[i];
    }
    // All products zero (e.g. the first round, B = 0): nothing to rank the clients by, so use n_i.
    if (sum == 0) {
      for (size_t i = 0; i < updates.size(); ++i) w[i] = updates[i].weight;
      sum = total;
    }
    for (double& x : w) x /= sum;
    out.emplace(module + kA, padded_sum(updates, module + kA, global_rank, w));
    out.emplace(module + kB, padded_sum(updates, module + kB, global_rank, w));
  }
  average_others(updates, total, out);
  return out;
}

TensorMap stack_lora(const std::vector<LoraUpdate>& updates) {
  const double total = check_updates(updates, 0, false);
  torch::NoGradGuard no_grad;
  TensorMap out;
  for (const auto& [module, rank0] : lora_modules(updates.front().tensors)) {
    std::vector<torch::Tensor> as, bs;
    const auto a_dtype = updates.front().tensors.at(module + kA).scalar_type();
    const auto dtype = updates.front().tensors.at(module + kB).scalar_type();
    for (const auto& u : updates) {
      as.push_back(u.tensors.at(module + kA).to(a_dtype));
      // The whole factor w_i s_i goes into B, so that scaling 1 applies to the stack.
      bs.push_back((f64(u.tensors.at(module + kB)) * (u.weight / total * u.scaling)).to(dtype));
    }
    out.emplace(module + kA, torch::cat(as, 0));
    out.emplace(module + kB, torch::cat(bs, 1));
  }
  average_others(updates, total, out);
  return out;
}

TensorMap lora_products(const TensorMap& lora, double scaling) {
  torch::NoGradGuard no_grad;
  TensorMap out;
  for (const auto& [module, rank] : lora_modules(lora)) {
    const auto a = lora.find(module + kA), b = lora.find(module + kB);
    if (a == lora.end() || b == lora.end())
      throw DataError("module " + module + " has only one of " + module + kA + " and " + module + kB);
    out.emplace(module, (f64(b->second).mm(f64(a->second)) * scaling).to(b->second.scalar_type()));
  }
  return out;
}

TensorMap stacked_delta(const TensorMap& stacked) { return lora_products(stacked, 1.0); }

TensorMap aggregate_ffa(const std::vector<LoraUpdate>& updates, int64_t global_rank) {
  if (global_rank <= 0) throw DataError("the global LoRA rank must be positive, not " + std::to_string(global_rank));
  const double total = check_updates(updates, global_rank, true);
  torch::NoGradGuard no_grad;
  std::vector<double> w;
  for (const auto& u : updates) w.push_back(u.weight / total);
  TensorMap out;
  for (const auto& [key, t] : updates.front().tensors)
    if (part_of(key) == Part::kB) out.emplace(key, padded_sum(updates, key, global_rank, w));
  average_others(updates, total, out);
  return out;
}

}  // namespace fedsplit
