// Attack simulation, to evaluate aggregation rules: chosen clients misbehave on purpose in every round
// they are sampled. Update attacks rewrite the client's delta d = x - x_global before it is sent;
// data poisoning changes what the client trains on.
//
//   sign_flip   d ← −scale·d                      (the update points the other way)
//   scale       d ← scale·d                       (a boosted update, e.g. model replacement)
//   noise       d ← N(0, noise_std²) per element  (a random update of the same shape)
//   collude     d ← scale·‖d‖·u, with u one unit direction shared by every colluding client of the
//               round (drawn from the run seed and round), so that the attackers agree with each other
//   label_flip  data poisoning: every target token t becomes (t + shift) mod V, so the client learns a
//               consistently wrong next-token map (the language-model analogue of flipping labels)
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

class Recipe;
struct Batch;

struct AttackOptions {
  std::string clients;        ///< "client=kind" items (client by name or index)
  double fraction = 0;        ///< share of clients (seeded) attacking with `kind`, besides `clients`
  std::string kind = "sign_flip";  ///< the attack of `fraction`: sign_flip | scale | noise | collude | label_flip
  double scale = 10;          ///< sign_flip, scale, collude: magnitude factor
  double noise_std = 0.1;     ///< noise: standard deviation per element
  int64_t label_shift = 1;    ///< label_flip: added to every target id (mod the vocabulary)
};

/// Registers the [attack] keys.
void bind_attack_options(Recipe& recipe, AttackOptions& options);

/// Which clients attack and how: the named ones, plus round(fraction · clients) others chosen by `seed`.
/// ConfigError naming attack.clients / attack.kind for an unknown client or kind.
std::map<int64_t, std::string> pick_attackers(const AttackOptions& options, const std::vector<std::string>& client_names,
                                              uint64_t seed);

/// True for the attacks that rewrite the update (all but label_flip).
bool is_update_attack(const std::string& kind);

/// Rewrites `update` (the client's parameters) by attack `kind` relative to `global` (the parameters it
/// started from; tensors of another shape, such as a lower-rank client's LoRA, are compared with the
/// leading block of the global tensor). `seed` draws the noise; `shared_seed` the colluders' direction.
void attack_update(const std::string& kind, TensorMap& update, const TensorMap& global, const AttackOptions& options,
                   uint64_t seed, uint64_t shared_seed);

/// label_flip: shifts every target of `batch` by `shift` modulo `vocab_size`.
void poison_batch(Batch& batch, int64_t shift, int64_t vocab_size);

}  // namespace fedsplit
