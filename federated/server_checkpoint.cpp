#include "federated/server_checkpoint.h"

#include <algorithm>

#include "core/io/hdf5.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

constexpr const char* kFormat = "fedsplit-server-checkpoint";
constexpr int64_t kVersion = 1;

// HDF5 reads '/' as a path separator: tensor names keep theirs as '|'.
std::string stored_name(std::string name) {
  std::replace(name.begin(), name.end(), '/', '|');
  return name;
}

void write_group(const h5::Group& file, const std::string& group, const TensorMap& tensors) {
  auto g = file.create_group(group);
  for (const auto& [name, t] : tensors) g.write_tensor(stored_name(name), t.detach().to(torch::kCPU).contiguous());
}

TensorMap read_group(const h5::Group& file, const std::string& group) {
  TensorMap out;
  if (!file.has(group)) return out;
  auto g = file.group(group);
  for (auto name : g.children()) {
    torch::Tensor t = g.read_tensor(name);
    std::replace(name.begin(), name.end(), '|', '/');
    out[name] = t;
  }
  return out;
}

}  // namespace

void save_server_checkpoint(const std::string& path, const ServerCheckpoint& c) {
  write_atomically(path, [&](const std::string& tmp) {
    auto file = h5::Group::create_file(tmp, /*overwrite=*/true);
    file.set_attr("format", std::string(kFormat));
    file.set_attr("version", kVersion);
    file.set_attr("round", c.round);
    file.set_attr("optimizer_rounds", c.optimizer_rounds);
    file.set_attr("recipe", c.recipe);
    file.set_attr("extra", c.extra);
    write_group(file, "global", c.global);
    write_group(file, "state", c.optimizer_state);
    write_group(file, "base", c.base);
  });
}

ServerCheckpoint load_server_checkpoint(const std::string& path) {
  auto file = h5::Group::open_file(path);
  if (!file.has_attr("format") || file.attr_string("format") != kFormat)
    throw FormatError(path + " is not a federated server checkpoint (a train run's checkpoint?): resume it with the "
                      "recipe that wrote it");
  if (file.attr_int("version") != kVersion)
    throw FormatError(path + " is server checkpoint version " + std::to_string(file.attr_int("version")) +
                      "; this fedsplit reads version " + std::to_string(kVersion));
  ServerCheckpoint c;
  c.round = file.attr_int("round");
  c.optimizer_rounds = file.attr_int("optimizer_rounds");
  c.recipe = file.attr_string("recipe");
  c.extra = file.attr_string("extra");
  c.global = read_group(file, "global");
  c.optimizer_state = read_group(file, "state");
  c.base = read_group(file, "base");
  return c;
}

}  // namespace fedsplit
