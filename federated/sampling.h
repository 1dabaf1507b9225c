// Who takes part in a round, where each client lives, and the seeds a client trains with. Every
// choice is a pure function of (run seed, round, attempt, client), so that every rank computes the
// same answer without asking and a resumed run draws exactly what an uninterrupted one would.
#pragma once
#include <cstdint>
#include <vector>

namespace fedsplit {

/// Clients per round: `count` if > 0 (at most `clients`), else round(fraction · clients), at least 1.
int64_t sample_size(int64_t clients, double fraction, int64_t count);

/// `size` distinct clients of 0..clients-1 for attempt `attempt` of round `round`, ascending; a seeded
/// partial Fisher-Yates shuffle (all clients when size >= clients).
std::vector<int64_t> sample_clients(int64_t clients, int64_t size, uint64_t seed, int64_t round, int64_t attempt);

/// A seeded share of the clients (stragglers, attackers): round(fraction · clients) of them are true.
std::vector<bool> pick_share(int64_t clients, double fraction, uint64_t seed);

/// The rank that hosts `client`: rank 0 in a world of one, else ranks 1..size-1 in turn (rank 0 serves).
int host_rank(int64_t client, int world_size);

/// The seed of `client`'s local training in `round` (dropout, LoRA re-initialisation).
uint64_t client_seed(uint64_t seed, int64_t round, int64_t client);

}  // namespace fedsplit
