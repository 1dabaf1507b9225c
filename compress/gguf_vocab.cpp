#include "compress/gguf_vocab.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/tokenizer/spm_model.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {
namespace {

namespace sfs = std::filesystem;

constexpr int32_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5;

GgufArray array_of(GgufType type) {
  GgufArray a;
  a.type = type;
  return a;
}

void check_fits(size_t ids, int64_t model_vocab_size, const std::string& path) {
  if (static_cast<int64_t>(ids) > model_vocab_size)
    throw ConfigError("tokenizer " + path + " has " + std::to_string(ids) + " tokens but the model only " +
                      std::to_string(model_vocab_size) + " embedding rows: pass the tokenizer the model was trained with");
}

void set_sentencepiece(GgufMetadata& meta, const std::string& path, int64_t vocab) {
  const tok::SpmModel model = tok::parse_spm_model(read_file(path), path);
  check_fits(model.pieces.size(), vocab, path);
  GgufArray tokens = array_of(GgufType::String), scores = array_of(GgufType::F32), types = array_of(GgufType::I32);
  int64_t unk = -1, bos = -1, eos = -1;
  for (size_t i = 0; i < model.pieces.size(); ++i) {
    const auto& p = model.pieces[i];
    tokens.items.emplace_back(p.text);
    scores.items.emplace_back(p.score);
    types.items.emplace_back(static_cast<int32_t>(p.type));
    if (p.type == tok::SpmPiece::unknown && unk < 0) unk = static_cast<int64_t>(i);
    if (p.type == tok::SpmPiece::control && p.text == model.bos_piece) bos = static_cast<int64_t>(i);
    if (p.type == tok::SpmPiece::control && p.text == model.eos_piece) eos = static_cast<int64_t>(i);
  }
  for (int64_t i = static_cast<int64_t>(model.pieces.size()); i < vocab; ++i) {
    tokens.items.emplace_back("[PAD" + std::to_string(i) + "]");
    scores.items.emplace_back(-1000.0f);
    types.items.emplace_back(kUnused);
  }
  meta.set("tokenizer.ggml.model", "llama");
  meta.set("tokenizer.ggml.tokens", std::move(tokens));
  meta.set("tokenizer.ggml.scores", std::move(scores));
  meta.set("tokenizer.ggml.token_type", std::move(types));
  if (bos >= 0) meta.set("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(bos));
  if (eos >= 0) meta.set("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(eos));
  if (unk >= 0) meta.set("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(unk));
  meta.set("tokenizer.ggml.add_bos_token", bos >= 0);
  meta.set("tokenizer.ggml.add_eos_token", false);
}

void set_byte_level_bpe(GgufMetadata& meta, const Tokenizer& tokenizer, int64_t vocab) {
  const std::string& path = tokenizer.path();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": not JSON (" + e.what() + ")");
  }
  std::vector<std::string> text(static_cast<size_t>(tokenizer.vocab_size()));
  std::vector<int32_t> type(text.size(), kNormal);
  std::vector<bool> seen(text.size(), false);
  auto put = [&](int64_t id, const std::string& s, int32_t t) {
    if (id < 0 || id >= static_cast<int64_t>(text.size()))
      throw FormatError(path + ": token id " + std::to_string(id) + " outside the vocabulary");
    text[id] = s;
    type[id] = t;
    seen[id] = true;
  };
  try {
    for (const auto& [token, id] : j.at("model").at("vocab").items()) put(id.get<int64_t>(), token, kNormal);
    if (j.contains("added_tokens"))
      for (const auto& a : j.at("added_tokens"))
        put(a.at("id").get<int64_t>(), a.at("content").get<std::string>(),
            a.value("special", false) ? kControl : kUserDefined);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": model.vocab / added_tokens are not as tokenizers writes them (" + e.what() + ")");
  }
  check_fits(text.size(), vocab, path);
  GgufArray tokens = array_of(GgufType::String), types = array_of(GgufType::I32), merges = array_of(GgufType::String);
  for (int64_t i = 0; i < vocab; ++i) {
    const bool real = i < static_cast<int64_t>(text.size()) && seen[i];
    tokens.items.emplace_back(real ? text[i] : "[PAD" + std::to_string(i) + "]");
    types.items.emplace_back(real ? type[i] : kUnused);
  }
  try {
    for (const auto& m : j.at("model").at("merges"))
      merges.items.emplace_back(m.is_string() ? m.get<std::string>()
                                              : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(path + ": model.merges is neither \"a b\" strings nor [a, b] pairs (" + e.what() + ")");
  }
  meta.set("tokenizer.ggml.model", "gpt2");
  meta.set("tokenizer.ggml.tokens", std::move(tokens));
  meta.set("tokenizer.ggml.token_type", std::move(types));
  meta.set("tokenizer.ggml.merges", std::move(merges));
  if (tokenizer.bos_id() >= 0) meta.set("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(tokenizer.bos_id()));
  if (tokenizer.eos_id() >= 0) meta.set("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tokenizer.eos_id()));
  meta.set("tokenizer.ggml.add_bos_token", false);
}

}  // namespace

void set_tokenizer_metadata(GgufMetadata& meta, const std::string& path, int64_t model_vocab_size) {
  const auto tokenizer = load_tokenizer(path);  // validates the file and resolves a directory
  if (has_suffix(tokenizer->path(), ".json")) set_byte_level_bpe(meta, *tokenizer, model_vocab_size);
  else set_sentencepiece(meta, tokenizer->path(), model_vocab_size);
}

std::string find_model_tokenizer(const std::string& model_path) {
  std::error_code ec;
  const std::string dir = sfs::is_directory(model_path, ec) ? model_path : sfs::path(model_path).parent_path().string();
  if (dir.empty() || !sfs::is_directory(dir, ec)) return "";
  bool any = sfs::is_regular_file(sfs::path(dir) / "tokenizer.json", ec);
  for (const auto& entry : sfs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".model") any = true;
  return any ? load_tokenizer(dir)->path() : "";
}

}  // namespace fedsplit
