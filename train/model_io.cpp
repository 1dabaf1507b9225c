#include "train/model_io.h"

#include <nlohmann/json.hpp>

#include "core/model/hf.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "train/checkpoint.h"

namespace fedsplit {

Decoder load_any_model(const std::string& path) {
  const bool is_checkpoint = has_suffix(path, ".h5");
  if (!is_checkpoint) return load_hf_model(path);
  const CheckpointMeta meta = read_checkpoint_meta(path);
  const auto extra = nlohmann::json::parse(meta.extra, nullptr, /*allow_exceptions=*/false);
  if (extra.is_object() && extra.contains("adapter"))
    throw ConfigError(path + " holds only the " + extra["adapter"].get<std::string>() + " adapter of a fine-tuning run on " +
                      extra.value("base_model", std::string("its base model")) +
                      ": load that base model with the run's adapter/ directory (--model BASE --adapter RUN_DIR/adapter)");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(meta.model_config);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": the model config stored in the checkpoint is not valid JSON (" + e.what() + ")");
  }
  Decoder model(config_from_hf(config, path + ":model_config"), /*init=*/false);
  NamedTensors params;
  for (const auto& item : model->named_parameters()) params.emplace_back(item.key(), item.value());
  load_checkpoint(path, params, nullptr, /*restore_rng=*/false);
  model->eval();
  return model;
}

}  // namespace fedsplit
