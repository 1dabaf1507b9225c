#include "compress/gguf.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_set>

#include "core/util/error.h"
#include "core/util/fs.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "GGUF is little-endian; this reader copies bytes as they are"
#endif

namespace fedsplit {
namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr size_t kHeaderBytes = 4 + 4 + 8 + 8;
// The smallest encodings, used to refuse counts that cannot fit in what is left of the file
// before anything is allocated: a kv is key length + type + 1-byte value, a tensor info is name
// length + n_dims + type + offset (+ dims), an array is element type + count.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
constexpr uint64_t kArrayHeaderBytes = 4 + 8;
constexpr uint64_t kMaxKeyBytes = 65535;
// Deeper nesting than any real file uses; the limit keeps a crafted file from exhausting the stack.
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kTypeCount = 13;

const char* const kTypeNames[kTypeCount] = {"u8",  "i8",   "u16",    "i16",   "u32", "i32", "f32",
                                            "bool", "string", "array", "u64", "i64", "f64"};

// Bytes of a fixed-size value type, 0 for string and array.
uint64_t fixed_size(GgufType type) {
  switch (type) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

uint64_t min_value_bytes(GgufType type) {
  if (type == GgufType::String) return 8;
  if (type == GgufType::Array) return kArrayHeaderBytes;
  return fixed_size(type);
}

uint64_t align_up(uint64_t n, uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

bool is_power_of_two(uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

std::string printable(const std::string& s) {
  // Names in messages stay one line and short even when the file holds garbage.
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

// Reads little-endian fields from a bounded buffer; every read checks the bytes left first.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& source) : data_(data), size_(size), source_(source) {}

  [[noreturn]] void fail(const std::string& what) const { throw FormatError(source_ + ": " + what); }

  size_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > left()) {
      fail(what + ": needs " + std::to_string(n) + " bytes at byte " + std::to_string(pos_) + " but the file ends at " +
           std::to_string(size_) + " (truncated?)");
    }
  }

  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const auto n = read<uint64_t>(what + " (string length)");
    need(n, what + " (string of " + std::to_string(n) + " bytes)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& source_;
};

GgufType read_type(Cursor& in, const std::string& what) {
  const auto code = in.read<uint32_t>(what + " (value type)");
  if (code >= kTypeCount) in.fail(what + ": unknown value type " + std::to_string(code));
  return static_cast<GgufType>(code);
}

GgufValue read_value(Cursor& in, GgufType type, int depth, const std::string& what) {
  switch (type) {
    case GgufType::U8: return in.read<uint8_t>(what);
    case GgufType::I8: return in.read<int8_t>(what);
    case GgufType::U16: return in.read<uint16_t>(what);
    case GgufType::I16: return in.read<int16_t>(what);
    case GgufType::U32: return in.read<uint32_t>(what);
    case GgufType::I32: return in.read<int32_t>(what);
    case GgufType::F32: return in.read<float>(what);
    case GgufType::U64: return in.read<uint64_t>(what);
    case GgufType::I64: return in.read<int64_t>(what);
    case GgufType::F64: return in.read<double>(what);
    case GgufType::Bool: {
      const auto b = in.read<uint8_t>(what);
      if (b > 1) in.fail(what + ": bool byte " + std::to_string(b) + " is neither 0 nor 1");
      return b == 1;
    }
    case GgufType::String: return in.read_string(what);
    case GgufType::Array: {
      if (depth >= kMaxArrayDepth) in.fail(what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
      GgufArray array;
      array.type = read_type(in, what + " (array element type)");
      const auto count = in.read<uint64_t>(what + " (array length)");
      if (count > in.left() / min_value_bytes(array.type)) {
        in.fail(what + ": array of " + std::to_string(count) + " " + kTypeNames[static_cast<uint32_t>(array.type)] +
                " items cannot fit in the " + std::to_string(in.left()) + " bytes left");
      }
      array.items.reserve(static_cast<size_t>(count));
      for (uint64_t i = 0; i < count; ++i) array.items.push_back(read_value(in, array.type, depth + 1, what));
      return GgufValue(std::move(array));
    }
  }
  in.fail(what + ": unknown value type");  // unreachable: read_type checked the code
}

// general.alignment when present: a u32 power of two (ggml's rule); writers add "multiple of 8".
uint32_t alignment_of(const GgufMetadata& metadata, const std::string& source, bool writing) {
  const GgufValue* v = metadata.find("general.alignment");
  if (v == nullptr) return kGgufDefaultAlignment;
  const auto* a = v->get_if<uint32_t>();
  if (a == nullptr) {
    throw FormatError(source + ": general.alignment is a " + gguf_type_name(static_cast<uint32_t>(v->type())) +
                      ", not a u32");
  }
  if (!is_power_of_two(*a) || (writing && *a % 8 != 0)) {
    throw FormatError(source + ": general.alignment " + std::to_string(*a) + " is not a power of two" +
                      (writing ? " multiple of 8" : ""));
  }
  return *a;
}

// Checks dims and type of a tensor and returns its byte size; `fail` reports with context.
template <typename Fail>
uint64_t checked_tensor_bytes(uint32_t type_code, const std::vector<uint64_t>& dims, const Fail& fail) {
  GgmlTypeTraits traits{};
  if (!ggml_type_traits(type_code, &traits)) fail("unknown ggml type " + std::to_string(type_code));
  if (dims.empty() || dims.size() > kGgufMaxDims) {
    fail(std::to_string(dims.size()) + " dimensions (GGUF tensors have 1 to " + std::to_string(kGgufMaxDims) + ")");
  }
  uint64_t values = 1;
  for (uint64_t d : dims) {
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (d != 0 && values > std::numeric_limits<uint64_t>::max() / d)) {
      fail("dimensions overflow the size of a tensor");
    }
    values *= d;
  }
  if (dims[0] % traits.block_values != 0) {
    fail("innermost dimension " + std::to_string(dims[0]) + " is not a multiple of " + traits.name + "'s block of " +
         std::to_string(traits.block_values));
  }
  const uint64_t blocks = values / traits.block_values;
  if (blocks > std::numeric_limits<uint64_t>::max() / traits.block_bytes) fail("byte size overflows");
  return blocks * traits.block_bytes;
}

struct Placed {
  size_t index;
  uint64_t offset;
  uint64_t bytes;
};

void parse_tensor_infos(Cursor& in, uint64_t count, GgufFile& file, std::vector<uint64_t>& sizes) {
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < count; ++i) {
    const std::string label = "tensor info " + std::to_string(i);
    GgufTensor t;
    t.name = in.read_string(label + " name");
    const std::string who = "tensor " + printable(t.name);
    if (t.name.size() > kGgufMaxNameBytes) {
      in.fail(who + ": name of " + std::to_string(t.name.size()) + " bytes (at most " +
              std::to_string(kGgufMaxNameBytes) + ")");
    }
    if (!names.insert(t.name).second) in.fail(who + " appears twice");
    const auto n_dims = in.read<uint32_t>(who + " n_dims");
    if (n_dims == 0 || n_dims > kGgufMaxDims) {
      in.fail(who + ": n_dims " + std::to_string(n_dims) + " (must be 1 to " + std::to_string(kGgufMaxDims) + ")");
    }
    for (uint32_t d = 0; d < n_dims; ++d) t.dims.push_back(in.read<uint64_t>(who + " dims"));
    const auto type_code = in.read<uint32_t>(who + " type");
    t.offset = in.read<uint64_t>(who + " offset");
    sizes.push_back(checked_tensor_bytes(type_code, t.dims, [&](const std::string& what) { in.fail(who + ": " + what); }));
    t.type = static_cast<GgmlType>(type_code);
    file.tensors.push_back(std::move(t));
  }
}

// Checks every tensor's range against the data section and the others, then copies the bytes.
void place_tensor_data(const Cursor& in, const uint8_t* bytes, size_t size, uint32_t alignment, GgufFile& file,
                       const std::vector<uint64_t>& sizes) {
  if (file.tensors.empty()) return;
  const uint64_t data_start = align_up(in.pos(), alignment);
  if (data_start > size) {
    in.fail("the data section would start at byte " + std::to_string(data_start) + ", past the end of the file (" +
            std::to_string(size) + " bytes; truncated?)");
  }
  const uint64_t data_size = size - data_start;
  std::vector<Placed> placed;
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const GgufTensor& t = file.tensors[i];
    const std::string who = "tensor " + printable(t.name);
    if (t.offset % alignment != 0) {
      in.fail(who + ": offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
              std::to_string(alignment));
    }
    const uint64_t padded = align_up(sizes[i], alignment);
    if (padded > data_size || t.offset > data_size - padded) {
      in.fail(who + ": " + std::to_string(sizes[i]) + " bytes (padded to " + std::to_string(alignment) +
              ") at offset " + std::to_string(t.offset) + " run past the data section of " +
              std::to_string(data_size) + " bytes (truncated?)");
    }
    placed.push_back({i, t.offset, sizes[i]});
  }
  std::sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.bytes < b.bytes;
  });
  uint64_t end = 0;
  size_t owner = 0;
  for (const Placed& p : placed) {
    if (p.bytes > 0 && p.offset < end) {
      in.fail("tensor " + printable(file.tensors[p.index].name) + " overlaps tensor " +
              printable(file.tensors[owner].name) + " in the data section");
    }
    if (p.offset + p.bytes > end) {
      end = p.offset + p.bytes;
      owner = p.index;
    }
  }
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const uint8_t* begin = bytes + data_start + file.tensors[i].offset;
    file.tensors[i].data.assign(begin, begin + sizes[i]);
  }
}

// ---- writing ----

// Arrays hold items of their declared type only, nested no deeper than the reader takes.
void check_value(const GgufValue& v, int depth, const std::string& key, const std::string& target) {
  const auto* array = v.get_if<GgufArray>();
  if (array == nullptr) return;
  const std::string who = target + ": metadata " + printable(key);
  if (depth >= kMaxArrayDepth) throw FormatError(who + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  if (static_cast<uint32_t>(array->type) >= kTypeCount) throw FormatError(who + ": unknown array element type");
  for (const auto& item : array->items) {
    if (item.type() != array->type) {
      throw FormatError(who + ": a " + gguf_type_name(static_cast<uint32_t>(item.type())) + " item in an array of " +
                        gguf_type_name(static_cast<uint32_t>(array->type)));
    }
    check_value(item, depth + 1, key, target);
  }
}

class Writer {
 public:
  Writer(std::ostream& out, const std::string& target) : out_(out), target_(target) {}

  [[noreturn]] void fail(const std::string& what) const { throw FormatError(target_ + ": " + what); }

  /// Bytes written so far.
  uint64_t written() const { return written_; }

  void put_bytes(const void* p, size_t n) {
    out_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
    written_ += n;
  }
  template <typename T>
  void put(T v) {
    put_bytes(&v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    put_bytes(s.data(), s.size());
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[256] = {};
    uint64_t n = align_up(written_, alignment) - written_;
    while (n > 0) {
      const uint64_t k = std::min<uint64_t>(n, sizeof(zeros));
      put_bytes(zeros, k);
      n -= k;
    }
  }

  // Writes a value checked by check_value.
  void put_value(const GgufValue& v) {
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::string>) {
            put_string(x);
          } else if constexpr (std::is_same_v<T, GgufArray>) {
            put<uint32_t>(static_cast<uint32_t>(x.type));
            put<uint64_t>(x.items.size());
            for (const auto& item : x.items) put_value(item);
          } else if constexpr (std::is_same_v<T, bool>) {
            put<uint8_t>(x ? 1 : 0);
          } else {
            put<T>(x);
          }
        },
        v.value);
  }

 private:
  std::ostream& out_;
  const std::string& target_;
  uint64_t written_ = 0;
};

}  // namespace

std::string gguf_type_name(uint32_t code) {
  return code < kTypeCount ? kTypeNames[code] : "type " + std::to_string(code);
}

bool GgufValue::operator==(const GgufValue& other) const {
  if (value.index() != other.value.index()) return false;
  return std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        const T& y = std::get<T>(other.value);
        if constexpr (std::is_same_v<T, GgufArray>) {
          return x.type == y.type && x.items == y.items;
        } else if constexpr (std::is_floating_point_v<T>) {
          return std::memcmp(&x, &y, sizeof(T)) == 0;  // bitwise: a NaN read back equals itself
        } else {
          return x == y;
        }
      },
      value);
}

void GgufMetadata::set(const std::string& key, GgufValue value) {
  const auto it = index_.find(key);
  if (it != index_.end()) {
    items_[it->second].second = std::move(value);
    return;
  }
  index_.emplace(key, items_.size());
  items_.emplace_back(key, std::move(value));
}

const GgufValue* GgufMetadata::find(const std::string& key) const {
  const auto it = index_.find(key);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

uint64_t gguf_tensor_bytes(GgmlType type, const std::vector<uint64_t>& dims) {
  return checked_tensor_bytes(static_cast<uint32_t>(type), dims,
                              [](const std::string& what) -> void { throw DataError("GGUF tensor: " + what); });
}

uint32_t gguf_alignment(const GgufFile& file) { return alignment_of(file.metadata, "GGUF metadata", false); }

GgufFile parse_gguf(const uint8_t* bytes, size_t size, const std::string& source) {
  Cursor in(bytes, size, source);
  if (size < 4 || std::memcmp(bytes, kMagic, 4) != 0) in.fail("not a GGUF file (no \"GGUF\" magic at byte 0)");
  in.need(kHeaderBytes, "header");
  in.read<uint32_t>("magic");
  const auto version = in.read<uint32_t>("version");
  if (version != kGgufVersion) in.fail("GGUF version " + std::to_string(version) + " (this reader takes version 3)");
  const auto tensor_count = in.read<uint64_t>("tensor count");
  const auto kv_count = in.read<uint64_t>("metadata count");
  if (tensor_count > in.left() / kMinTensorInfoBytes || kv_count > in.left() / kMinKvBytes ||
      tensor_count * kMinTensorInfoBytes + kv_count * kMinKvBytes > in.left()) {
    in.fail(std::to_string(tensor_count) + " tensors and " + std::to_string(kv_count) +
            " metadata entries cannot fit in a file of " + std::to_string(size) + " bytes");
  }

  GgufFile file;
  for (uint64_t i = 0; i < kv_count; ++i) {
    const std::string label = "metadata entry " + std::to_string(i);
    std::string key = in.read_string(label + " key");
    if (key.empty() || key.size() > kMaxKeyBytes) {
      in.fail(label + ": key of " + std::to_string(key.size()) + " bytes (must be 1 to 65535)");
    }
    const std::string who = "metadata " + printable(key);
    if (file.metadata.find(key) != nullptr) in.fail(who + " appears twice");
    const GgufType type = read_type(in, who);
    GgufValue value = read_value(in, type, 0, who);
    file.metadata.set(key, std::move(value));
  }
  const uint32_t alignment = alignment_of(file.metadata, source, false);

  std::vector<uint64_t> sizes;
  parse_tensor_infos(in, tensor_count, file, sizes);
  place_tensor_data(in, bytes, size, alignment, file, sizes);
  return file;
}

GgufFile read_gguf(const std::string& path) {
  const MappedFile file(path);
  static const uint8_t kEmpty = 0;
  return parse_gguf(file.size() > 0 ? reinterpret_cast<const uint8_t*>(file.data()) : &kEmpty, file.size(), path);
}

void write_gguf(std::ostream& out, const GgufFile& file, const std::string& target) {
  Writer w(out, target);
  const uint32_t alignment = alignment_of(file.metadata, target, true);

  // Validate and lay out everything before the first byte goes out (keys are unique by construction).
  for (const auto& [key, value] : file.metadata.items()) {
    if (key.empty() || key.size() > kMaxKeyBytes) w.fail("metadata key of " + std::to_string(key.size()) + " bytes");
    check_value(value, 0, key, target);
  }
  std::unordered_set<std::string> names;
  std::vector<uint64_t> sizes;
  std::vector<uint64_t> offsets;
  uint64_t offset = 0;
  for (const GgufTensor& t : file.tensors) {
    const std::string who = "tensor " + printable(t.name);
    if (t.name.empty() || t.name.size() > kGgufMaxNameBytes) {
      w.fail(who + ": name of " + std::to_string(t.name.size()) + " bytes (must be 1 to 64)");
    }
    if (!names.insert(t.name).second) w.fail(who + " appears twice");
    const uint64_t bytes = checked_tensor_bytes(static_cast<uint32_t>(t.type), t.dims,
                                                [&](const std::string& what) { w.fail(who + ": " + what); });
    if (!t.produce && t.data.size() != bytes) {
      w.fail(who + ": holds " + std::to_string(t.data.size()) + " bytes but its dims and type need " +
             std::to_string(bytes));
    }
    sizes.push_back(bytes);
    offsets.push_back(offset);
    offset += align_up(bytes, alignment);
  }

  w.put_bytes(kMagic, 4);
  w.put<uint32_t>(kGgufVersion);
  w.put<uint64_t>(file.tensors.size());
  w.put<uint64_t>(file.metadata.size());
  for (const auto& [key, value] : file.metadata.items()) {
    w.put_string(key);
    w.put<uint32_t>(static_cast<uint32_t>(value.type()));
    w.put_value(value);
  }
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const GgufTensor& t = file.tensors[i];
    w.put_string(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) w.put<uint64_t>(d);
    w.put<uint32_t>(static_cast<uint32_t>(t.type));
    w.put<uint64_t>(offsets[i]);
  }
  if (!file.tensors.empty()) w.pad_to(alignment);
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const GgufTensor& t = file.tensors[i];
    if (t.produce) {
      const std::vector<uint8_t> data = t.produce();
      if (data.size() != sizes[i]) {
        w.fail("tensor " + printable(t.name) + ": produced " + std::to_string(data.size()) + " bytes but needs " +
               std::to_string(sizes[i]));
      }
      w.put_bytes(data.data(), data.size());
    } else {
      w.put_bytes(t.data.data(), t.data.size());
    }
    w.pad_to(alignment);  // the last tensor too: ggml reads the padded blob
  }
  if (!out) throw IoError(target + ": write failed (disk full?)");
}

void write_gguf(const std::string& path, const GgufFile& file) {
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError("cannot write " + tmp + ": check the directory exists and is writable");
    write_gguf(out, file, path);
    out.close();
    if (!out) throw IoError("failed writing " + tmp + " (disk full?)");
  });
}

std::string gguf_to_bytes(const GgufFile& file) {
  std::ostringstream out(std::ios::binary);
  write_gguf(out, file, "GGUF image");
  return out.str();
}

}  // namespace fedsplit
