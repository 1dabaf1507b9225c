// HF checkpoints <-> Decoder: a directory with config.json and model.safetensors (or shards with
// model.safetensors.index.json), as transformers' save_pretrained writes it.
//
// Tensor names: HF's names minus the "model." (llama, qwen2) or "transformer." (gpt2) prefix are
// Decoder's parameter names; lm_head.weight keeps its name and is absent when embeddings are tied.
// gpt2's Conv1D weights (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) are stored [in, out] by HF
// and [out, in] by Decoder: transposed on import and export. The non-persistent buffers of old
// checkpoints (gpt2 attn.bias / attn.masked_bias, llama rotary_emb.inv_freq) are skipped.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/io/safetensors.h"
#include "core/model/decoder.h"

namespace fedsplit {

/// Loads config.json and the weights of a HF model directory into an fp32 Decoder (in eval mode).
/// Throws FormatError naming the file and tensor for a missing or unexpected tensor or a shape
/// mismatch (expected vs found), ConfigError for an unsupported config, IoError for missing files.
Decoder load_hf_model(const std::string& dir);

/// Writes config.json and model.safetensors (sharded past max_shard_bytes) into `dir`, each file
/// atomically, in the parameters' dtype, with transformers' names and layouts. Throws DataError if
/// the model holds parameters with no HF counterpart (e.g. unmerged adapters).
void save_hf_model(const Decoder& model, const std::string& dir, int64_t max_shard_bytes = int64_t{2} << 30);

/// Loads a model from `path`: a HF directory (config.json + safetensors weights) for now.
Decoder load_model(const std::string& path);

/// The HF state dict of `model`: HF names and layouts (gpt2 Conv1D transposed), tied head omitted.
TensorMap to_hf_state_dict(const Decoder& model);

/// Decoder parameter names and shapes that `config` implies (what import expects).
std::map<std::string, std::vector<int64_t>> expected_parameters(const DecoderConfig& config);

/// HF tensor name of a Decoder parameter, and back ("" for a HF tensor that is skipped).
std::string hf_tensor_name(const std::string& parameter, ModelFamily family);
std::string parameter_name(const std::string& hf_tensor, ModelFamily family);
/// True for the gpt2 Conv1D weights that HF stores transposed.
bool is_transposed_in_hf(const std::string& parameter, ModelFamily family);

}  // namespace fedsplit
