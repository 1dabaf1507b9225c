#include "compress/quant_record.h"

#include <torch/torch.h>

#include "core/io/safetensors.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "peft/quantized.h"

namespace fedsplit {
namespace {

constexpr const char* kFormat = "fedsplit-quantization";
constexpr const char* kSuffix = ".scales";

int64_t parse_count(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end()) throw FormatError(path + ": metadata key '" + key + "' is missing");
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used == it->second.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  throw FormatError(path + ": metadata '" + key + "' = '" + it->second + "' is not a non-negative integer");
}

}  // namespace

std::string quant_record_path(const std::string& model_dir) { return model_dir + "/quantization.safetensors"; }

void save_quant_record(const std::string& model_dir, const QuantRecord& record) {
  TensorMap tensors;
  for (const auto& [name, scales] : record.scales) tensors[name + kSuffix] = scales.to(torch::kFloat32).contiguous();
  save_safetensors(quant_record_path(model_dir), tensors,
                   {{"format", kFormat},
                    {"bits", std::to_string(record.bits)},
                    {"group_size", std::to_string(record.group_size)},
                    {"method", record.method}});
}

std::optional<QuantRecord> load_quant_record(const std::string& model_dir) {
  const std::string path = quant_record_path(model_dir);
  if (!path_exists(path)) return std::nullopt;
  const auto meta = load_safetensors_metadata(path);
  auto format = meta.find("format");
  if (format == meta.end() || format->second != kFormat)
    throw FormatError(path + ": not a fedsplit quantization record (metadata 'format' should be '" + kFormat + "')");
  QuantRecord record;
  record.bits = static_cast<int>(parse_count(meta, "bits", path));
  if (record.bits != 4 && record.bits != 8) throw FormatError(path + ": bits = " + std::to_string(record.bits) + ", expected 4 or 8");
  record.group_size = parse_count(meta, "group_size", path);
  auto method = meta.find("method");
  record.method = method == meta.end() ? "" : method->second;
  for (auto& [key, tensor] : load_safetensors(path)) {
    const size_t n = std::string(kSuffix).size();
    if (key.size() <= n || key.compare(key.size() - n, n, kSuffix) != 0 || tensor.dim() != 2 ||
        tensor.scalar_type() != torch::kFloat32)
      throw FormatError(path + ": tensor '" + key + "' is not '<weight>.scales' fp32 [out, groups]");
    if (record.group_size == 0 && tensor.size(1) != 1)
      throw FormatError(path + ": tensor '" + key + "' has " + std::to_string(tensor.size(1)) +
                        " scales per row, but group_size 0 means one per output channel");
    record.scales[key.substr(0, key.size() - n)] = tensor;
  }
  return record;
}

torch::Tensor codes_on_grid(const std::string& name, const torch::Tensor& weight, const torch::Tensor& scales,
                            int bits, double tolerance) {
  const auto w = weight.detach().to(torch::kCPU, torch::kFloat32);
  if (w.dim() != 2 || scales.dim() != 2 || scales.size(0) != w.size(0) || scales.size(1) == 0 ||
      w.size(1) % scales.size(1) != 0)
    throw DataError(name + ": scales " + std::to_string(scales.size(0)) + "x" + std::to_string(scales.size(1)) +
                    " do not fit the weight's shape");
  const auto per_input = scales.to(torch::kCPU, torch::kFloat32).repeat_interleave(w.size(1) / scales.size(1), 1);
  const auto ratio = torch::where(per_input > 0, w / per_input, torch::zeros_like(w));
  const auto codes = ratio.round();
  const double qmax = static_cast<double>(quant_max(bits));
  const double off_grid = (ratio - codes).abs().max().item<double>();
  if (codes.abs().max().item<double>() > qmax || off_grid > tolerance ||
      (w.masked_select(per_input == 0).abs().sum().item<double>() > 0))
    throw DataError(name + ": the weight is not on its recorded " + std::to_string(bits) +
                    "-bit grid (largest distance " + std::to_string(off_grid) +
                    " steps): the model was changed after quantization; quantize it again");
  return codes.to(torch::kInt8);
}

}  // namespace fedsplit
