#include "compress/gguf_tensor.h"

#include <torch/torch.h>

#include "core/util/error.h"

namespace fedsplit {

std::vector<uint64_t> gguf_dims_of(const std::vector<int64_t>& torch_sizes) {
  std::vector<uint64_t> dims;
  for (auto it = torch_sizes.rbegin(); it != torch_sizes.rend(); ++it) {
    if (*it < 0) throw DataError("negative tensor size " + std::to_string(*it));
    dims.push_back(static_cast<uint64_t>(*it));
  }
  return dims;
}

std::vector<int64_t> torch_sizes_of(const std::vector<uint64_t>& gguf_dims) {
  std::vector<int64_t> sizes;
  for (auto it = gguf_dims.rbegin(); it != gguf_dims.rend(); ++it) sizes.push_back(static_cast<int64_t>(*it));
  return sizes;
}

std::vector<uint8_t> quantize_tensor(const at::Tensor& tensor, GgmlType type) {
  TORCH_CHECK(tensor.defined(), "quantize_tensor: undefined tensor");
  if (tensor.dim() < 1 || tensor.dim() > static_cast<int64_t>(kGgufMaxDims)) {
    throw DataError("quantize_tensor: a tensor of " + std::to_string(tensor.dim()) + " dims (GGUF holds 1 to 4)");
  }
  const auto values = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t cols = values.size(-1);
  const int64_t rows = cols == 0 ? 0 : values.numel() / cols;
  return quantize_rows(type, values.data_ptr<float>(), rows, cols);
}

GgufTensor gguf_tensor_from_torch(const std::string& name, const at::Tensor& tensor, GgmlType type) {
  TORCH_CHECK(tensor.defined(), "gguf_tensor_from_torch: undefined tensor '", name, "'");
  GgufTensor out;
  out.name = name;
  out.type = type;
  out.dims = gguf_dims_of(tensor.sizes().vec());
  try {
    if (!ggml_type_has_codec(type)) {
      throw DataError("ggml type " + ggml_type_name(static_cast<uint32_t>(type)) +
                      " has no encoder here (supported: F32 F16 Q8_0 Q4_0)");
    }
    gguf_tensor_bytes(type, out.dims);  // checks dims and blocks
  } catch (const DataError& e) {
    throw DataError("tensor '" + name + "': " + e.what());
  }
  const auto held = tensor.detach();
  out.produce = [held, type]() { return quantize_tensor(held, type); };
  return out;
}

at::Tensor dequantize_gguf_tensor(const GgufTensor& tensor) {
  try {
    const uint64_t bytes = gguf_tensor_bytes(tensor.type, tensor.dims);
    if (tensor.data.size() != bytes) {
      throw DataError("holds " + std::to_string(tensor.data.size()) + " bytes, its dims and type need " +
                      std::to_string(bytes));
    }
    auto out = torch::empty(torch_sizes_of(tensor.dims), torch::kFloat32);
    dequantize_values(tensor.type, tensor.data.data(), out.numel(), out.data_ptr<float>());
    return out;
  } catch (const DataError& e) {
    throw DataError("tensor '" + tensor.name + "': " + e.what());
  }
}

}  // namespace fedsplit
