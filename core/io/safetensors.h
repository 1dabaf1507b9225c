// safetensors files (https://huggingface.co/docs/safetensors), the format of HF weights.
//
// Layout: an 8-byte little-endian unsigned header length N; N bytes of UTF-8 JSON mapping each
// tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (byte offsets into
// the data section that follows the header), plus an optional "__metadata__" object of string
// values; then the data section. The data section is covered exactly: no holes, no overlaps.
// Tensors are stored row-major, little-endian.
//
// fedsplit writes the header padded with spaces to a multiple of 8 bytes and the tensors in name
// order, back to back. Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>

namespace fedsplit {

/// Named tensors, in name order.
using TensorMap = std::map<std::string, torch::Tensor>;

/// Reads every tensor of a safetensors file into owned CPU tensors. Throws IoError if the file
/// cannot be read and FormatError (naming the file and the tensor) if it is malformed.
TensorMap load_safetensors(const std::string& path);

/// Reads only the header's "__metadata__" (empty when absent).
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

/// Writes `tensors` (any device, any layout; copied to contiguous CPU) and `metadata` to `path`
/// atomically: the file appears complete or not at all.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// The safetensors dtype code ("F32", "BF16", ...) of a torch dtype; throws FormatError if
/// the format has none.
std::string safetensors_dtype_name(torch::Dtype dtype);

/// Bytes that `tensor` occupies in a safetensors file.
int64_t safetensors_nbytes(const torch::Tensor& tensor);

}  // namespace fedsplit
