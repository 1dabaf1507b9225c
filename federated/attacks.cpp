#include "federated/attacks.h"

#include <algorithm>
#include <cmath>

#include "core/config/recipe.h"
#include "core/data/dataset.h"
#include "core/util/error.h"
#include "federated/options.h"
#include "federated/sampling.h"

namespace fedsplit {
namespace {

const std::vector<std::string>& kinds() {
  static const std::vector<std::string> k = {"sign_flip", "scale", "noise", "collude", "label_flip"};
  return k;
}

void check_kind(const std::string& kind, const std::string& key) {
  if (std::find(kinds().begin(), kinds().end(), kind) == kinds().end())
    throw ConfigError(key + ": '" + kind + "' is not an attack (sign_flip, scale, noise, collude, label_flip)");
}

// The leading block of `global` with the shape of `like` (a lower-rank client's LoRA is a block of the global one).
torch::Tensor reference_block(const torch::Tensor& global, const torch::Tensor& like) {
  torch::Tensor out = global;
  for (int64_t d = 0; d < like.dim(); ++d) out = out.narrow(d, 0, like.size(d));
  return out;
}

}  // namespace

void bind_attack_options(Recipe& r, AttackOptions& o) {
  r.add("attack.clients", &o.clients, "clients that attack: client=kind items (sign_flip, scale, noise, collude, label_flip)");
  r.add("attack.fraction", &o.fraction, "share of clients (seeded) that attack with attack.kind", 0.0, 1.0);
  r.add_choice("attack.kind", &o.kind, kinds(), "the attack of attack.fraction");
  r.add("attack.scale", &o.scale, "sign_flip, scale, collude: magnitude factor", 0.0, 1e9);
  r.add("attack.noise_std", &o.noise_std, "noise: standard deviation per element", 0.0, 1e9);
  r.add("attack.label_shift", &o.label_shift, "label_flip: added to every target token id", 1, 1 << 30);
}

std::map<int64_t, std::string> pick_attackers(const AttackOptions& o, const std::vector<std::string>& names, uint64_t seed) {
  check_kind(o.kind, "attack.kind");
  std::map<int64_t, std::string> out;
  const auto chosen = pick_share(static_cast<int64_t>(names.size()), o.fraction, seed ^ 0xA77AC4ull);
  for (size_t c = 0; c < chosen.size(); ++c)
    if (chosen[c]) out[static_cast<int64_t>(c)] = o.kind;
  for (const auto& item : split_list(o.clients)) {
    const auto eq = item.rfind('=');
    if (eq == std::string::npos) throw ConfigError("attack.clients: '" + item + "' is not client=kind");
    check_kind(item.substr(eq + 1), "attack.clients");
    out[find_client(item.substr(0, eq), names, "attack.clients")] = item.substr(eq + 1);
  }
  return out;
}

bool is_update_attack(const std::string& kind) { return kind != "label_flip"; }

void attack_update(const std::string& kind, TensorMap& update, const TensorMap& global, const AttackOptions& o,
                   uint64_t seed, uint64_t shared_seed) {
  torch::NoGradGuard no_grad;
  TensorMap delta;
  double norm_sq = 0;
  for (const auto& [name, x] : update) {
    delta[name] = x - reference_block(global.at(name), x).to(x.device(), x.scalar_type());
    norm_sq += delta[name].to(torch::kFloat64).pow(2).sum().item<double>();
  }
  // The colluders' shared direction, drawn on the CPU so that every rank draws the same one.
  auto shared = at::detail::createCPUGenerator(shared_seed);
  auto own = at::detail::createCPUGenerator(seed);
  TensorMap direction;
  double direction_sq = 0;
  if (kind == "collude") {
    for (const auto& [name, d] : delta) {
      direction[name] = torch::randn(d.sizes(), shared, torch::kFloat32);
      direction_sq += direction[name].to(torch::kFloat64).pow(2).sum().item<double>();
    }
  }
  for (auto& [name, x] : update) {
    const torch::Tensor& d = delta.at(name);
    torch::Tensor bad;
    if (kind == "sign_flip") bad = d * -o.scale;
    else if (kind == "scale") bad = d * o.scale;
    else if (kind == "noise") bad = torch::randn(d.sizes(), own, torch::kFloat32).to(d.device()) * o.noise_std;
    else if (kind == "collude")
      bad = direction.at(name).to(d.device()) * (o.scale * std::sqrt(norm_sq) / std::max(std::sqrt(direction_sq), 1e-30));
    else throw ConfigError("attack '" + kind + "' does not rewrite updates");
    x = (x - d + bad.to(x.scalar_type())).contiguous();
  }
}

void poison_batch(Batch& batch, int64_t shift, int64_t vocab_size) {
  batch.targets = (batch.targets + shift).remainder(vocab_size);
}

}  // namespace fedsplit
