// Helpers for tests that run the fedsplit executable as a user would.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include <sstream>
#include <vector>

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

/// The lines of `text` that are JSON objects, parsed (a command's answers; other lines skipped).
inline std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
  return out;
}

/// Writes `recipe` as <tmp>/<name>.ini, runs it (expecting success) and returns <tmp>/<name>, the run
/// directory such recipes name.
inline std::string run_ok(const TempDir& tmp, const std::string& name, const std::string& recipe) {
  write_text(tmp / (name + ".ini"), recipe);
  const auto r = run_fedsplit("run " + (tmp / (name + ".ini")));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return tmp / name;
}

/// A test suite whose tests share one scratch folder, *tmp_, made once before the first of them
/// (Derived::prepare() trains or exports what they read; Derived::kDirName names the folder) and
/// removed after the last.
template <class Derived>
class SharedDirSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir(Derived::kDirName);
    Derived::prepare();
  }
  static void TearDownTestSuite() {
    delete tmp_;
    tmp_ = nullptr;
  }
  static inline TempDir* tmp_ = nullptr;
};

/// A recipe training a tiny llama (2 blocks of 32, 30 steps) on the fixture text into tmp/base,
/// the model the engine's CLI tests export.
inline std::string tiny_base_recipe(const TempDir& tmp) {
  const std::string tokenizers = fixtures() + "/hf-tiny/tokenizers/";
  return "[run]\ndir = " + (tmp / "base") + "\nseed = 7\nthreads = 2\ndevice = cpu\n\n[data]\ncorpus = " + tokenizers +
         "training-text.txt\ntokenizer = " + tokenizers + "spm-bpe.model\nseq_len = 32\nbatch_size = 8\n"
         "val_fraction = 0.1\ncache_dir = " + (tmp / "cache") +
         "\n\n[model]\nhidden_size = 32\nlayers = 2\nheads = 4\nkv_heads = 2\nmax_position = 64\n\n"
         "[train]\nsteps = 30\nlr = 1e-2\nwarmup_steps = 2\neval_every = 0\neval_batches = 1\n";
}

}  // namespace fedsplit::testing
