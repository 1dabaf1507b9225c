// The process world: rank, size and the c10d process group that moves tensors between ranks, with
// every transfer counted. Under mpirun, MPI only bootstraps (rank, size and the rendezvous address);
// tensors travel over Gloo (CPU) or NCCL (CUDA). c10d and MPI stay in world.cpp: they are heavy.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fedsplit {

struct CommOptions {
  std::string backend = "auto";  ///< auto | gloo | nccl  (auto: nccl when CUDA is available and the build has it, else gloo)
  double timeout_s = 600;        ///< every wait (rendezvous, send, recv, broadcast) fails with CommError after this
  std::string interface;         ///< network interface Gloo binds (e.g. eth0); empty: loopback when every rank
                                 ///< runs on one host, else the address of this host's name
};

/// Bytes and messages this process has moved through the World since it was made (payload bytes of tensors).
/// A broadcast counts one message per receiver on the root, so that the bytes sent by all ranks add up to
/// the bytes received by all ranks.
struct TrafficStats {
  int64_t bytes_sent = 0;         ///< payload bytes of tensors sent
  int64_t bytes_received = 0;     ///< payload bytes of tensors received
  int64_t messages_sent = 0;      ///< tensors sent (send_bytes: 2, the length then the bytes; 1 when empty)
  int64_t messages_received = 0;  ///< tensors received
};

/// After a CommError from a transfer (a timeout, a lost peer) the World's process group is broken:
/// report the error and end the run rather than retrying on the same World.
class World {
 public:
  /// The process's world. Under mpirun (detect Open MPI's OMPI_COMM_WORLD_SIZE, or PMI_SIZE / PMIX_RANK): MPI_Init,
  /// rank/size from MPI_COMM_WORLD; rank 0 starts a c10d TCPStore on a free port and its host:port travels by
  /// MPI_Bcast; every rank joins a ProcessGroupGloo (or NCCL). Without mpirun (or with size 1): a world of one
  /// with no process group and no MPI. MPI is finalized when the last World is destroyed.
  static std::shared_ptr<World> create(const CommOptions& options);
  /// For tests: rank `rank` of a `size`-rank world whose ranks are threads of this process, rendezvousing on an
  /// in-process store (c10d::HashStore) shared by every call with the same `group` name. Gloo only. All `size`
  /// ranks must call it at the same time (each blocks until every rank has joined); size 1 is a world of one.
  static std::shared_ptr<World> in_process(const std::string& group, int rank, int size,
                                           const CommOptions& options = {});
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const;
  int size() const;
  std::string backend() const;  ///< "gloo", "nccl" or "none" (size 1)
  torch::Device device() const; ///< where this backend's tensors live (CUDA for nccl)

  /// Blocking point-to-point and collectives, each waiting at most timeout_s. Tensors may be on any device: the World
  /// copies to/from the backend's device as needed; recv fills `tensor` in place (its shape and dtype must match what
  /// the peer sent: the caller sends sizes first). Every call counts its payload bytes in traffic(). Over NCCL,
  /// point-to-point transfers of host tensors are copied and posted on a stream of the World's own, so they never
  /// wait for work queued on the caller's stream; those of GPU tensors follow the caller's stream.
  void send(const torch::Tensor& tensor, int dst, int tag = 0);
  /// A send or receive that isend() or irecv() started: wait() returns once it is done (CommError after
  /// timeout_s). It keeps the tensor alive until then; messages between two peers with one tag arrive in
  /// the order they started.
  class Pending {
   public:
    void wait();
   private:
    friend class World;
    std::function<void()> finish_;
  };
  /// Starts a send and returns at once (counted like send), for ranks in a ring, such as a pipeline whose
  /// last stage answers the first, where blocking sends could all wait on each other.
  Pending isend(const torch::Tensor& tensor, int dst, int tag = 0);
  void recv(torch::Tensor& tensor, int src, int tag = 0);
  /// Starts a receive into `tensor` and returns at once; `tensor` holds the message once wait() returns.
  /// Posting receives early lets a peer's sends finish at once: over NCCL, the sends and receives
  /// between two ranks share one stream, so a send that waits for its receive holds up what follows.
  Pending irecv(const torch::Tensor& tensor, int src, int tag = 0);
  void broadcast(torch::Tensor& tensor, int root);  ///< counts bytes as sent on root, received on the others
  void barrier();
  /// Length-prefixed byte strings over send/recv (an int64 length, then uint8 bytes).
  void send_bytes(const std::string& bytes, int dst, int tag = 0);
  std::string recv_bytes(int src, int tag = 0, int64_t max_bytes = int64_t(1) << 34);  ///< CommError if the length exceeds max_bytes
  /// Length-prefixed broadcast of `bytes` from `root`: the other ranks' `bytes` are replaced by root's.
  void broadcast_bytes(std::string& bytes, int root);
  TrafficStats traffic() const;

  /// A world over some of this world's ranks, for collectives among them alone (an edge and the ranks
  /// of its devices): its rank r is members[r]. `members` lists world ranks, ascending, this rank among
  /// them; every member calls it with the same members and `name` (unique per subgroup), at about the
  /// same time, and non-members do not call it. Subgroups with disjoint members run in parallel. It has
  /// the parent's backend, device and timeout, rendezvouses through the parent's store under a prefix,
  /// and counts its own traffic. CommError for members that do not fit.
  std::shared_ptr<World> subgroup(const std::vector<int>& members, const std::string& name);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  explicit World(std::unique_ptr<Impl>);
};

}  // namespace fedsplit
