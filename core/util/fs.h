// File-system helpers: nothing a user saved is half-written, so every output goes to a temporary
// name in the same directory and is renamed into place once complete.
#pragma once
#include <cstddef>
#include <functional>
#include <string>

namespace fedsplit {

/// Calls `write(tmp_path)` and, if it returns without throwing, renames tmp_path to `path`.
/// On failure the temporary file is removed and `path` is left as it was.
void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write);

/// Writes `text` to `path` atomically.
void write_text_atomically(const std::string& path, const std::string& text);

/// Reads a whole file; throws IoError naming the path if it cannot.
std::string read_file(const std::string& path);

/// Creates a directory and its parents; throws IoError if it cannot.
void make_dirs(const std::string& path);

bool path_exists(const std::string& path);

/// Deletes `path` and everything below it, ignoring errors (like `rm -rf`). Use this, not
/// std::filesystem::remove_all: PyTorch's CUDA libtorch.so exports its own copy of that symbol,
/// and a process that loads it crashes in remove_all.
void remove_tree(const std::string& path);

/// A read-only private mapping of a whole file (nothing mapped when it is empty); IoError naming the
/// path if it cannot be opened, examined or mapped.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const char* data() const { return data_; }  ///< null for an empty file
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

/// True if `path` ends with `suffix` (e.g. ".h5") and has something before it.
inline bool has_suffix(const std::string& path, const std::string& suffix) {
  return path.size() > suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace fedsplit
