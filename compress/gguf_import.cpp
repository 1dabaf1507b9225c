#include "compress/gguf_import.h"

#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <set>

#include "compress/gguf_llama.h"
#include "compress/gguf_manifest.h"
#include "compress/gguf_tensor.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

namespace sfs = std::filesystem;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool flag(const GgufMetadata& meta, const std::string& key) {
  const GgufValue* v = meta.find(key);
  return v && v->get_if<bool>() && *v->get_if<bool>();
}

}  // namespace

bool is_gguf_model_path(const std::string& path) {
  std::error_code ec;
  if (has_suffix(path, ".gguf") || sfs::path(path).filename() == "manifest.json") return true;
  return sfs::is_directory(path, ec) && sfs::is_regular_file(sfs::path(path) / "manifest.json", ec) &&
         !sfs::is_regular_file(sfs::path(path) / "config.json", ec);
}

Decoder decoder_from_gguf(const std::vector<GgufFile>& shards, const std::string& where) {
  if (shards.empty()) throw FormatError(where + ": no GGUF shards");
  const GgufMetadata& meta = shards.front().metadata;
  std::map<std::string, const GgufTensor*> tensors;
  for (const auto& shard : shards)
    for (const auto& t : shard.tensors)
      if (!tensors.emplace(t.name, &t).second) throw FormatError(where + ": tensor '" + t.name + "' appears twice");
  const bool retie = flag(meta, "fedsplit.tie_embeddings");
  if (retie) tensors.erase("output.weight");
  auto embd = tensors.find("token_embd.weight");
  if (embd == tensors.end() || embd->second->dims.size() != 2)
    throw FormatError(where + ": no 2-D tensor token_embd.weight (the model's first stage is missing?)");
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) names.insert(name);
  const DecoderConfig config =
      config_from_gguf(meta, names, static_cast<int64_t>(embd->second->dims[1]), where);
  const std::string arch = gguf_string(meta, "general.architecture", where);

  const auto expected = expected_parameters(config);
  std::map<std::string, torch::Tensor> values;
  for (const auto& [name, t] : tensors) {
    const std::string parameter = parameter_of_gguf_tensor(name);
    auto it = expected.find(parameter);
    if (parameter.empty() || it == expected.end())
      throw FormatError(where + ": unexpected tensor '" + name + "' for a " + arch + " model of " +
                        std::to_string(config.num_layers) + " layers");
    const auto sizes = torch_sizes_of(t->dims);
    if (sizes != it->second)
      throw FormatError(where + ": tensor '" + name + "' has shape " + shape_str(sizes) + ", expected " +
                        shape_str(it->second));
    auto value = dequantize_gguf_tensor(*t);
    if (const int64_t heads = rope_permute_heads(parameter, config, arch)) value = unpermute_rope_rows(value, heads);
    values[parameter] = value;
  }
  for (const auto& [parameter, shape] : expected)
    if (!values.count(parameter))
      throw FormatError(where + ": missing tensor '" + gguf_tensor_name(parameter) + "' (shape " + shape_str(shape) +
                        "; is a stage shard missing?)");
  Decoder model(config, /*init=*/false);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) item.value().copy_(values.at(item.key()));
  model->eval();
  return model;
}

Decoder import_gguf(const std::string& path) {
  std::error_code ec;
  std::string manifest_path;
  if (sfs::path(path).filename() == "manifest.json") manifest_path = path;
  else if (sfs::is_directory(path, ec)) manifest_path = (sfs::path(path) / "manifest.json").string();
  if (manifest_path.empty()) {
    if (!path_exists(path)) throw IoError(path + ": no such GGUF file");
    std::vector<GgufFile> shards{read_gguf(path)};
    const GgufValue* count = shards[0].metadata.find("fedsplit.stage_count");
    if (count && gguf_uint(shards[0].metadata, "fedsplit.stage_count", path) > 1)
      throw ConfigError(path + " is stage " + std::to_string(gguf_uint(shards[0].metadata, "fedsplit.stage", path)) +
                        " of a " + std::to_string(gguf_uint(shards[0].metadata, "fedsplit.stage_count", path)) +
                        "-stage export: pass the export's manifest.json to load the whole model");
    return decoder_from_gguf(shards, path);
  }
  const GgufManifest manifest = load_manifest(manifest_path);
  const auto dir = sfs::path(manifest_path).parent_path();
  std::vector<GgufFile> shards;
  for (const auto& st : manifest.stages) {
    const std::string file = (dir / st.file).string();
    if (!path_exists(file)) throw IoError(manifest_path + ": stage file " + file + " is missing");
    const auto bytes = static_cast<uint64_t>(sfs::file_size(file));
    if (bytes != st.bytes || blake2b_file(file) != st.blake2b)
      throw FormatError(file + " does not match " + manifest_path + " (size or BLAKE2b differ): the export is "
                        "damaged or mixed with another; export again");
    shards.push_back(read_gguf(file));
    const GgufValue* id = shards.back().metadata.find("fedsplit.export_id");
    if (!id || !id->get_if<std::string>() || *id->get_if<std::string>() != manifest.export_id)
      throw FormatError(file + ": fedsplit.export_id differs from " + manifest_path + "'s: export again");
  }
  return decoder_from_gguf(shards, manifest_path);
}

}  // namespace fedsplit
