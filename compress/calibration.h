// Calibration for post-training compression: calibration batches run through a model one block
// at a time, as GPTQ and Wanda do. Each block's projections are observed on inputs that already
// carry the changes made to earlier blocks; after a block is changed, its outputs are recomputed
// with the change, so that every block compensates for what came before it.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/model/decoder.h"

namespace fedsplit {

/// Module paths of block `layer`'s projections in forward order (llama/qwen2:
/// layers.N.self_attn.{q,k,v,o}_proj, layers.N.mlp.{gate,up,down}_proj; gpt2: h.N.attn.c_attn, ...).
std::vector<std::string> block_projection_paths(const Decoder& model, int64_t layer);

/// The module paths of every block's projections, block by block (not the LM head).
std::vector<std::string> all_block_projection_paths(const Decoder& model);

/// The projection at a module path from projection_paths.
ProjectionImpl& projection_at(const Decoder& model, const std::string& path);

/// Called with a projection's module path and one batch of its inputs [B, T, in].
using InputObserver = std::function<void(const std::string& path, const torch::Tensor& inputs)>;

/// For each block in order, without gradients and in eval mode: runs every batch of `input_ids`
/// ([B, T] each) through the block while `observe` sees its projections' inputs, then calls
/// `change(layer)`, then recomputes the block's outputs for the next block. The model's modules
/// are the same afterwards; only what `change` does to them remains.
void calibrate_blockwise(Decoder& model, const std::vector<torch::Tensor>& input_ids, const InputObserver& observe,
                         const std::function<void(int64_t layer)>& change);

}  // namespace fedsplit
