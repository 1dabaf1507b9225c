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

/// Runs `fedsplit <args>` in `cwd`, capturing its output.
inline CommandResult run_fedsplit(const std::string& args, const std::string& cwd = ".") {
  const std::string cmd = "cd '" + cwd + "' && '" + std::string(FEDSPLIT_BINARY) + "' " + args + " 2>&1";
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

}  // namespace fedsplit::testing
