// RAII wrapper over the HDF5 C API: files, groups, datasets of tensors and scalar/string attributes.
// Every call's result is checked; failures throw IoError/FormatError naming the file and object.
// Used by token shards (core/data) and checkpoints (train/).
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace fedsplit::h5 {

/// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(Handle&& other) noexcept { *this = std::move(other); }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t id() const { return id_; }
  void reset();

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

/// An open HDF5 file, or a group inside one. Paths are '/'-separated, relative to this group.
class Group {
 public:
  /// Creates a new file (fails if it exists unless `overwrite`).
  static Group create_file(const std::string& path, bool overwrite = false);
  /// Opens an existing file read-only (or read-write); a truncated or non-HDF5 file is a FormatError.
  static Group open_file(const std::string& path, bool writable = false);

  bool has(const std::string& name) const;
  Group create_group(const std::string& name) const;
  Group group(const std::string& name) const;
  /// Names of the direct children (groups and datasets), sorted.
  std::vector<std::string> children() const;

  /// Writes a CPU tensor (float32/64, int32/64, uint8, int8, bool as uint8, bfloat16/half as
  /// float32) as a dataset; `chunk_rows` > 0 chunks along dim 0 and compresses with deflate.
  void write_tensor(const std::string& name, const at::Tensor& tensor, int64_t chunk_rows = 0,
                    bool compress = false) const;
  /// Reads a dataset into a CPU tensor of its stored type.
  at::Tensor read_tensor(const std::string& name) const;
  /// Reads rows [begin, end) of dataset `name` along dim 0 (no need to load the rest).
  at::Tensor read_rows(const std::string& name, int64_t begin, int64_t end) const;
  /// Shape of dataset `name`.
  std::vector<int64_t> shape(const std::string& name) const;

  void set_attr(const std::string& key, const std::string& value) const;
  void set_attr(const std::string& key, int64_t value) const;
  void set_attr(const std::string& key, double value) const;
  bool has_attr(const std::string& key) const;
  std::string attr_string(const std::string& key) const;
  int64_t attr_int(const std::string& key) const;
  double attr_double(const std::string& key) const;

  /// Writes/reads a list of strings as a variable-length string dataset.
  void write_strings(const std::string& name, const std::vector<std::string>& values) const;
  std::vector<std::string> read_strings(const std::string& name) const;

  hid_t id() const { return handle_.id(); }
  /// The file path and object path, for error messages ("runs/x/ckpt.h5:/model").
  std::string where(const std::string& child = "") const;

 private:
  Group(Handle handle, std::string file, std::string path)
      : handle_(std::move(handle)), file_(std::move(file)), path_(std::move(path)) {}
  Handle handle_;
  std::string file_;
  std::string path_;
};

}  // namespace fedsplit::h5
