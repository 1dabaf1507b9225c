#include "launch/line_reader.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/util/error.h"

namespace fedsplit::cli {

LineReader::LineReader(const std::string& path, const std::string& flag) : fd_(::open(path.c_str(), O_RDONLY)), owned_(true) {
  if (fd_ < 0) throw IoError(flag + " " + path + ": cannot read it (" + std::strerror(errno) + ")");
}

LineReader::~LineReader() {
  if (owned_) ::close(fd_);
}

std::optional<std::string> LineReader::next(int timeout_ms) {
  for (;;) {
    const auto newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    if (ended_) {
      if (buffer_.empty()) return std::nullopt;
      return std::exchange(buffer_, std::string());
    }
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw IoError(std::string("cannot wait for input: ") + std::strerror(errno));
    if (ready == 0) return std::nullopt;
    char chunk[4096];
    const ssize_t n = ::read(fd_, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw IoError(std::string("cannot read input: ") + std::strerror(errno));
    if (n == 0) ended_ = true;
    buffer_.append(chunk, static_cast<size_t>(n > 0 ? n : 0));
    timeout_ms = 0;  // what is there now is read without waiting again
  }
}

}  // namespace fedsplit::cli
