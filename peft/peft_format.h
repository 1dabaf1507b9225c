// PEFT LoRA adapters, as peft's save_pretrained writes them: a directory with
//   adapter_config.json        LoraConfig: peft_type "LORA", r, lora_alpha, lora_dropout,
//                              target_modules (list of names), use_rslora, rank_pattern,
//                              alpha_pattern, fan_in_fan_out, bias "none", use_dora, ...
//   adapter_model.safetensors  base_model.model.<HF module path>.lora_A.weight  [r, in]
//                              base_model.model.<HF module path>.lora_B.weight  [out, r]
//                              base_model.model.<HF module path>.lora_magnitude_vector  [out]
//                                (DoRA only; no ".weight" suffix)
// The HF module path keeps the "model."/"transformer." prefix (e.g.
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight). For gpt2's Conv1D projections
// PEFT also stores A [r, in] and B [out, r]: fan_in_fan_out concerns only the base weight's layout,
// which fedsplit already handles on import; DoRA's magnitude is per output feature there too (the
// norm of each output's weight column of Conv1D, i.e. each row of fedsplit's [out, in] weight).
//
// Features fedsplit does not implement (trained biases, modules_to_save, layer subsets,
// regex target_modules, ...) are refused with a ConfigError naming the key.
#pragma once
#include <string>

#include "core/model/decoder.h"
#include "peft/lora.h"

namespace fedsplit {

/// The LoraOptions of an adapter_config.json. Throws IoError if unreadable, FormatError if not
/// JSON or a key has the wrong type, ConfigError naming the key for an unsupported feature.
LoraOptions read_adapter_config(const std::string& path);

/// PEFT's tensor name of a LoRA parameter: "layers.0.self_attn.q_proj.lora_A" ->
/// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"; DoRA's ".lora_magnitude" ->
/// "base_model.model.<HF module path>.lora_magnitude_vector".
std::string peft_tensor_name(const std::string& lora_parameter, ModelFamily family);

/// Applies LoRA to `model` as the adapter in `dir` configures it and loads its weights. Throws
/// FormatError naming the file and tensor for a missing or unexpected tensor or a shape mismatch
/// (expected vs found), ConfigError for unsupported configs, IoError for missing files.
void load_adapter(Decoder& model, const std::string& dir);

/// Writes the LoRA adapters of `model` (unmerged values; with DoRA also the magnitudes and
/// use_dora true) to `dir` (created if needed) in PEFT's format, each file atomically. Throws
/// DataError if the model has no LoRA projections, or if they do not all agree on use_dora.
void save_adapter(const Decoder& model, const std::string& dir);

}  // namespace fedsplit
