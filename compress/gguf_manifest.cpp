#include "compress/gguf_manifest.h"

#include <sodium.h>

#include <cstdio>
#include <fstream>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

std::string hex(const unsigned char* bytes, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
  return out;
}

void init_sodium() {
  if (sodium_init() < 0) throw IoError("libsodium failed to initialise");
}

}  // namespace

std::string new_export_id() {
  init_sodium();
  unsigned char id[16];
  randombytes_buf(id, sizeof id);
  return hex(id, sizeof id);
}

std::string blake2b_file(const std::string& path) {
  init_sodium();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read " + path + " to hash it");
  crypto_generichash_state state;
  unsigned char out[32];
  crypto_generichash_init(&state, nullptr, 0, sizeof out);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = in.gcount();
    if (n > 0) crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(buf.data()), static_cast<unsigned long long>(n));
  }
  if (in.bad()) throw IoError("error reading " + path + " to hash it");
  crypto_generichash_final(&state, out, sizeof out);
  return hex(out, sizeof out);
}

void save_manifest(const std::string& path, const GgufManifest& m) {
  nlohmann::json j;
  j["format"] = kManifestFormat;
  j["version"] = 1;
  j["export_id"] = m.export_id;
  j["architecture"] = m.architecture;
  j["quant"] = m.quant;
  j["quant_record"] = m.quant_record;
  j["tokenizer"] = m.tokenizer;
  j["config"] = m.config;
  j["stages"] = nlohmann::json::array();
  for (const auto& s : m.stages)
    j["stages"].push_back({{"stage", s.stage},
                           {"file", s.file},
                           {"layers", {s.layer_begin, s.layer_end}},
                           {"device", s.device},
                           {"bytes", s.bytes},
                           {"blake2b", s.blake2b}});
  write_text_atomically(path, j.dump(2) + "\n");
}

GgufManifest load_manifest(const std::string& path) {
  if (!path_exists(path)) throw IoError(path + ": no such manifest");
  GgufManifest m;
  try {
    const auto j = nlohmann::json::parse(read_file(path));
    if (j.value("format", "") != kManifestFormat)
      throw FormatError(path + ": not a fedsplit GGUF export manifest (\"format\" should be \"" + kManifestFormat + "\")");
    if (j.at("version").get<int>() != 1)
      throw FormatError(path + ": manifest version " + j.at("version").dump() + " is not 1: use a newer fedsplit");
    m.export_id = j.at("export_id").get<std::string>();
    m.architecture = j.at("architecture").get<std::string>();
    m.quant = j.at("quant").get<std::string>();
    m.quant_record = j.value("quant_record", nlohmann::json());
    m.tokenizer = j.value("tokenizer", false);
    m.config = j.at("config");
    for (const auto& s : j.at("stages")) {
      ManifestStage st;
      st.stage = s.at("stage").get<int64_t>();
      st.file = s.at("file").get<std::string>();
      st.layer_begin = s.at("layers").at(0).get<int64_t>();
      st.layer_end = s.at("layers").at(1).get<int64_t>();
      st.device = s.value("device", "");
      st.bytes = s.at("bytes").get<uint64_t>();
      st.blake2b = s.at("blake2b").get<std::string>();
      if (st.file.empty() || st.file.find('/') != std::string::npos || st.file[0] == '.')
        throw FormatError(path + ": stage file '" + st.file + "' must be a plain file name in the export directory");
      m.stages.push_back(st);
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": malformed manifest (" + std::string(e.what()) + ")");
  }
  if (m.stages.empty()) throw FormatError(path + ": the manifest lists no stages");
  return m;
}

}  // namespace fedsplit
