#include "core/util/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/util/log.h"

namespace fedsplit {

Progress::Progress(std::string label, int64_t total, int64_t log_every, bool enabled)
    : label_(std::move(label)),
      total_(total),
      log_every_(log_every > 0 ? log_every : 1),
      enabled_(enabled && log_rank() == 0),
      tty_(::isatty(STDOUT_FILENO) != 0),
      start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t step, const std::string& status) {
  if (!enabled_) return;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = secs > 0 ? step / secs : 0.0;
  if (tty_) {
    const int width = 30;
    const int filled = total_ > 0 ? static_cast<int>(width * step / total_) : 0;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::printf("\r%s [%s] %lld/%lld %s (%.2f it/s)   ", label_.c_str(), bar.c_str(),
                static_cast<long long>(step), static_cast<long long>(total_), status.c_str(), rate);
    std::fflush(stdout);
    open_line_ = true;
    if (step >= total_) finish();
  } else if (step % log_every_ == 0 || step == total_ || step == 1) {
    log_info(label_, " ", step, "/", total_, " ", status);
  }
}

void Progress::finish() {
  if (open_line_) {
    std::printf("\n");
    std::fflush(stdout);
    open_line_ = false;
  }
}

}  // namespace fedsplit
