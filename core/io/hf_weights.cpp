#include "core/io/hf_weights.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

using nlohmann::json;

const char* const kSingleFile = "model.safetensors";
const char* const kIndexFile = "model.safetensors.index.json";

std::string join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

// weight_map of an index file: tensor name -> shard file name.
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  json index;
  try {
    index = json::parse(read_file(index_path));
  } catch (const json::exception& e) {
    throw FormatError(index_path + ": not valid JSON (" + e.what() + ")");
  }
  auto wm = index.find("weight_map");
  if (!index.is_object() || wm == index.end() || !wm->is_object()) {
    throw FormatError(index_path + ": missing object 'weight_map'");
  }
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) throw FormatError(index_path + ": weight_map entry '" + it.key() + "' is not a file name");
    const auto file = it.value().get<std::string>();
    // Shards live next to the index; anything else would read outside the model directory.
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      throw FormatError(index_path + ": weight_map entry '" + it.key() + "' names '" + file +
                        "', not a file in the same directory");
    }
    out[it.key()] = file;
  }
  return out;
}

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

// Files of an earlier sharded save in `dir` (none if there is no readable index).
std::set<std::string> previous_shards(const std::string& dir) {
  std::set<std::string> files;
  const auto index_path = join(dir, kIndexFile);
  if (!path_exists(index_path)) return files;
  try {
    for (const auto& [name, file] : read_weight_map(index_path)) files.insert(file);
  } catch (const Error&) {
    // An unreadable old index is replaced anyway; its shards cannot be identified.
  }
  return files;
}

void remove_file(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  if (ec) throw IoError("cannot remove stale " + path + ": " + ec.message());
}

const std::map<std::string, std::string> kShardMetadata = {{"format", "pt"}};  // transformers checks it

}  // namespace

TensorMap load_hf_weights(const std::string& dir, std::map<std::string, std::string>* source_files) {
  const auto single = join(dir, kSingleFile);
  if (path_exists(single)) {
    TensorMap tensors = load_safetensors(single);
    if (source_files != nullptr) {
      for (const auto& [name, t] : tensors) (*source_files)[name] = single;
    }
    return tensors;
  }
  const auto index_path = join(dir, kIndexFile);
  if (!path_exists(index_path)) {
    throw IoError("no " + std::string(kSingleFile) + " or " + kIndexFile + " in " + dir +
                  " (only safetensors weights are read; convert pytorch_model.bin first)");
  }
  const auto weight_map = read_weight_map(index_path);
  std::map<std::string, std::vector<std::string>> by_file;
  for (const auto& [name, file] : weight_map) by_file[file].push_back(name);
  for (const auto& [file, names] : by_file) {
    if (!path_exists(join(dir, file))) {
      throw FormatError(index_path + ": shard " + file + " (holding tensor '" + names.front() + "') does not exist");
    }
  }
  TensorMap out;
  for (const auto& [file, names] : by_file) {
    const auto path = join(dir, file);
    TensorMap shard = load_safetensors(path);
    for (const auto& name : names) {
      auto it = shard.find(name);
      if (it == shard.end()) throw FormatError(path + ": tensor '" + name + "' listed in " + kIndexFile + " is missing");
      out[name] = std::move(it->second);
      if (source_files != nullptr) (*source_files)[name] = path;
      shard.erase(it);
    }
    if (!shard.empty()) {
      throw FormatError(path + ": tensor '" + shard.begin()->first + "' is not listed for this file in " + kIndexFile);
    }
  }
  return out;
}

void save_hf_weights(const std::string& dir, const TensorMap& tensors, int64_t max_shard_bytes) {
  if (max_shard_bytes <= 0) throw ConfigError("save_hf_weights: max_shard_bytes must be positive");
  make_dirs(dir);
  const auto stale_shards = previous_shards(dir);

  // Greedy in name order, like transformers: a shard closes when the next tensor would overflow it.
  std::vector<TensorMap> shards(1);
  int64_t shard_bytes = 0;
  int64_t total = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t n = safetensors_nbytes(t);
    if (shard_bytes > 0 && shard_bytes + n > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace(name, t);
    shard_bytes += n;
    total += n;
  }

  std::set<std::string> written;
  if (shards.size() == 1) {
    save_safetensors(join(dir, kSingleFile), tensors, kShardMetadata);
    written.insert(kSingleFile);
    if (path_exists(join(dir, kIndexFile))) remove_file(join(dir, kIndexFile));
  } else {
    json weight_map = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const auto file = shard_name(i, shards.size());
      save_safetensors(join(dir, file), shards[i], kShardMetadata);
      written.insert(file);
      for (const auto& [name, t] : shards[i]) weight_map[name] = file;
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_text_atomically(join(dir, kIndexFile), index.dump(2) + "\n");
    // A leftover single file would win over the new index when loading.
    if (path_exists(join(dir, kSingleFile))) remove_file(join(dir, kSingleFile));
  }
  for (const auto& file : stale_shards) {
    if (written.count(file) == 0 && path_exists(join(dir, file))) remove_file(join(dir, file));
  }
}

}  // namespace fedsplit
