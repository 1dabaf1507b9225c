// GGUF v3 files (ggml/llama.cpp's model format; spec: ggml's docs/gguf.md), read and written.
//
// Layout, little-endian:
//   "GGUF", u32 version = 3, u64 tensor_count, u64 metadata_kv_count
//   metadata_kv_count x { string key, u32 value type, value }
//   tensor_count x { string name, u32 n_dims (1..4), u64 dims[n_dims] (innermost first),
//                    u32 ggml type, u64 offset (relative to the data section) }
//   zero padding to general.alignment (u32 metadata, default 32), then the data section.
// A string is u64 length + bytes (no terminator); an array is u32 element type, u64 count, elements.
// Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (one byte, 0 or 1), 8 string,
// 9 array, 10 u64, 11 i64, 12 f64.
//
// Each tensor's offset is a multiple of the alignment and its bytes are followed by zero padding to
// the next multiple, the last tensor's too (ggml reads the padded blob), which the reader requires.
// A torch [rows, cols] tensor has GGUF dims {cols, rows}.
//
// Torch-free (the fuzz target builds without LibTorch); torch conversions live in gguf_tensor.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "compress/gguf_quant.h"

namespace fedsplit {

/// Metadata value types; the numbers are the file's codes and the index of GgufValue's variant.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7,
  String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};

/// "u8", "string", ... or "type 42" for an unknown code.
std::string gguf_type_name(uint32_t code);

struct GgufValue;

/// An array value: its element type (kept when empty) and items, each of that type.
struct GgufArray {
  GgufType type = GgufType::U8;
  std::vector<GgufValue> items;
};

/// One metadata value of any GGUF type.
struct GgufValue {
  using Variant = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                               GgufArray, uint64_t, int64_t, double>;
  Variant value;

  GgufValue() = default;
  GgufValue(const char* s) : value(std::string(s)) {}
  template <typename T, typename = std::enable_if_t<!std::is_same_v<std::decay_t<T>, GgufValue>>>
  GgufValue(T v) : value(std::move(v)) {}

  GgufType type() const { return static_cast<GgufType>(value.index()); }
  template <typename T>
  const T* get_if() const { return std::get_if<T>(&value); }
  bool operator==(const GgufValue& other) const;
  bool operator!=(const GgufValue& other) const { return !(*this == other); }
};

/// Metadata in file order; keys are unique.
class GgufMetadata {
 public:
  /// Sets `key`, replacing its value in place or appending it.
  void set(const std::string& key, GgufValue value);
  /// The value of `key`, or nullptr.
  const GgufValue* find(const std::string& key) const;
  const std::vector<std::pair<std::string, GgufValue>>& items() const { return items_; }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<std::string, GgufValue>> items_;
  std::unordered_map<std::string, size_t> index_;  // key -> position in items_
};

/// One tensor: its info and either its stored bytes or a producer of them (called once, at write
/// time, so that a large model is quantized one tensor at a time).
struct GgufTensor {
  std::string name;                          ///< at most 64 bytes
  std::vector<uint64_t> dims;                ///< 1..4 sizes, innermost first
  GgmlType type = GgmlType::F32;
  std::vector<uint8_t> data;                 ///< the stored bytes (exactly gguf_tensor_bytes)
  std::function<std::vector<uint8_t>()> produce;  ///< when set, the writer takes the bytes from it
  uint64_t offset = 0;                       ///< read: offset in the data section (the writer computes its own)
};

struct GgufFile {
  GgufMetadata metadata;
  std::vector<GgufTensor> tensors;
};

constexpr uint32_t kGgufVersion = 3;
constexpr uint32_t kGgufDefaultAlignment = 32;
constexpr size_t kGgufMaxDims = 4;
constexpr size_t kGgufMaxNameBytes = 64;

/// Bytes of a tensor of `dims` of `type`; throws DataError if dims[0] is not a whole number of
/// blocks or the size overflows.
uint64_t gguf_tensor_bytes(GgmlType type, const std::vector<uint64_t>& dims);

/// The alignment `file` asks for (general.alignment, default 32).
uint32_t gguf_alignment(const GgufFile& file);

/// Parses a GGUF image held in memory; `source` names it in errors. Every count, length, offset
/// and size is checked against `size` before use; anything malformed throws a one-line
/// FormatError "<source>: <what is wrong>". Tensor bytes are copied out.
GgufFile parse_gguf(const uint8_t* bytes, size_t size, const std::string& source);

/// Reads a GGUF file (mapped, then parsed as above). IoError if it cannot be read.
GgufFile read_gguf(const std::string& path);

/// Writes `file` to `out` (`target` names it in errors). Throws FormatError for what GGUF cannot
/// hold (duplicate or long names, bad dims, an array item of another type, data of the wrong size,
/// an alignment that is not a power of two multiple of 8).
void write_gguf(std::ostream& out, const GgufFile& file, const std::string& target);

/// Writes `file` to `path` atomically (a temporary name, renamed once complete).
void write_gguf(const std::string& path, const GgufFile& file);

/// The bytes write_gguf would write.
std::string gguf_to_bytes(const GgufFile& file);

}  // namespace fedsplit
