// Lines from a file descriptor with a bounded wait, so that a server reading standard input can do
// other work (heartbeats to its pipeline) while no request comes.
#pragma once
#include <optional>
#include <string>

namespace fedsplit::cli {

class LineReader {
 public:
  /// Reads `fd` (not owned; 0 = standard input).
  explicit LineReader(int fd) : fd_(fd) {}
  /// Opens and reads the file `path` (IoError naming `flag` and the path if it cannot be read).
  LineReader(const std::string& path, const std::string& flag);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  /// The next line (without its newline), or nullopt when none is complete within `timeout_ms`
  /// (0 = only what is already there, -1 = wait as long as it takes) or the input has ended. A last
  /// line without a newline is returned at the end.
  std::optional<std::string> next(int timeout_ms);
  /// The input has ended and every line was returned.
  bool done() const { return ended_ && buffer_.empty(); }

 private:
  int fd_;
  bool owned_ = false;
  std::string buffer_;
  bool ended_ = false;
};

}  // namespace fedsplit::cli
