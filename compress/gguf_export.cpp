#include "compress/gguf_export.h"

#include <torch/torch.h>

#include <cstring>
#include <filesystem>

#include "compress/gguf_llama.h"
#include "compress/gguf_tensor.h"
#include "compress/gguf_vocab.h"
#include "core/model/config.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

std::string join(const std::string& dir, const std::string& name) { return (std::filesystem::path(dir) / name).string(); }

GgufFileType file_type_of(GgufQuant q) {
  switch (q) {
    case GgufQuant::f32: return GgufFileType::all_f32;
    case GgufQuant::f16: return GgufFileType::mostly_f16;
    case GgufQuant::q8_0: return GgufFileType::mostly_q8_0;
    case GgufQuant::q4_0: return GgufFileType::mostly_q4_0;
  }
  return GgufFileType::all_f32;
}

// Which stage holds a parameter: the embedding the first, the final norm and head the last.
size_t stage_of(const std::string& parameter, const std::vector<StageRange>& stages) {
  const int64_t layer = gguf_block_index(gguf_tensor_name(parameter));
  if (layer < 0) return parameter == "embed_tokens.weight" ? 0 : stages.size() - 1;
  for (size_t s = 0; s < stages.size(); ++s)
    if (layer >= stages[s].layer_begin && layer < stages[s].layer_end) return s;
  throw ConfigError("layer " + std::to_string(layer) + " lies in no stage of the plan");
}

// The record applies when the quant is a block type; then its bits and group size must fit.
bool record_applies(const GgufExportOptions& o) {
  if (!o.record || (o.quant != GgufQuant::q8_0 && o.quant != GgufQuant::q4_0)) return false;
  const int want = o.quant == GgufQuant::q4_0 ? 4 : 8;
  const std::string where = o.record_source.empty() ? std::string("the quantization record") : o.record_source;
  if (o.record->bits != want)
    throw ConfigError(where + " holds " + std::to_string(o.record->bits) + "-bit codes: export with --quant " +
                      (o.record->bits == 4 ? "q4_0" : "q8_0") + " to keep them (or f16/f32 for the dequantized weights)");
  if (o.record->group_size != 32)
    throw ConfigError(where + " has group_size " + std::to_string(o.record->group_size) +
                      " but ggml blocks hold 32 values: export with --quant f16 or f32, or quantize again with group_size 32");
  return true;
}

GgufTensor lazy_tensor(const std::string& name, const torch::Tensor& value, GgmlType type, int64_t heads) {
  GgufTensor t;
  t.name = name;
  t.type = type;
  t.dims = gguf_dims_of(value.sizes().vec());
  try {
    gguf_tensor_bytes(type, t.dims);
  } catch (const DataError& e) {
    throw DataError("tensor '" + name + "': " + e.what());
  }
  const auto held = value.detach();
  t.produce = [held, type, heads]() {
    return quantize_tensor(heads > 0 ? permute_rope_rows(held, heads) : held, type);
  };
  return t;
}

GgufTensor recorded_tensor(const std::string& name, const std::string& parameter, const torch::Tensor& weight,
                           const torch::Tensor& scales, int bits, GgmlType type, int64_t heads) {
  if (weight.dim() != 2 || scales.dim() != 2 || scales.size(0) != weight.size(0) || weight.size(1) % 32 != 0 ||
      scales.size(1) != weight.size(1) / 32)
    throw FormatError("quantization record: scales of '" + parameter + "' do not fit its weight in blocks of 32");
  GgufTensor t;
  t.name = name;
  t.type = type;
  t.dims = gguf_dims_of(weight.sizes().vec());
  const auto w = weight.detach();
  const auto s = scales.detach();
  t.produce = [name, parameter, w, s, bits, type, heads]() {
    auto codes = codes_on_grid(parameter, w, s, bits);
    auto sc = s.to(torch::kFloat32);
    if (heads > 0) {
      codes = permute_rope_rows(codes, heads);
      sc = permute_rope_rows(sc, heads);
    }
    return encode_recorded_blocks(codes, sc, type, name);
  };
  return t;
}

}  // namespace

const char* to_string(GgufQuant q) {
  switch (q) {
    case GgufQuant::f32: return "f32";
    case GgufQuant::f16: return "f16";
    case GgufQuant::q8_0: return "q8_0";
    case GgufQuant::q4_0: return "q4_0";
  }
  return "?";
}

GgufQuant parse_gguf_quant(const std::string& name, const std::string& where) {
  for (GgufQuant q : {GgufQuant::f32, GgufQuant::f16, GgufQuant::q8_0, GgufQuant::q4_0})
    if (name == to_string(q)) return q;
  throw ConfigError(where + " '" + name + "' is not one of f32, f16, q8_0, q4_0");
}

GgmlType gguf_type_for(const std::string& gguf_name, int64_t dims, int64_t cols, GgufQuant quant) {
  if (quant == GgufQuant::f32 || dims < 2) return GgmlType::F32;
  if (quant == GgufQuant::f16) return GgmlType::F16;
  if (cols % 32 != 0) return GgmlType::F16;
  if (quant == GgufQuant::q4_0 && gguf_name == "output.weight") return GgmlType::Q8_0;
  return quant == GgufQuant::q4_0 ? GgmlType::Q4_0 : GgmlType::Q8_0;
}

std::vector<uint8_t> encode_recorded_blocks(const at::Tensor& codes_in, const at::Tensor& scales_in, GgmlType type,
                                            const std::string& name) {
  TORCH_CHECK(type == GgmlType::Q8_0 || type == GgmlType::Q4_0, "encode_recorded_blocks: Q8_0 or Q4_0 only");
  const auto codes = codes_in.to(torch::kCPU, torch::kInt8).contiguous();
  const auto scales = scales_in.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t rows = codes.size(0), cols = codes.size(1), blocks = cols / 32;
  TORCH_CHECK(cols % 32 == 0 && scales.size(0) == rows && scales.size(1) == blocks, "encode_recorded_blocks: shapes");
  const int lo = type == GgmlType::Q4_0 ? -8 : -128, hi = type == GgmlType::Q4_0 ? 7 : 127;
  const size_t block_bytes = type == GgmlType::Q4_0 ? 18 : 34;
  std::vector<uint8_t> out(static_cast<size_t>(rows * blocks) * block_bytes);
  const int8_t* c = codes.data_ptr<int8_t>();
  const float* s = scales.data_ptr<float>();
  uint8_t* o = out.data();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < blocks; ++b, o += block_bytes) {
      const uint16_t d = fp32_to_fp16(s[r * blocks + b]);
      o[0] = static_cast<uint8_t>(d & 0xff);
      o[1] = static_cast<uint8_t>(d >> 8);
      const int8_t* q = c + r * cols + b * 32;
      for (int j = 0; j < 32; ++j)
        if (q[j] < lo || q[j] > hi)
          throw DataError(name + ": code " + std::to_string(q[j]) + " in row " + std::to_string(r) + " is outside [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + "] of " +
                          ggml_type_name(static_cast<uint32_t>(type)));
      if (type == GgmlType::Q8_0) {
        std::memcpy(o + 2, q, 32);
      } else {
        for (int j = 0; j < 16; ++j)
          o[2 + j] = static_cast<uint8_t>((q[j] + 8) | ((q[j + 16] + 8) << 4));
      }
    }
  }
  return out;
}

GgufFile build_gguf(const Decoder& model, const GgufExportOptions& options, size_t stage, const std::string& export_id) {
  const DecoderConfig& config = model->options;
  const std::string arch = gguf_architecture(config);
  const auto stages = options.stages.empty() ? std::vector<StageRange>{{0, config.num_layers, ""}} : options.stages;
  TORCH_CHECK(stage < stages.size(), "build_gguf: stage ", stage, " of ", stages.size());
  const bool use_record = record_applies(options);
  if (use_record)
    for (const auto& [parameter, scales] : options.record->scales)
      if (model->named_parameters().find(parameter) == nullptr)
        throw FormatError(options.record_source + ": the record names '" + parameter + "', which the model lacks");

  GgufFile file;
  set_model_metadata(file.metadata, config, arch, options.name, file_type_of(options.quant));
  if (!options.tokenizer.empty()) set_tokenizer_metadata(file.metadata, options.tokenizer, config.vocab_size);
  file.metadata.set("fedsplit.export_id", export_id);
  file.metadata.set("fedsplit.stage", static_cast<uint32_t>(stage));
  file.metadata.set("fedsplit.stage_count", static_cast<uint32_t>(stages.size()));
  file.metadata.set("fedsplit.layer_begin", static_cast<uint32_t>(stages[stage].layer_begin));
  file.metadata.set("fedsplit.layer_end", static_cast<uint32_t>(stages[stage].layer_end));
  const bool tied_copy = config.tie_embeddings && stages.size() > 1;
  if (tied_copy) file.metadata.set("fedsplit.tie_embeddings", true);

  auto add = [&](const std::string& parameter, const std::string& name, const torch::Tensor& value) {
    const int64_t heads = rope_permute_heads(parameter, config, arch);
    if (use_record && options.record->scales.count(parameter)) {
      const GgmlType type = options.quant == GgufQuant::q4_0 ? GgmlType::Q4_0 : GgmlType::Q8_0;
      file.tensors.push_back(recorded_tensor(name, parameter, value, options.record->scales.at(parameter),
                                             options.record->bits, type, heads));
    } else {
      file.tensors.push_back(lazy_tensor(name, value, gguf_type_for(name, value.dim(), value.size(-1), options.quant), heads));
    }
  };
  for (const auto& item : model->named_parameters()) {
    const std::string name = gguf_tensor_name(item.key());
    if (stage_of(item.key(), stages) == stage) add(item.key(), name, item.value());
  }
  if (tied_copy && stage == stages.size() - 1) add("lm_head.weight", "output.weight", model->token_embedding());
  return file;
}

GgufManifest export_gguf(const Decoder& model, const GgufExportOptions& options, const std::string& out_dir) {
  const DecoderConfig& config = model->options;
  GgufManifest manifest;
  manifest.export_id = new_export_id();
  manifest.architecture = gguf_architecture(config);
  manifest.quant = to_string(options.quant);
  manifest.tokenizer = !options.tokenizer.empty();
  manifest.config = config_to_hf(config);
  if (record_applies(options))
    manifest.quant_record = {{"method", options.record->method},
                             {"bits", options.record->bits},
                             {"group_size", options.record->group_size}};
  const auto stages = options.stages.empty() ? std::vector<StageRange>{{0, config.num_layers, ""}} : options.stages;
  make_dirs(out_dir);
  for (size_t s = 0; s < stages.size(); ++s) {
    ManifestStage st;
    st.stage = static_cast<int64_t>(s);
    st.file = stages.size() == 1 ? "model.gguf" : "stage-" + std::to_string(s) + ".gguf";
    st.layer_begin = stages[s].layer_begin;
    st.layer_end = stages[s].layer_end;
    st.device = stages[s].device;
    const std::string path = join(out_dir, st.file);
    write_gguf(path, build_gguf(model, options, s, manifest.export_id));
    st.bytes = static_cast<uint64_t>(std::filesystem::file_size(path));
    st.blake2b = blake2b_file(path);
    manifest.stages.push_back(st);
  }
  save_manifest(join(out_dir, "manifest.json"), manifest);
  return manifest;
}

}  // namespace fedsplit
