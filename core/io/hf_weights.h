// The weights of a HF model directory, as `save_pretrained` writes them: either one
// `model.safetensors`, or shards `model-00001-of-0000N.safetensors` listed by
// `model.safetensors.index.json` ({"metadata": {"total_size": bytes}, "weight_map": {tensor: file}}).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "core/io/safetensors.h"

namespace fedsplit {

/// Default shard size of save_hf_weights, the largest file transformers writes by default.
inline constexpr int64_t kDefaultMaxShardBytes = int64_t{2} << 30;

/// Loads every tensor of `dir`: `model.safetensors`, or else the shards of
/// `model.safetensors.index.json`, each checked to exist and to hold exactly the tensors the index
/// lists for it. If `source_files` is given, it receives the file each tensor came from (for error
/// messages). Throws IoError if neither file exists, FormatError if they disagree.
TensorMap load_hf_weights(const std::string& dir, std::map<std::string, std::string>* source_files = nullptr);

/// Writes `tensors` into `dir` (created if needed): one `model.safetensors` if they fit in
/// `max_shard_bytes`, else shards of at most that size (a larger tensor gets a shard of its own)
/// plus the index. Each file is written atomically; weights files of the other layout left from an
/// earlier save are removed so that loading finds the new ones.
void save_hf_weights(const std::string& dir, const TensorMap& tensors, int64_t max_shard_bytes = kDefaultMaxShardBytes);

}  // namespace fedsplit
