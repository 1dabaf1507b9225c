#include "core/util/log.h"

#include <iostream>
#include <mutex>

namespace fedsplit {
namespace {
int g_rank = 0;
bool g_all_ranks = false;
LogLevel g_level = LogLevel::info;
std::mutex g_mutex;
}  // namespace

void set_log_rank(int rank, bool all_ranks) {
  g_rank = rank;
  g_all_ranks = all_ranks;
}
void set_log_level(LogLevel level) { g_level = level; }
int log_rank() { return g_rank; }

void log_line(LogLevel level, const std::string& message) {
  if (level < g_level) return;
  if (level < LogLevel::warn && g_rank != 0 && !g_all_ranks) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  std::ostream& out = level >= LogLevel::warn ? std::cerr : std::cout;
  if (g_rank != 0) out << "[rank " << g_rank << "] ";
  if (level == LogLevel::warn) out << "warning: ";
  if (level == LogLevel::error) out << "error: ";
  out << message << std::endl;
}

}  // namespace fedsplit
