#include "split/channel.h"

#include "core/comm/world.h"

namespace fedsplit {

WorldChannel::WorldChannel(World& world, int peer, int tag) : world_(world), peer_(peer), tag_(tag) {}

void WorldChannel::send(const std::string& bytes) { world_.send_bytes(bytes, peer_, tag_); }

std::string WorldChannel::receive() { return world_.recv_bytes(peer_, tag_); }

std::string WorldChannel::peer_name() const { return "rank " + std::to_string(peer_); }

}  // namespace fedsplit
