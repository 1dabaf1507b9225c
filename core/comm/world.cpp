#include "core/comm/world.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#include <unistd.h>

#if defined(FEDSPLIT_HAVE_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if defined(FEDSPLIT_HAVE_NCCL)
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(FEDSPLIT_HAVE_MPI)
#include <mpi.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fedsplit {
namespace {

using Ms = std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

/// The first line of an error text, without the "[file:line] " prefix that Gloo puts in front.
std::string first_line(std::string text) {
  text = text.substr(0, text.find('\n'));
  while (!text.empty() && text.front() == '[') {
    const auto close = text.find("] ");
    if (close == std::string::npos) break;
    text = text.substr(close + 2);
  }
  return text;
}

std::string cause_of(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return first_line(c10->what_without_backtrace());
  return first_line(e.what());
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) throw CommError(cat("gethostname failed: ", std::strerror(errno)));
  return name;
}

void check_options(const CommOptions& options) {
  if (!(options.timeout_s > 0) || !std::isfinite(options.timeout_s))
    throw ConfigError(cat("comm timeout_s must be a positive number of seconds, got ", options.timeout_s));
  if (options.backend != "auto" && options.backend != "gloo" && options.backend != "nccl")
    throw ConfigError(cat("comm backend '", options.backend, "' is unknown: use auto, gloo or nccl"));
}

/// The c10d calls a World makes, over Gloo or NCCL. A template over the concrete process group hides
/// that both derive from c10d::ProcessGroup in LibTorch 1.13 but from c10d::Backend in 2.x.
struct Transport {
  virtual ~Transport() = default;
  virtual void send(at::Tensor& tensor, int dst, int tag, Ms timeout) = 0;
  /// Starts a send; the returned call waits for it.
  virtual std::function<void(Ms)> start_send(at::Tensor& tensor, int dst, int tag) = 0;
  virtual void recv(at::Tensor& tensor, int src, int tag, Ms timeout) = 0;
  /// Starts a receive; the returned call waits for it.
  virtual std::function<void(Ms)> start_recv(at::Tensor& tensor, int src, int tag) = 0;
  virtual void broadcast(at::Tensor& tensor, int root, Ms timeout) = 0;
  virtual void barrier(Ms timeout) = 0;
};

template <class Group>
class GroupTransport final : public Transport {
 public:
  explicit GroupTransport(c10::intrusive_ptr<Group> group) : group_(std::move(group)) {}

  void send(at::Tensor& tensor, int dst, int tag, Ms timeout) override {
    std::vector<at::Tensor> tensors{tensor};
    finish(group_->send(tensors, dst, tag), timeout);
  }
  std::function<void(Ms)> start_send(at::Tensor& tensor, int dst, int tag) override {
    std::vector<at::Tensor> tensors{tensor};
    auto work = group_->send(tensors, dst, tag);
    return [work](Ms timeout) { finish(work, timeout); };
  }
  void recv(at::Tensor& tensor, int src, int tag, Ms timeout) override {
    std::vector<at::Tensor> tensors{tensor};
    finish(group_->recv(tensors, src, tag), timeout);
  }
  std::function<void(Ms)> start_recv(at::Tensor& tensor, int src, int tag) override {
    std::vector<at::Tensor> tensors{tensor};
    auto work = group_->recv(tensors, src, tag);
    return [work](Ms timeout) { finish(work, timeout); };
  }
  void broadcast(at::Tensor& tensor, int root, Ms timeout) override {
    std::vector<at::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = timeout;
    finish(group_->broadcast(tensors, options), timeout);
  }
  void barrier(Ms timeout) override {
    c10d::BarrierOptions options;
    options.timeout = timeout;
    finish(group_->barrier(options), timeout);
  }

 private:
  // Gloo's wait(timeout) is bounded; NCCL's only orders CUDA streams, so completion is also polled.
  template <class Work>
  static void finish(const c10::intrusive_ptr<Work>& work, Ms timeout) {
    const auto deadline = Clock::now() + timeout;
    if (!work->wait(timeout)) throw std::runtime_error("the operation was aborted");
    // Spin for the first 20 ms, then sleep: a pipeline stage's next message is usually a step of
    // its peer away (a millisecond or so), and waking from a sleep would add up to 200 us a hop.
    const auto spin_until = Clock::now() + std::chrono::milliseconds(20);
    while (!work->isCompleted()) {
      const auto now = Clock::now();
      if (now > deadline) throw std::runtime_error("timed out");
      if (now < spin_until) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  c10::intrusive_ptr<Group> group_;
};

#if defined(FEDSPLIT_HAVE_MPI)
void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  throw CommError(cat(call, " failed (", std::string(text, length),
                      "): check the mpirun command line and that every rank runs the same binary"));
}

/// MPI for as long as a World uses it: initialized by the first, finalized with the last (MPI cannot be
/// initialized again in the same process).
class MpiSession {
 public:
  static std::shared_ptr<MpiSession> acquire() {
    static std::mutex mutex;
    static std::weak_ptr<MpiSession> current;
    std::lock_guard<std::mutex> lock(mutex);
    if (auto session = current.lock()) return session;
    std::shared_ptr<MpiSession> session(new MpiSession());
    current = session;
    return session;
  }
  ~MpiSession() {
    if (!owns_) return;
    const int code = MPI_Finalize();
    if (code != MPI_SUCCESS) log_warn("MPI_Finalize failed with code ", code);
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  MpiSession() {
    int initialized = 0, finalized = 0;
    check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
    check_mpi(MPI_Finalized(&finalized), "MPI_Finalized");
    if (finalized)
      throw CommError("MPI was already finalized in this process: keep one World alive for the whole run");
    if (!initialized) {
      check_mpi(MPI_Init(nullptr, nullptr), "MPI_Init");
      owns_ = true;
    }
    // Return codes instead of aborting the job, so that failures become CommErrors.
    check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  }
  bool owns_ = false;
};

/// An MPI communicator freed when it goes out of scope.
struct MpiComm {
  MPI_Comm comm = MPI_COMM_NULL;
  ~MpiComm() {
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

/// This rank's index among the ranks on its host (for picking a GPU).
/// This rank's index among the ranks on its host, and how many ranks that host runs.
std::pair<int, int> mpi_local_rank(int rank) {
  MpiComm local;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local.comm),
            "MPI_Comm_split_type");
  int local_rank = 0, local_size = 0;
  check_mpi(MPI_Comm_rank(local.comm, &local_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(local.comm, &local_size), "MPI_Comm_size");
  return {local_rank, local_size};
}
#endif

/// The in-process store of a test group; the entry is dropped once all its ranks hold it, so that the
/// next world with the same name starts afresh.
c10::intrusive_ptr<c10d::Store> group_store(const std::string& group, int size, Ms timeout) {
  static std::mutex mutex;
  static std::map<std::string, std::pair<c10::intrusive_ptr<c10d::HashStore>, int>> pending;
  std::lock_guard<std::mutex> lock(mutex);
  auto& entry = pending[group];
  if (!entry.first) {
    entry.first = c10::make_intrusive<c10d::HashStore>();
    entry.first->setTimeout(timeout);
  }
  auto store = entry.first;
  if (++entry.second == size) pending.erase(group);
  return store;
}

}  // namespace

struct World::Impl {
#if defined(FEDSPLIT_HAVE_MPI)
  std::shared_ptr<MpiSession> mpi;  // first member: MPI is finalized after the group is gone
#endif
  int rank = 0;
  int size = 1;
  std::string backend = "none";
  torch::Device device = torch::kCPU;
  double timeout_s = 600;
  CommOptions options;    // what joined this world, for its subgroups
  bool loopback = false;  // every rank on one host
  c10::intrusive_ptr<c10d::Store> store;
  std::unique_ptr<Transport> transport;
  std::atomic<int64_t> bytes_sent{0}, bytes_received{0}, messages_sent{0}, messages_received{0};
#if defined(FEDSPLIT_HAVE_NCCL)
  // Over NCCL, host tensors are copied and their transfers posted on a stream of their own: NCCL
  // makes a transfer wait for its calling stream, and a copy to or from pageable memory waits for
  // its whole stream, so on the compute stream either would wait for every step queued there.
  std::optional<c10::cuda::CUDAStream> staging;
#endif

  Ms timeout() const { return Ms(static_cast<int64_t>(std::ceil(timeout_s * 1000))); }

  /// Throws unless `peer` is another rank of this world.
  void check_peer(int peer, const char* verb, int tag) const {
    if (peer < 0 || peer >= size)
      throw CommError(cat("rank ", peer, " does not exist in this world of ", size, size == 1 ? " rank" : " ranks",
                          " (rank ", rank, " tried to ", verb, " it): address ranks 0..", size - 1,
                          size == 1 ? ", or start more with mpirun -np N" : ""));
    if (peer == rank) throw CommError(cat("rank ", rank, " cannot ", verb, " itself: keep local data local"));
    if (tag < 0) throw CommError(cat("rank ", rank, ": tag ", tag, " to ", verb, " rank ", peer, " must be >= 0"));
  }

  /// Runs a c10d call, turning its failure into a one-line CommError naming this rank and `what`.
  template <class F>
  void guarded(const std::string& what, const std::string& advice, F&& call) {
    try {
      call();
    } catch (const CommError&) {
      throw;
    } catch (const std::exception& e) {
      throw CommError(cat("rank ", rank, ": ", what, " failed within the ", timeout_s, " s timeout (", cause_of(e),
                          "): ", advice));
    }
  }

  /// Starts a transfer with `start` and returns the call that waits for it within the timeout and
  /// then runs `then`; a failure of either is a CommError naming `what`. `keep` (the transfer's
  /// buffer) lives until then.
  std::function<void()> begin(const std::string& what, const std::string& advice, bool staged,
                              const std::function<std::function<void(Ms)>()>& start, const at::Tensor& keep,
                              std::function<void()> then = {}) {
    std::function<void(Ms)> finish;
    guarded(what, advice, [&] { finish = start(); });
    return [this, what, advice, staged, finish, keep, then] {
      maybe_staged(staged, [&] {
        guarded(what, advice, [&] { finish(timeout()); });
        if (then) then();
      });
    };
  }

  /// A contiguous copy of `tensor` on the backend's device (the tensor itself when it already is).
  at::Tensor on_wire(const at::Tensor& tensor) const { return tensor.to(device).contiguous(); }
  bool wire_ready(const at::Tensor& tensor) const { return tensor.device() == device && tensor.is_contiguous(); }

  /// Runs `body` with the staging stream current when the transfer stages a host tensor over NCCL.
  template <class F>
  void maybe_staged(bool staged, F&& body) const {
#if defined(FEDSPLIT_HAVE_NCCL)
    if (staged && staging) {
      const c10::cuda::CUDAStreamGuard on_staging(*staging);
      body();
      return;
    }
#endif
    (void)staged;
    body();
  }

  /// Joins this world's c10d group (rank, size, store and device already set). Gloo binds options.interface when
  /// given, else loopback when `loopback` (every rank on one host), else the address of this host's name.
  void join(const CommOptions& join_options, bool on_one_host);
};

void World::Impl::join(const CommOptions& join_options, bool on_one_host) {
  options = join_options;
  loopback = on_one_host;
  guarded(cat("joining the ", backend, " group of ", size, " ranks"),
          cat("check that all ", size, " ranks start and reach World creation"), [&] {
            if (backend == "gloo") {
#if defined(FEDSPLIT_HAVE_GLOO)
              auto group_options = c10d::ProcessGroupGloo::Options::create(timeout());
              group_options->devices.push_back(
                  !options.interface.empty() ? c10d::ProcessGroupGloo::createDeviceForInterface(options.interface)
                  : loopback                 ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                             : c10d::ProcessGroupGloo::createDefaultDevice());
              transport = std::make_unique<GroupTransport<c10d::ProcessGroupGloo>>(
                  c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, group_options));
#else
              throw CommError(cat("rank ", rank, ": this build has no Gloo (gloo/context.h was not found): install ",
                                  "libgloo-dev and rebuild"));
#endif
            } else {
#if defined(FEDSPLIT_HAVE_NCCL)
              c10::cuda::set_device(static_cast<c10::DeviceIndex>(device.index()));
              staging = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
              auto group_options = c10d::ProcessGroupNCCL::Options::create();
              group_options->timeout = timeout();
              transport = std::make_unique<GroupTransport<c10d::ProcessGroupNCCL>>(
                  c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, group_options));
#else
              throw CommError(cat("rank ", rank, ": this build has no NCCL: use backend gloo"));
#endif
            }
          });
}

namespace {

/// The backend that `requested` resolves to on this machine and build.
std::string resolve_backend(const std::string& requested) {
#if defined(FEDSPLIT_HAVE_NCCL)
  const bool nccl = torch::cuda::is_available();
#else
  const bool nccl = false;
#endif
  if (requested == "auto") return nccl ? "nccl" : "gloo";
  if (requested == "nccl" && !nccl)
    throw CommError("comm backend nccl needs CUDA and a LibTorch built with NCCL, and this process has neither: "
                    "use backend gloo or auto");
  return requested;
}

bool under_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

/// The world size that the launcher announces, or -1 when it does not say.
int launcher_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* value = std::getenv(name)) return std::atoi(value);
  return -1;
}

}  // namespace

World::World(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
World::~World() = default;

std::shared_ptr<World> World::create(const CommOptions& options) {
  check_options(options);
  auto impl = std::make_unique<Impl>();
  impl->timeout_s = options.timeout_s;
  if (!under_mpirun() || launcher_size() == 1) {
    set_log_rank(0);
    return std::shared_ptr<World>(new World(std::move(impl)));
  }
#if defined(FEDSPLIT_HAVE_MPI)
  impl->mpi = MpiSession::acquire();
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &impl->rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &impl->size), "MPI_Comm_size");
  set_log_rank(impl->rank);
  if (impl->size == 1) return std::shared_ptr<World>(new World(std::move(impl)));
  impl->backend = resolve_backend(options.backend);
  if (impl->backend == "nccl") {
    // NCCL cannot put two ranks on one GPU (it would hang at the first collective): refuse instead.
    const auto [local_rank, local_size] = mpi_local_rank(impl->rank);
    const int gpus = static_cast<int>(torch::cuda::device_count());
    if (local_size > gpus)
      throw CommError("rank " + std::to_string(impl->rank) + ": backend nccl needs one GPU per rank, but this host runs " +
                      std::to_string(local_size) + " ranks on " + std::to_string(gpus) +
                      " GPUs: start at most that many ranks per host, or use backend gloo");
    impl->device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
  }

  // Rendezvous: rank 0 hosts the store on a free port and broadcasts "host:port", or "!reason" when it
  // could not start it (so that the other ranks fail too instead of waiting in MPI_Bcast).
  const std::string host = this_host();
  char address[512] = {};
  c10d::TCPStoreOptions store_options;
  store_options.timeout = impl->timeout();
  if (impl->rank == 0) {
    std::string text;
    try {
      store_options.isServer = true;
      store_options.port = 0;
      store_options.numWorkers = static_cast<size_t>(impl->size);
      store_options.waitWorkers = false;  // the others learn the port only after this returns
      auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
      text = cat(host, ":", store->getPort());
      impl->store = store;
    } catch (const std::exception& e) {
      text = "!" + cause_of(e);
    }
    std::strncpy(address, text.c_str(), sizeof(address) - 1);
  }
  check_mpi(MPI_Bcast(address, sizeof(address), MPI_CHAR, 0, MPI_COMM_WORLD), "MPI_Bcast of the rendezvous address");
  const std::string text = address;
  if (text.empty() || text.front() == '!')
    throw CommError(cat("rank ", impl->rank, ": rank 0 could not start the rendezvous store (", text.substr(1),
                        "): check that rank 0 may listen on a TCP port"));
  const auto colon = text.rfind(':');
  const std::string store_host = text.substr(0, colon);
  // Ranks on rank 0's host connect over loopback, which works even where the host name does not resolve.
  int same_host = store_host == host ? 1 : 0, all_same_host = 0;
  check_mpi(MPI_Allreduce(&same_host, &all_same_host, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce");
  if (impl->rank != 0) {
    store_options.port = static_cast<uint16_t>(std::atoi(text.c_str() + colon + 1));
    impl->guarded(cat("connecting to the rendezvous store at ", text), "check that rank 0's host and port are reachable",
                  [&] {
                    impl->store = c10::make_intrusive<c10d::TCPStore>(same_host ? "127.0.0.1" : store_host,
                                                                      store_options);
                  });
  }
  impl->join(options, all_same_host == 1);
  log_info("comm: ", impl->size, " ranks over ", impl->backend, ", rendezvous at ", text);
  return std::shared_ptr<World>(new World(std::move(impl)));
#else
  throw CommError("this process runs under mpirun but fedsplit was built without MPI: install libopenmpi-dev and "
                  "rebuild, or run without mpirun");
#endif
}

std::shared_ptr<World> World::in_process(const std::string& group, int rank, int size, const CommOptions& options) {
  check_options(options);
  if (size < 1 || rank < 0 || rank >= size)
    throw CommError(cat("in-process world '", group, "': rank ", rank, " of ", size, " is out of range"));
  if (options.backend == "nccl") throw CommError(cat("in-process world '", group, "' is Gloo only: use backend gloo"));
  auto impl = std::make_unique<Impl>();
  impl->timeout_s = options.timeout_s;
  impl->rank = rank;
  impl->size = size;
  if (size == 1) return std::shared_ptr<World>(new World(std::move(impl)));
  impl->backend = "gloo";
  impl->store = group_store(group, size, impl->timeout());
  impl->join(options, /*loopback=*/true);
  return std::shared_ptr<World>(new World(std::move(impl)));
}

int World::rank() const { return impl_->rank; }
int World::size() const { return impl_->size; }
std::string World::backend() const { return impl_->backend; }
torch::Device World::device() const { return impl_->device; }

void World::send(const torch::Tensor& tensor, int dst, int tag) {
  auto& w = *impl_;
  w.check_peer(dst, "send to", tag);
  TORCH_CHECK(tensor.defined(), "World::send: undefined tensor");
  const int64_t bytes = static_cast<int64_t>(tensor.nbytes());
  w.maybe_staged(!w.wire_ready(tensor), [&] {
    auto wire = w.on_wire(tensor);
    w.guarded(cat("send of ", bytes, " bytes to rank ", dst, " (tag ", tag, ")"),
              cat("check that rank ", dst, " is alive and receives a matching message, or raise the comm timeout"),
              [&] { w.transport->send(wire, dst, tag, w.timeout()); });
  });
  w.bytes_sent += bytes;
  w.messages_sent += 1;
}

World::Pending World::isend(const torch::Tensor& tensor, int dst, int tag) {
  auto& w = *impl_;
  w.check_peer(dst, "send to", tag);
  TORCH_CHECK(tensor.defined(), "World::isend: undefined tensor");
  const int64_t bytes = static_cast<int64_t>(tensor.nbytes());
  const bool staged = !w.wire_ready(tensor);
  Pending pending;
  w.maybe_staged(staged, [&] {
    auto wire = w.on_wire(tensor);
    pending.finish_ =
        w.begin(cat("send of ", bytes, " bytes to rank ", dst, " (tag ", tag, ")"),
                cat("check that rank ", dst, " is alive and receives a matching message, or raise the comm timeout"),
                staged, [&] { return w.transport->start_send(wire, dst, tag); }, wire);
  });
  w.bytes_sent += bytes;
  w.messages_sent += 1;
  return pending;
}

void World::Pending::wait() {
  if (!finish_) return;
  auto finish = std::move(finish_);
  finish_ = nullptr;
  finish();
}

World::Pending World::irecv(const torch::Tensor& tensor, int src, int tag) {
  auto& w = *impl_;
  w.check_peer(src, "receive from", tag);
  TORCH_CHECK(tensor.defined(), "World::irecv: undefined tensor (allocate it with the shape the peer sends)");
  const bool direct = w.wire_ready(tensor);
  const int64_t bytes = static_cast<int64_t>(tensor.nbytes());
  Pending pending;
  w.maybe_staged(!direct, [&] {
    auto wire = direct ? tensor : torch::empty(tensor.sizes(), tensor.options().device(w.device));
    pending.finish_ = w.begin(
        cat("recv of ", bytes, " bytes from rank ", src, " (tag ", tag, ")"),
        cat("check that rank ", src, " is alive and sends a matching message, or raise the comm timeout"), !direct,
        [&] { return w.transport->start_recv(wire, src, tag); }, wire, [tensor, wire, direct] {
          torch::NoGradGuard no_grad;
          if (!direct) tensor.copy_(wire);
        });
  });
  w.bytes_received += bytes;
  w.messages_received += 1;
  return pending;
}

void World::recv(torch::Tensor& tensor, int src, int tag) {
  auto& w = *impl_;
  w.check_peer(src, "receive from", tag);
  TORCH_CHECK(tensor.defined(), "World::recv: undefined tensor (allocate it with the shape the peer sends)");
  torch::NoGradGuard no_grad;
  const bool direct = w.wire_ready(tensor);
  const int64_t bytes = static_cast<int64_t>(tensor.nbytes());
  w.maybe_staged(!direct, [&] {
    auto wire = direct ? tensor : torch::empty(tensor.sizes(), tensor.options().device(w.device));
    w.guarded(cat("recv of ", bytes, " bytes from rank ", src, " (tag ", tag, ")"),
              cat("check that rank ", src, " is alive and sends a matching message, or raise the comm timeout"),
              [&] { w.transport->recv(wire, src, tag, w.timeout()); });
    if (!direct) tensor.copy_(wire);
  });
  w.bytes_received += bytes;
  w.messages_received += 1;
}

void World::broadcast(torch::Tensor& tensor, int root) {
  auto& w = *impl_;
  if (root < 0 || root >= w.size)
    throw CommError(cat("rank ", root, " does not exist in this world of ", w.size,
                        " ranks (rank ", w.rank, " broadcast from it): use a root in 0..", w.size - 1));
  TORCH_CHECK(tensor.defined(), "World::broadcast: undefined tensor");
  if (w.size == 1) return;
  torch::NoGradGuard no_grad;
  const bool direct = w.wire_ready(tensor);
  auto wire = direct ? tensor : w.on_wire(tensor);
  const int64_t bytes = static_cast<int64_t>(wire.nbytes());
  w.guarded(cat("broadcast of ", bytes, " bytes from rank ", root),
            "check that every rank reaches this broadcast with the same root and shape, or raise the comm timeout",
            [&] { w.transport->broadcast(wire, root, w.timeout()); });
  if (!direct && w.rank != root) tensor.copy_(wire);
  if (w.rank == root) {
    w.bytes_sent += bytes * (w.size - 1);
    w.messages_sent += w.size - 1;
  } else {
    w.bytes_received += bytes;
    w.messages_received += 1;
  }
}

void World::barrier() {
  auto& w = *impl_;
  if (w.size == 1) return;
  w.guarded("barrier", "check that every rank reaches this barrier, or raise the comm timeout",
            [&] { w.transport->barrier(w.timeout()); });
}

void World::send_bytes(const std::string& bytes, int dst, int tag) {
  const auto length = static_cast<int64_t>(bytes.size());
  send(torch::full({1}, length, torch::kInt64), dst, tag);
  if (length == 0) return;
  // send only reads the buffer, so the const_cast does not let anything write to `bytes`.
  send(torch::from_blob(const_cast<char*>(bytes.data()), {length}, torch::kUInt8), dst, tag);
}

std::string World::recv_bytes(int src, int tag, int64_t max_bytes) {
  auto length_tensor = torch::zeros({1}, torch::kInt64);
  recv(length_tensor, src, tag);
  const int64_t length = length_tensor.item<int64_t>();
  if (length < 0 || length > max_bytes)
    throw CommError(cat("rank ", impl_->rank, ": recv_bytes from rank ", src, " (tag ", tag, ") announced ", length,
                        " bytes, outside 0..", max_bytes, ": the peer sent something else first, or raise max_bytes"));
  std::string bytes(static_cast<size_t>(length), '\0');
  if (length == 0) return bytes;
  auto payload = torch::from_blob(bytes.data(), {length}, torch::kUInt8);
  recv(payload, src, tag);
  return bytes;
}

void World::broadcast_bytes(std::string& bytes, int root) {
  auto length = torch::full({1}, static_cast<int64_t>(bytes.size()), torch::kInt64);
  broadcast(length, root);
  const int64_t n = length.item<int64_t>();
  if (impl_->rank != root) bytes.assign(static_cast<size_t>(n), '\0');
  if (n == 0) return;
  auto payload = torch::from_blob(bytes.data(), {n}, torch::kUInt8);
  broadcast(payload, root);
}

std::shared_ptr<World> World::subgroup(const std::vector<int>& members, const std::string& name) {
  const auto& w = *impl_;
  const auto self = std::find(members.begin(), members.end(), w.rank);
  for (size_t i = 0; i < members.size(); ++i)
    if (members[i] < 0 || members[i] >= w.size || (i > 0 && members[i] <= members[i - 1]))
      throw CommError(cat("rank ", w.rank, ": subgroup '", name, "' needs distinct ascending ranks of 0..", w.size - 1));
  if (self == members.end())
    throw CommError(cat("rank ", w.rank, " is not a member of subgroup '", name, "': only its members may create it"));
  auto impl = std::make_unique<Impl>();
#if defined(FEDSPLIT_HAVE_MPI)
  impl->mpi = w.mpi;
#endif
  impl->timeout_s = w.timeout_s;
  impl->rank = static_cast<int>(self - members.begin());
  impl->size = static_cast<int>(members.size());
  impl->device = w.device;
  if (impl->size == 1) return std::shared_ptr<World>(new World(std::move(impl)));
  impl->backend = w.backend;
  impl->store = c10::make_intrusive<c10d::PrefixStore>("subgroup/" + name, w.store);
  impl->join(w.options, w.loopback);
  return std::shared_ptr<World>(new World(std::move(impl)));
}

TrafficStats World::traffic() const {
  TrafficStats stats;
  stats.bytes_sent = impl_->bytes_sent;
  stats.bytes_received = impl_->bytes_received;
  stats.messages_sent = impl_->messages_sent;
  stats.messages_received = impl_->messages_received;
  return stats;
}

}  // namespace fedsplit
