// Post-training quantization of a model's projections, in place: round-to-nearest (no data) or
// GPTQ (calibration data, block by block; see compress/calibration.h). Each projection's weight is
// replaced by its dequantized values and the scales go into a QuantRecord, so that the model runs
// as quantized anywhere and GGUF export writes exactly the chosen codes.
// Embeddings, norms and the LM head stay as they are (export quantizes them as llama.cpp does).
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

#include "compress/gptq.h"
#include "compress/quant_record.h"
#include "core/model/decoder.h"

namespace fedsplit {

struct PtqOptions {
  /// rtn | gptq
  std::string method = "gptq";
  /// Bits and group size, and GPTQ's block size, dampening and column order.
  GptqOptions gptq;
};

/// Quantizes every projection of `model` (on its device) and returns the record of the scales.
/// `calibration` holds token-id batches [B, T] (GPTQ only; ignored by RTN). ConfigError (naming the
/// recipe key) for an unknown method, or GPTQ without calibration data.
QuantRecord quantize_model(Decoder& model, const std::vector<torch::Tensor>& calibration, const PtqOptions& options);

}  // namespace fedsplit
