// The parts every adapter directory shares (adapter_config.json + adapter_model.safetensors, as
// peft's save_pretrained writes them): reading and checking the config, the weights, and writing
// both. For peft/'s adapter formats; not a public API.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <string>

#include "core/io/safetensors.h"

namespace fedsplit::adapter_dir {

std::string config_path(const std::string& dir);
std::string weights_path(const std::string& dir);

/// The JSON object in the config file `path`, whose peft_type must be `expected_type` (any string
/// when empty). Throws IoError if the file is missing, FormatError if it is not a JSON object,
/// ConfigError naming the peft_type found and the one expected.
nlohmann::json read_config(const std::string& path, const std::string& expected_type);

/// The tensors of <dir>/adapter_model.safetensors; IoError naming the directory if it is missing.
TensorMap read_weights(const std::string& dir);

/// Writes the weights, then the config, each atomically; creates `dir` if needed.
void write(const std::string& dir, const nlohmann::json& config, const TensorMap& tensors);

/// "[4, 64]": a shape for error messages.
std::string shape_string(at::IntArrayRef sizes);

}  // namespace fedsplit::adapter_dir
