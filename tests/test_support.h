// Helpers shared by the test programs: temporary directories, text files, expected exceptions and
// the fixtures folder. Include as "tests/test_support.h".
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "core/util/fs.h"

namespace fedsplit::testing {

/// A fresh directory under the system temp dir, named after `tag` and this process, removed with
/// its contents when the object goes. Tags must differ between directories alive at the same time.
class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_((std::filesystem::temp_directory_path() / ("fedsplit_" + tag + "_" + std::to_string(::getpid())))
                  .string()) {
    remove_tree(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  /// The path of `name` (a file or folder, which may contain '/') inside this directory.
  std::string operator/(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

 private:
  std::string path_;
};

/// Writes `text` to `path` byte for byte, creating the parent folders.
inline void write_text(const std::string& path, const std::string& text) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream out(path, std::ios::binary);
  out << text;
}

/// The whole content of `path` ("" when it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The message of the `E` that `f` throws, or "(no exception)".
template <typename E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no exception)";
}

/// Expects `fn` to throw an `E` whose message holds every one of `needles`, and returns that
/// message. No exception, or one of another type, is a failure (and returns "").
template <typename E>
std::string expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' not in: " << what;
    return what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
  return "";
}

/// expect_error, and the message is a single line.
template <typename E>
void expect_one_line_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  const std::string what = expect_error<E>(fn, needles);
  EXPECT_EQ(what.find('\n'), std::string::npos) << "one line: " << what;
}

/// The HF reference fixtures (shared/fixtures), without a trailing '/'.
inline std::string fixtures() { return FEDSPLIT_FIXTURES; }

}  // namespace fedsplit::testing
