// The quantization record of a model directory: which weights a PTQ or QAT job put on a
// quantization grid, and the grid's scales, so that an export writes the very codes the job chose
// instead of re-rounding the dequantized weights onto another grid.
//
// File: <model dir>/quantization.safetensors, beside config.json and model.safetensors (whose
// weights hold the dequantized values codes * scale, so that any HF loader runs the quantized
// model). Tensors: "<parameter>.scales" fp32 [out, in / group_size] for each quantized weight,
// named by its Decoder parameter path (e.g. "layers.0.self_attn.q_proj.weight"). Metadata:
// "format" = "fedsplit-quantization", "bits" (4 or 8), "group_size" (input features per scale; 0 =
// one scale per output channel, scales [out, 1]),
// "method" (rtn, gptq, qat, ...). Codes follow compress/rtn.h: code = round(w / scale) in
// [-qmax, qmax], qmax 7 (4 bits) or 127 (8 bits).
#pragma once
#include <torch/types.h>

#include <map>
#include <optional>
#include <string>

namespace fedsplit {

struct QuantRecord {
  int bits = 4;              ///< 4 or 8
  int64_t group_size = 32;   ///< input features per scale; 0 = per output channel
  std::string method;        ///< the job that chose the codes: rtn | gptq | qat
  /// Scales fp32 [out, in / group_size] by the Decoder parameter path of the weight they quantize.
  std::map<std::string, torch::Tensor> scales;
};

/// The record's path in a model directory.
std::string quant_record_path(const std::string& model_dir);

/// Writes the record into `model_dir` (atomically).
void save_quant_record(const std::string& model_dir, const QuantRecord& record);

/// The record of `model_dir`, or nullopt when it has none. FormatError (naming the file and what is
/// wrong) for a malformed record.
std::optional<QuantRecord> load_quant_record(const std::string& model_dir);

/// The int8 codes of `weight` [out, in] on the record's grid: round(weight / scale), checked to lie
/// in [-qmax, qmax] and to reproduce `weight` within `tolerance` * scale (the weights must be the
/// dequantized values the job saved). DataError naming `name` otherwise.
torch::Tensor codes_on_grid(const std::string& name, const torch::Tensor& weight, const torch::Tensor& scales,
                            int bits, double tolerance = 1e-3);

}  // namespace fedsplit
