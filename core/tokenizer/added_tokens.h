// tokenizer.json "added_tokens" (special tokens such as <|endoftext|>, and user-added words): they
// are cut out of the text before pre-tokenization and BPE, as the reference library does. Matching
// is leftmost-longest and non-overlapping; single_word, lstrip and rstrip follow the library.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fedsplit::tok {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;  ///< only matches when not inside a word
  bool lstrip = false;       ///< swallows the whitespace before it
  bool rstrip = false;       ///< swallows the whitespace after it
  bool normalized = false;   ///< matched in normalized text (else in the raw input)
  bool special = false;      ///< control token: left out by decode
};

class AddedTokenMatcher {
 public:
  /// Adds `token`, matched where `text` (its content, normalized if the token is) occurs.
  void add(const AddedToken& token, const std::string& text);
  bool empty() const { return tokens_.empty(); }

  /// A stretch of the input: an added token (id >= 0) or text to encode (id == -1).
  struct Segment {
    size_t begin, end;
    int32_t id;
  };
  /// Covers `text` with segments, in order; text segments are never empty.
  void split(std::string_view text, std::vector<Segment>& segments) const;

 private:
  // Longest token starting at `pos`: (index into tokens_, length), or (-1, 0).
  std::pair<int, size_t> longest_at(std::string_view text, size_t pos) const;

  // Byte trie over the token texts; node 0 is the root, whose children are a flat table.
  struct Node {
    std::vector<std::pair<uint8_t, int>> children;  // sorted by byte
    int token = -1;
  };
  std::vector<Node> nodes_{Node{}};
  std::array<int, 256> root_children_{};  // 0 = none (node 0 is never a child)
  std::vector<AddedToken> tokens_;
};

}  // namespace fedsplit::tok
