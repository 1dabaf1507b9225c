// One end of a device–server pair: ordered byte messages to and from the peer. The split step talks
// through this narrow interface so that a test (or a link simulator) can sit between the parties and
// see every message, while a run uses the World's point-to-point transfers.
#pragma once
#include <string>

namespace fedsplit {

class World;

class Channel {
 public:
  virtual ~Channel() = default;
  /// Sends one message to the peer (blocking until handed to the transport).
  virtual void send(const std::string& bytes) = 0;
  /// The peer's next message, in order.
  virtual std::string receive() = 0;
  /// The peer, for error messages (e.g. "rank 1").
  virtual std::string peer_name() const = 0;
};

/// A Channel over World::send_bytes / recv_bytes with rank `peer`, on `tag`.
class WorldChannel : public Channel {
 public:
  WorldChannel(World& world, int peer, int tag = 0);
  void send(const std::string& bytes) override;
  std::string receive() override;
  std::string peer_name() const override;

 private:
  World& world_;
  int peer_;
  int tag_;
};

}  // namespace fedsplit
