// A byte tokenizer for the core/data tests, with no dependency on core/tokenizer's implementations.
// The helpers every test shares are in tests/test_support.h.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace fedsplit::testing {

/// Bytes -> ids 3..258; 0 pad, 1 BOS, 2 EOS.
class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(static_cast<int32_t>(c) + 3);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids)
      if (id >= 3) s += static_cast<char>(id - 3);
    return s;
  }
  int64_t vocab_size() const override { return 259; }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }
  const std::string& path() const override { return path_; }

 private:
  std::string path_ = "test:bytes";
};

}  // namespace fedsplit::testing
