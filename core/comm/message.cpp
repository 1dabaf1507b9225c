#include "core/comm/message.h"

#include <cstring>

#include "core/util/error.h"

namespace fedsplit {
namespace {

constexpr char kMagic[4] = {'F', 'S', 'M', '1'};

const std::map<std::string, torch::Dtype>& dtypes() {
  static const std::map<std::string, torch::Dtype> table = {
      {"float32", torch::kFloat32}, {"float16", torch::kFloat16}, {"bfloat16", torch::kBFloat16},
      {"float64", torch::kFloat64}, {"int64", torch::kInt64},     {"int32", torch::kInt32},
      {"uint8", torch::kUInt8}};
  return table;
}

std::string dtype_name(torch::Dtype dtype) {
  for (const auto& [name, d] : dtypes())
    if (d == dtype) return name;
  throw DataError(std::string("a message cannot carry dtype ") + c10::toString(dtype));
}

}  // namespace

int64_t payload_bytes(const TensorMap& tensors) {
  int64_t n = 0;
  for (const auto& [name, t] : tensors) n += t.numel() * static_cast<int64_t>(t.element_size());
  return n;
}

std::string encode_message(const Message& m) {
  nlohmann::json header{{"meta", m.meta}, {"tensors", nlohmann::json::array()}};
  int64_t offset = 0;
  std::vector<torch::Tensor> host;
  for (const auto& [name, t] : m.tensors) {
    host.push_back(t.detach().to(torch::kCPU).contiguous());
    const int64_t nbytes = host.back().numel() * static_cast<int64_t>(host.back().element_size());
    header["tensors"].push_back({{"name", name}, {"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()},
                                 {"offset", offset}, {"nbytes", nbytes}});
    offset += nbytes;
  }
  const std::string text = header.dump();
  const uint64_t header_len = text.size();
  std::string out(4 + 8 + text.size() + static_cast<size_t>(offset), '\0');
  std::memcpy(&out[0], kMagic, 4);
  std::memcpy(&out[4], &header_len, 8);
  std::memcpy(&out[12], text.data(), text.size());
  char* payload = &out[12 + text.size()];
  int64_t at = 0;
  for (const auto& t : host) {
    const int64_t nbytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (nbytes) std::memcpy(payload + at, t.data_ptr(), static_cast<size_t>(nbytes));
    at += nbytes;
  }
  return out;
}

Message decode_message(const std::string& bytes, const std::string& from) {
  auto bad = [&](const std::string& what) { return FormatError("message from " + from + ": " + what); };
  if (bytes.size() < 12 || std::memcmp(bytes.data(), kMagic, 4) != 0) throw bad("not a fedsplit message");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data() + 4, 8);
  if (header_len > bytes.size() - 12) throw bad("header length " + std::to_string(header_len) + " exceeds the message");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 12, bytes.begin() + 12 + static_cast<int64_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("malformed header: ") + e.what());
  }
  const uint64_t payload_size = bytes.size() - 12 - header_len;
  const char* payload = bytes.data() + 12 + header_len;
  Message m;
  try {
    m.meta = header.at("meta");
    for (const auto& spec : header.at("tensors")) {
      const std::string name = spec.at("name").get<std::string>();
      const auto dt = dtypes().find(spec.at("dtype").get<std::string>());
      if (dt == dtypes().end()) throw bad("tensor " + name + " has unknown dtype " + spec.at("dtype").dump());
      const auto shape = spec.at("shape").get<std::vector<int64_t>>();
      int64_t numel = 1;
      for (int64_t d : shape) {
        if (d < 0 || (d > 0 && numel > (int64_t(1) << 40) / d)) throw bad("tensor " + name + " has an absurd shape");
        numel *= d;
      }
      const auto offset = spec.at("offset").get<uint64_t>();
      const auto nbytes = spec.at("nbytes").get<uint64_t>();
      const uint64_t expected = static_cast<uint64_t>(numel) * c10::elementSize(dt->second);
      if (nbytes != expected || offset > payload_size || nbytes > payload_size - offset)
        throw bad("tensor " + name + " does not fit the payload (offset " + std::to_string(offset) + ", " +
                  std::to_string(nbytes) + " bytes of " + std::to_string(payload_size) + ")");
      torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dt->second));
      if (nbytes) std::memcpy(t.data_ptr(), payload + offset, nbytes);
      if (!m.tensors.emplace(name, t).second) throw bad("tensor " + name + " appears twice");
    }
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("malformed header: ") + e.what());
  }
  return m;
}

}  // namespace fedsplit
