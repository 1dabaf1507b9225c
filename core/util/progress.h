// Progress for long loops: a redrawn bar on a terminal, a plain line every `log_every` steps
// otherwise (logs and CI stay readable).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace fedsplit {

class Progress {
 public:
  /// `total` steps named `label`; plain lines every `log_every` steps when not on a terminal.
  Progress(std::string label, int64_t total, int64_t log_every = 10, bool enabled = true);
  /// Reports that `step` (1-based) is done, with a short status such as "loss 3.21".
  void update(int64_t step, const std::string& status);
  /// Ends the bar's line on a terminal.
  void finish();

 private:
  std::string label_;
  int64_t total_;
  int64_t log_every_;
  bool enabled_;
  bool tty_;
  bool open_line_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace fedsplit
