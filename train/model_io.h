// Models wherever fedsplit expects one: a HF directory or a fedsplit checkpoint (.h5).
#pragma once
#include <string>

#include "core/model/decoder.h"

namespace fedsplit {

/// Loads a HF model directory (config.json + safetensors) or the model of a checkpoint.h5.
Decoder load_any_model(const std::string& path);

}  // namespace fedsplit
