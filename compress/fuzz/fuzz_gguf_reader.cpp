// libFuzzer target for the GGUF reader. A malformed image must end in FormatError, never in a
// crash, an out-of-bounds read (ASan) or undefined behaviour (UBSan). An image that parses is
// also decoded, written back and parsed again, and must come back the same.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "compress/gguf.h"
#include "core/util/error.h"

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz_gguf_reader: %s\n", what);
  std::abort();
}

void check_round_trip(const fedsplit::GgufFile& file) {
  for (const auto& t : file.tensors) {
    if (!fedsplit::ggml_type_has_codec(t.type)) continue;
    uint64_t count = 1;  // the parser refused dims whose product overflows, and the bytes are there
    for (uint64_t d : t.dims) count *= d;
    std::vector<float> values(static_cast<size_t>(count));
    fedsplit::dequantize_values(t.type, t.data.data(), static_cast<int64_t>(count), values.data());
  }
  std::string bytes;
  try {
    bytes = fedsplit::gguf_to_bytes(file);
  } catch (const fedsplit::FormatError&) {
    return;  // the writer is stricter than the reader (alignment below 8, empty names)
  }
  const auto again = fedsplit::parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "rewritten");
  if (again.metadata.items() != file.metadata.items()) broken("metadata changed in a write/read round trip");
  if (again.tensors.size() != file.tensors.size()) broken("tensor count changed in a write/read round trip");
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    const auto& a = file.tensors[i];
    const auto& b = again.tensors[i];
    if (a.name != b.name || a.dims != b.dims || a.type != b.type || a.data != b.data) {
      broken("a tensor changed in a write/read round trip");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fedsplit::GgufFile file;
  try {
    file = fedsplit::parse_gguf(data, size, "fuzz input");
  } catch (const fedsplit::FormatError&) {
    return 0;
  }
  check_round_trip(file);
  return 0;
}
