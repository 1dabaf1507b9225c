#include "compress/stage_plan.h"

#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {

std::vector<StageRange> balanced_stages(int64_t num_layers, int64_t stages) {
  if (stages < 1 || stages > num_layers)
    throw ConfigError("--stages " + std::to_string(stages) + ": a model of " + std::to_string(num_layers) +
                      " layers splits into 1 to " + std::to_string(num_layers) + " stages");
  std::vector<StageRange> out;
  int64_t begin = 0;
  for (int64_t s = 0; s < stages; ++s) {
    const int64_t size = num_layers / stages + (s < num_layers % stages ? 1 : 0);
    out.push_back({begin, begin + size, ""});
    begin += size;
  }
  return out;
}

std::vector<StageRange> parse_stage_plan(const std::string& text, int64_t num_layers, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(where + ": not JSON (" + std::string(e.what()) + "); expected {\"stages\":[{\"layers\":[0,N]}]}");
  }
  if (!j.is_object() || !j.contains("stages") || !j["stages"].is_array() || j["stages"].empty())
    throw ConfigError(where + ": expected an object with a non-empty \"stages\" array, e.g. {\"stages\":[{\"layers\":[0," +
                      std::to_string(num_layers) + "]}]}");
  for (const auto& [key, value] : j.items())
    if (key != "stages") throw ConfigError(where + ": unknown key \"" + key + "\" (a plan has only \"stages\")");
  std::vector<StageRange> out;
  int64_t expected_begin = 0;
  for (size_t i = 0; i < j["stages"].size(); ++i) {
    const auto& s = j["stages"][i];
    const std::string at = where + ": stage " + std::to_string(i);
    if (!s.is_object()) throw ConfigError(at + " is not an object {\"layers\":[begin,end]}");
    for (const auto& [key, value] : s.items())
      if (key != "layers" && key != "device")
        throw ConfigError(at + ": unknown key \"" + key + "\" (a stage has \"layers\" and optional \"device\")");
    if (!s.contains("layers") || !s["layers"].is_array() || s["layers"].size() != 2 ||
        !s["layers"][0].is_number_integer() || !s["layers"][1].is_number_integer())
      throw ConfigError(at + ": \"layers\" must be [begin, end], two integers (end exclusive)");
    StageRange r;
    r.layer_begin = s["layers"][0].get<int64_t>();
    r.layer_end = s["layers"][1].get<int64_t>();
    if (s.contains("device")) {
      if (!s["device"].is_string()) throw ConfigError(at + ": \"device\" must be a string");
      r.device = s["device"].get<std::string>();
    }
    if (r.layer_begin != expected_begin)
      throw ConfigError(at + " begins at layer " + std::to_string(r.layer_begin) + ", expected " +
                        std::to_string(expected_begin) + " (stages must be contiguous, in order, from layer 0)");
    if (r.layer_end <= r.layer_begin || r.layer_end > num_layers)
      throw ConfigError(at + ": layers [" + std::to_string(r.layer_begin) + ", " + std::to_string(r.layer_end) +
                        ") is empty or runs past the model's " + std::to_string(num_layers) + " layers");
    expected_begin = r.layer_end;
    out.push_back(r);
  }
  if (expected_begin != num_layers)
    throw ConfigError(where + ": the stages end at layer " + std::to_string(expected_begin) + " but the model has " +
                      std::to_string(num_layers) + " layers; the last stage must end at " + std::to_string(num_layers));
  return out;
}

std::vector<StageRange> load_stage_plan(const std::string& path, int64_t num_layers) {
  if (!path_exists(path)) throw IoError("--plan " + path + ": no such file");
  return parse_stage_plan(read_file(path), num_layers, path);
}

}  // namespace fedsplit
