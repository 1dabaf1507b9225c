#include "split/local_channel.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "core/util/error.h"

namespace fedsplit {
namespace {

struct Queue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::string> messages;
};

class LocalChannel : public Channel {
 public:
  LocalChannel(std::shared_ptr<Queue> out, std::shared_ptr<Queue> in, std::string peer, double timeout_s)
      : out_(std::move(out)), in_(std::move(in)), peer_(std::move(peer)), timeout_s_(timeout_s) {}

  void send(const std::string& bytes) override {
    {
      std::lock_guard<std::mutex> lock(out_->mutex);
      out_->messages.push_back(bytes);
    }
    out_->ready.notify_one();
  }

  std::string receive() override {
    std::unique_lock<std::mutex> lock(in_->mutex);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
    if (!in_->ready.wait_until(lock, deadline, [&] { return !in_->messages.empty(); }))
      throw CommError("no message from the " + peer_ + " within " + std::to_string(timeout_s_) + " s");
    std::string bytes = std::move(in_->messages.front());
    in_->messages.pop_front();
    return bytes;
  }

  std::string peer_name() const override { return peer_; }

 private:
  std::shared_ptr<Queue> out_, in_;
  std::string peer_;
  double timeout_s_;
};

}  // namespace

std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> local_channel_pair(double timeout_s) {
  auto up = std::make_shared<Queue>(), down = std::make_shared<Queue>();
  return {std::make_unique<LocalChannel>(up, down, "server (same process)", timeout_s),
          std::make_unique<LocalChannel>(down, up, "device (same process)", timeout_s)};
}

}  // namespace fedsplit
