#include "core/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/util/error.h"
#include "core/util/fs.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies bytes as they are"
#endif

namespace fedsplit {
namespace {

using nlohmann::json;

// The reference implementation refuses headers past 100 MB; so do we (a corrupt length field
// otherwise asks for an absurd allocation).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeCode {
  const char* name;
  torch::Dtype dtype;
};
constexpr DtypeCode kDtypes[] = {
    {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
    {"I16", torch::kInt16}, {"I8", torch::kInt8}, {"U8", torch::kUInt8},
    {"BOOL", torch::kBool},
};

bool dtype_from_name(const std::string& name, torch::Dtype* out) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *out = d.dtype;
      return true;
    }
  }
  return false;
}

struct Entry {
  std::string name;
  torch::Dtype dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct Header {
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw FormatError(path + ": " + what);
}

std::string tensor_label(const std::string& name) { return "tensor '" + name + "'"; }

// Byte size of shape x dtype, or false on overflow.
bool byte_size(const std::vector<int64_t>& shape, torch::Dtype dtype, uint64_t* out) {
  uint64_t n = c10::elementSize(dtype);
  for (int64_t d : shape) {
    const auto u = static_cast<uint64_t>(d);
    if (u != 0 && n > std::numeric_limits<uint64_t>::max() / u) return false;
    n *= u;
  }
  *out = n;
  return true;
}

Entry parse_entry(const std::string& path, const std::string& name, const json& value, uint64_t data_size) {
  const std::string who = tensor_label(name);
  if (!value.is_object()) fail(path, who + ": header entry is not an object");
  Entry e;
  e.name = name;
  auto dt = value.find("dtype");
  if (dt == value.end() || !dt->is_string()) fail(path, who + ": missing string field 'dtype'");
  if (!dtype_from_name(dt->get<std::string>(), &e.dtype)) {
    fail(path, who + ": unsupported dtype '" + dt->get<std::string>() +
                   "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  }
  auto sh = value.find("shape");
  if (sh == value.end() || !sh->is_array()) fail(path, who + ": missing array field 'shape'");
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) fail(path, who + ": shape " + sh->dump() + " is not a list of sizes");
    const auto v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(path, who + ": dimension too large");
    e.shape.push_back(static_cast<int64_t>(v));
  }
  auto off = value.find("data_offsets");
  if (off == value.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    fail(path, who + ": 'data_offsets' must be [begin, end]");
  }
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size) {
    fail(path, who + ": data_offsets " + off->dump() + " out of range (data section holds " +
                   std::to_string(data_size) + " bytes; file truncated?)");
  }
  uint64_t expected = 0;
  if (!byte_size(e.shape, e.dtype, &expected) || expected != e.end - e.begin) {
    fail(path, who + ": " + std::to_string(e.end - e.begin) + " bytes at data_offsets " + off->dump() +
                   " but shape " + sh->dump() + " of " + dt->get<std::string>() + " needs " +
                   std::to_string(expected));
  }
  return e;
}

// Parses and checks the JSON header against a data section of `data_size` bytes.
Header parse_header(const std::string& path, const char* text, size_t length, uint64_t data_size) {
  // nlohmann keeps the last of duplicate keys silently; the callback notices them.
  std::set<std::string> seen;
  std::string duplicate;
  json root;
  try {
    root = json::parse(
        text, text + length,
        [&](int depth, json::parse_event_t event, json& parsed) {
          if (depth == 1 && event == json::parse_event_t::key && parsed.is_string()) {
            if (!seen.insert(parsed.get<std::string>()).second && duplicate.empty()) {
              duplicate = parsed.get<std::string>();
            }
          }
          return true;
        });
  } catch (const json::exception& e) {
    fail(path, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!duplicate.empty()) fail(path, tensor_label(duplicate) + " appears twice in the header");
  if (!root.is_object()) fail(path, "header is not a JSON object");

  Header header;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__ value '" + m.key() + "' is not a string");
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    header.entries.push_back(parse_entry(path, it.key(), it.value(), data_size));
  }

  // The data section must be covered exactly once.
  std::vector<const Entry*> order;
  for (const auto& e : header.entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry* e : order) {
    if (e->begin < covered) {
      fail(path, tensor_label(e->name) + " overlaps " + tensor_label(previous->name) + " in the data section");
    }
    if (e->begin > covered) {
      fail(path, tensor_label(e->name) + " starts at byte " + std::to_string(e->begin) + ", leaving a hole after byte " +
                     std::to_string(covered));
    }
    covered = e->end;
    previous = e;
  }
  if (covered != data_size) {
    fail(path, std::to_string(data_size - covered) + " bytes after the last tensor belong to no tensor");
  }
  return header;
}

uint64_t read_le64(const char* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, 8);
  return v;
}

// Checks the length prefix against the file size; returns the header length.
uint64_t header_length(const std::string& path, const char* prefix, uint64_t file_size) {
  if (file_size < 8) fail(path, "file of " + std::to_string(file_size) + " bytes has no 8-byte header length");
  const uint64_t n = read_le64(prefix);
  if (n > file_size - 8) {
    fail(path, "header length " + std::to_string(n) + " is larger than the file (" + std::to_string(file_size) +
                   " bytes); not a safetensors file or truncated");
  }
  if (n > kMaxHeaderBytes) fail(path, "header length " + std::to_string(n) + " exceeds 100 MB");
  return n;
}

}  // namespace

std::string safetensors_dtype_name(torch::Dtype dtype) {
  for (const auto& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  throw FormatError(std::string("safetensors has no dtype for torch ") + c10::toString(dtype));
}

int64_t safetensors_nbytes(const torch::Tensor& tensor) {
  return tensor.numel() * static_cast<int64_t>(tensor.element_size());
}

TensorMap load_safetensors(const std::string& path) {
  const MappedFile file(path);
  const uint64_t n = header_length(path, file.data(), file.size());
  const char* data = file.data() + 8 + n;
  const Header header = parse_header(path, file.data() + 8, n, file.size() - 8 - n);
  TensorMap out;
  for (const auto& e : header.entries) {
    // memcpy into a fresh tensor: the data may be unaligned for its dtype, and the map goes away.
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    out.emplace(e.name, std::move(t));
  }
  return out;
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError("cannot read " + path + ": file missing or not readable");
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  char prefix[8] = {};
  in.read(prefix, file_size < 8 ? static_cast<std::streamsize>(file_size) : 8);
  const uint64_t n = header_length(path, prefix, file_size);
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  if (!in) throw IoError("cannot read the header of " + path);
  return parse_header(path, text.data(), text.size(), file_size - 8 - n).metadata;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__") throw FormatError(path + ": invalid tensor name '" + name + "'");
    if (!tensor.defined()) throw FormatError(path + ": " + tensor_label(name) + " is undefined");
    json entry;
    try {
      entry["dtype"] = safetensors_dtype_name(tensor.scalar_type());
    } catch (const FormatError& e) {
      throw FormatError(path + ": " + tensor_label(name) + ": " + e.what());
    }
    entry["shape"] = tensor.sizes().vec();
    const auto nbytes = static_cast<uint64_t>(safetensors_nbytes(tensor));
    entry["data_offsets"] = {offset, offset + nbytes};
    offset += nbytes;
    header[name] = std::move(entry);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError("cannot write " + tmp + ": check the directory exists and is writable");
    char prefix[8];
    const uint64_t n = text.size();
    std::memcpy(prefix, &n, 8);
    out.write(prefix, 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& [name, tensor] : tensors) {
      // One tensor at a time on the host, so that saving a GPU model needs no second copy of it.
      const auto t = tensor.detach().to(torch::kCPU).contiguous();
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(safetensors_nbytes(t)));
    }
    out.close();
    if (!out) throw IoError("failed writing " + tmp + " (disk full?)");
  });
}

}  // namespace fedsplit
