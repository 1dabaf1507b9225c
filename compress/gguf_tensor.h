// Torch tensors to and from GGUF tensors: shapes (GGUF dims are innermost first, so a torch
// [rows, cols] tensor has dims {cols, rows}), quantization on write and dequantization on read.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "compress/gguf.h"

namespace at {
class Tensor;
}

namespace fedsplit {

/// GGUF dims of a torch shape: the sizes reversed.
std::vector<uint64_t> gguf_dims_of(const std::vector<int64_t>& torch_sizes);

/// The torch shape of GGUF dims: reversed back.
std::vector<int64_t> torch_sizes_of(const std::vector<uint64_t>& gguf_dims);

/// `tensor` (1 to 4 dims, any float dtype and device) encoded as `type`, rows along its last
/// dimension. DataError if that dimension is not a whole number of the type's blocks.
std::vector<uint8_t> quantize_tensor(const at::Tensor& tensor, GgmlType type);

/// A GGUF tensor that holds `tensor` and encodes it as `type` when the file is written (checked
/// now, so a bad shape fails here rather than halfway through writing a file).
GgufTensor gguf_tensor_from_torch(const std::string& name, const at::Tensor& tensor, GgmlType type);

/// A float32 CPU tensor of the torch shape of `tensor`'s dims, decoded from its bytes (types F32,
/// F16, Q8_0, Q4_0; DataError naming the tensor otherwise).
at::Tensor dequantize_gguf_tensor(const GgufTensor& tensor);

}  // namespace fedsplit
