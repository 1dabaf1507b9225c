#include "core/tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/tokenizer/added_tokens.h"
#include "core/tokenizer/bpe.h"
#include "core/tokenizer/byte_level.h"
#include "core/tokenizer/normalizer.h"
#include "core/tokenizer/pre_tokenizer.h"
#include "core/tokenizer/unsupported.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit::tok {

namespace {

using json = nlohmann::json;

json parse_json_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw FormatError(path + " is not valid JSON (" + e.what() + "): the file is truncated or corrupt; "
                      "download or save it again");
  }
}

BpeSpec parse_bpe(const json& model, const std::string& where) {
  const std::string type = model.contains("type") ? model.at("type").get<std::string>()
                           : model.contains("merges") ? "BPE" : "unknown";
  if (type != "BPE")
    throw UnsupportedTokenizer(where + ": model type '" + type + "' is not supported (only byte-level BPE): use "
                               "the model's SentencePiece .model, or a BPE tokenizer.json");
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(field) && !model.at(field).is_null() && !model.at(field).get<std::string>().empty())
      throw UnsupportedTokenizer(where + ": BPE with " + field + " is not supported (only byte-level BPE)");
  }
  BpeSpec spec;
  for (const auto& [token, id] : model.at("vocab").items()) {
    const int64_t value = id.get<int64_t>();
    if (value < 0 || value > INT32_MAX) throw FormatError(where + ": vocab id " + std::to_string(value) + " is out of range");
    spec.vocab.emplace(token, static_cast<int32_t>(value));
  }
  const json& merges = model.at("merges");
  spec.merges.reserve(merges.size());
  for (const auto& merge : merges) {
    if (merge.is_array() && merge.size() == 2) {
      spec.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
      continue;
    }
    // Older files write a merge as one string "left right".
    const std::string line = merge.get<std::string>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      throw FormatError(where + ": merge '" + line + "' is not two tokens separated by one space");
    spec.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  if (model.contains("unk_token") && !model.at("unk_token").is_null()) spec.unk_token = model.at("unk_token").get<std::string>();
  spec.fuse_unk = model.value("fuse_unk", false);
  spec.byte_fallback = model.value("byte_fallback", false);
  spec.ignore_merges = model.value("ignore_merges", false);
  // "dropout" only matters when training with BPE-dropout; encoding here is deterministic.
  return spec;
}

std::vector<AddedToken> parse_added_tokens(const json& list) {
  std::vector<AddedToken> tokens;
  if (list.is_null()) return tokens;
  for (const auto& t : list) {
    AddedToken token;
    token.id = t.at("id").get<int32_t>();
    token.content = t.at("content").get<std::string>();
    token.special = t.value("special", false);
    token.single_word = t.value("single_word", false);
    token.lstrip = t.value("lstrip", false);
    token.rstrip = t.value("rstrip", false);
    token.normalized = t.value("normalized", !token.special);
    tokens.push_back(std::move(token));
  }
  return tokens;
}

void check_decoder(const json& decoder, const std::string& where) {
  // Tokens are byte-level spellings, so ByteLevel is the only decoder that gives text back.
  if (decoder.is_null()) return;
  const std::string kind = decoder.value("type", "");
  if (kind == "ByteLevel") return;
  if (kind == "Sequence") {
    for (const auto& inner : decoder.at("decoders")) check_decoder(inner, where);
    return;
  }
  throw UnsupportedTokenizer(where + ": decoder '" + kind + "' is not supported (only ByteLevel)");
}

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(std::string path, const json& root) : path_(std::move(path)) {
    // The model first: an unsupported model type is the most useful thing to report.
    if (!root.contains("model")) throw FormatError(path_ + " has no \"model\": it is not a HF tokenizer.json");
    bpe_ = std::make_unique<BpeModel>(parse_bpe(root.at("model"), path_), path_);
    normalizer_ = parse_normalizer(root.value("normalizer", json()), path_);
    pre_tokenizer_ = parse_pre_tokenizer(root.value("pre_tokenizer", json()), path_);
    check_decoder(root.value("decoder", json()), path_);
    const std::vector<AddedToken> added = parse_added_tokens(root.value("added_tokens", json()));

    int64_t max_id = -1;
    for (const auto& [token, id] : bpe_->vocab()) max_id = std::max<int64_t>(max_id, id);
    for (const auto& t : added) max_id = std::max<int64_t>(max_id, t.id);
    vocab_size_ = max_id + 1;

    for (const auto& t : added) {
      if (t.id < 0) throw FormatError(path_ + ": added token '" + t.content + "' has a negative id");
      if (t.normalized) normalized_added_.add(t, normalizer_ ? normalizer_->apply(t.content) : t.content);
      else raw_added_.add(t, t.content);
    }
    build_decode_table(added);
  }

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    std::vector<AddedTokenMatcher::Segment> segments;
    raw_added_.split(text, segments);
    for (const auto& s : segments) {
      if (s.id >= 0) ids.push_back(s.id);
      else encode_raw(std::string_view(text).substr(s.begin, s.end - s.begin), ids);
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (const int32_t id : ids) {
      if (id < 0 || id >= vocab_size_)
        throw DataError("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                        std::to_string(vocab_size_) + ") of tokenizer " + path_ +
                        ": the ids come from another tokenizer or model");
      if (!skip_in_decode_[id]) out += decoded_[id];
    }
    return out;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  const std::string& path() const override { return path_; }

  /// Id of a token spelled `content` (added tokens first), -1 if none.
  int32_t find(const std::string& content) const {
    const auto it = by_content_.find(content);
    return it == by_content_.end() ? -1 : it->second;
  }
  void set_bos_eos(int32_t bos, int32_t eos) {
    bos_ = bos;
    eos_ = eos;
  }

 private:
  // Text outside raw-matched added tokens: normalize, cut out normalized added tokens, then BPE.
  void encode_raw(std::string_view text, std::vector<int32_t>& ids) const {
    std::string normalized;
    if (normalizer_) {
      normalized = normalizer_->apply(std::string(text));
      text = normalized;
    }
    std::vector<AddedTokenMatcher::Segment> segments;
    std::vector<std::string> pieces;
    normalized_added_.split(text, segments);
    for (const auto& s : segments) {
      if (s.id >= 0) {
        ids.push_back(s.id);
        continue;
      }
      pieces.clear();
      pre_tokenizer_.split(text.substr(s.begin, s.end - s.begin), pieces);
      for (const auto& piece : pieces) bpe_->encode(piece, ids);
    }
  }

  void build_decode_table(const std::vector<AddedToken>& added) {
    decoded_.assign(vocab_size_, std::string());
    skip_in_decode_.assign(vocab_size_, 0);
    const ByteLevelAlphabet& alphabet = byte_level_alphabet();
    // A token holding characters outside the byte-level alphabet decodes to its own UTF-8 bytes.
    const auto set = [&](int32_t id, const std::string& token) {
      std::string bytes;
      decoded_[id] = alphabet.decode(token, bytes) ? bytes : token;
      by_content_[token] = id;
    };
    for (const auto& [token, id] : bpe_->vocab()) set(id, token);
    for (const auto& t : added) {
      set(t.id, t.content);
      skip_in_decode_[t.id] = t.special ? 1 : 0;
    }
  }

  std::string path_;
  std::unique_ptr<BpeModel> bpe_;
  std::unique_ptr<Normalizer> normalizer_;
  PreTokenizer pre_tokenizer_;
  AddedTokenMatcher raw_added_, normalized_added_;
  std::vector<std::string> decoded_;      // id -> the bytes it decodes to
  std::vector<uint8_t> skip_in_decode_;   // special added tokens
  std::unordered_map<std::string, int32_t> by_content_;
  int64_t vocab_size_ = 0;
  int32_t bos_ = -1, eos_ = -1;
};

// tokenizer_config.json writes a token as "text", {"content": "text", ...} or null.
int32_t config_token(const HfTokenizer& tok, const json& config, const char* key, const std::string& config_path) {
  const json& value = config.at(key);
  if (value.is_null()) return -1;
  const std::string content = value.is_object() ? value.at("content").get<std::string>() : value.get<std::string>();
  const int32_t id = tok.find(content);
  if (id < 0)
    throw FormatError(config_path + ": " + key + " '" + content + "' is not a token of " + tok.path() +
                      ": the two files do not belong together");
  return id;
}

int32_t first_known(const HfTokenizer& tok, std::initializer_list<const char*> names) {
  for (const char* name : names)
    if (const int32_t id = tok.find(name); id >= 0) return id;
  return -1;
}

void resolve_bos_eos(HfTokenizer& tok) {
  int32_t bos = first_known(tok, {"<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>"});
  int32_t eos = first_known(tok, {"<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>"});
  const std::string config_path =
      (std::filesystem::path(tok.path()).parent_path() / "tokenizer_config.json").string();
  if (path_exists(config_path)) {
    const json config = parse_json_file(config_path);
    try {
      if (config.contains("bos_token")) bos = config_token(tok, config, "bos_token", config_path);
      if (config.contains("eos_token")) eos = config_token(tok, config, "eos_token", config_path);
    } catch (const json::exception& e) {
      throw FormatError(config_path + ": unexpected bos_token/eos_token (" + e.what() + ")");
    }
  }
  tok.set_bos_eos(bos, eos);
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::string& path) {
  const json root = parse_json_file(path);
  std::unique_ptr<HfTokenizer> tok;
  try {
    if (!root.is_object()) throw FormatError(path + " is JSON but not an object: it is not a HF tokenizer.json");
    tok = std::make_unique<HfTokenizer>(path, root);
  } catch (const json::exception& e) {
    throw FormatError(path + ": unexpected tokenizer.json structure (" + e.what() +
                      "): save it again with the HF tokenizers library");
  }
  resolve_bos_eos(*tok);
  return tok;
}

}  // namespace fedsplit::tok
