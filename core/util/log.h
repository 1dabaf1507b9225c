// Rank-aware logging: rank 0 prints by default, other ranks print with a "[rank N]" prefix only
// when asked (warnings and errors always print).
#pragma once
#include <sstream>
#include <string>

namespace fedsplit {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

/// Sets this process's rank and whether non-zero ranks print info lines.
void set_log_rank(int rank, bool all_ranks = false);
void set_log_level(LogLevel level);
int log_rank();

void log_line(LogLevel level, const std::string& message);

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream ss;
  (ss << ... << args);
  return ss.str();
}
template <typename... Args>
void log_info(const Args&... args) { log_line(LogLevel::info, cat(args...)); }
template <typename... Args>
void log_warn(const Args&... args) { log_line(LogLevel::warn, cat(args...)); }
template <typename... Args>
void log_debug(const Args&... args) { log_line(LogLevel::debug, cat(args...)); }

}  // namespace fedsplit
