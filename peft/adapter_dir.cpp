#include "peft/adapter_dir.h"

#include <filesystem>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit::adapter_dir {

std::string config_path(const std::string& dir) { return (std::filesystem::path(dir) / "adapter_config.json").string(); }

std::string weights_path(const std::string& dir) {
  return (std::filesystem::path(dir) / "adapter_model.safetensors").string();
}

nlohmann::json read_config(const std::string& path, const std::string& expected_type) {
  if (!path_exists(path)) throw IoError(path + " does not exist: an adapter directory holds adapter_config.json");
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": not valid JSON (" + std::string(e.what()) + ")");
  }
  if (!c.is_object()) throw FormatError(path + ": expected a JSON object");
  if (!c.contains("peft_type") || !c["peft_type"].is_string()) throw FormatError(path + ": no string key peft_type");
  const std::string type = c["peft_type"];
  if (!expected_type.empty() && type != expected_type)
    throw ConfigError(path + ": peft_type '" + type + "' where " + expected_type + " was expected");
  return c;
}

TensorMap read_weights(const std::string& dir) {
  const std::string path = weights_path(dir);
  if (!path_exists(path))
    throw IoError(dir + " has no adapter_model.safetensors (a pickled adapter_model.bin is not supported: re-save it "
                        "with safetensors)");
  return load_safetensors(path);
}

void write(const std::string& dir, const nlohmann::json& config, const TensorMap& tensors) {
  make_dirs(dir);
  save_safetensors(weights_path(dir), tensors, {{"format", "pt"}});
  write_text_atomically(config_path(dir), config.dump(2) + "\n");
}

std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

}  // namespace fedsplit::adapter_dir
