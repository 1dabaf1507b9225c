// Helpers for tests that run the fedsplit executable as a user would.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "tests/test_support.h"

namespace fedsplit::testing {

struct CommandResult {
  int exit_code = -1;
  std::string output;  ///< stdout and stderr together
};

/// Runs the shell command `cmd`, capturing its output (add 2>&1 for stderr).
inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// Whether the shell finds `program` on PATH.
inline bool have_command(const std::string& program) {
  return run_command("command -v '" + program + "' >/dev/null 2>&1").exit_code == 0;
}

/// Runs `fedsplit <args>` in `cwd`, capturing its output.
inline CommandResult run_fedsplit(const std::string& args, const std::string& cwd = ".") {
  return run_command("cd '" + cwd + "' && '" + std::string(FEDSPLIT_BINARY) + "' " + args + " 2>&1");
}

}  // namespace fedsplit::testing
