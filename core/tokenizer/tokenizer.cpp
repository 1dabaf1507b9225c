// load_tokenizer: picks the reader for a file or directory. check_vocab_fits: tokenizer vs model.
#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/tokenizer/hf_tokenizer.h"
#include "core/tokenizer/sentencepiece_tokenizer.h"
#include "core/tokenizer/unsupported.h"
#include "core/util/error.h"
#include "core/util/log.h"

namespace fedsplit {

namespace {

namespace sfs = std::filesystem;

// A tokenizer.json is JSON whatever its name; everything else is tried as a SentencePiece model.
bool looks_like_json(const std::string& path) {
  if (sfs::path(path).extension() == ".json") return true;
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c) && (c == ' ' || c == '\n' || c == '\r' || c == '\t')) {
  }
  return in && c == '{';
}

std::unique_ptr<Tokenizer> load_file(const std::string& path) {
  return looks_like_json(path) ? tok::load_hf_tokenizer(path) : tok::load_sentencepiece(path);
}

std::unique_ptr<Tokenizer> load_directory(const std::string& dir) {
  std::vector<std::string> models;
  std::error_code ec;
  for (const auto& entry : sfs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".model" && entry.is_regular_file()) models.push_back(entry.path().string());
  if (ec) throw IoError("cannot list tokenizer directory " + dir + ": " + ec.message());
  std::sort(models.begin(), models.end());
  const std::string preferred_model = (sfs::path(dir) / "tokenizer.model").string();
  std::string model;
  if (std::find(models.begin(), models.end(), preferred_model) != models.end()) model = preferred_model;
  else if (models.size() == 1) model = models[0];

  const std::string json = (sfs::path(dir) / "tokenizer.json").string();
  if (sfs::is_regular_file(json, ec)) {
    try {
      return tok::load_hf_tokenizer(json);
    } catch (const tok::UnsupportedTokenizer& e) {
      // e.g. a Llama-2 directory: its tokenizer.json is not byte-level, its tokenizer.model is.
      if (model.empty()) throw;
      log_info("tokenizer: ", e.what(), "; using ", model, " instead");
    }
  }
  if (!model.empty()) return tok::load_sentencepiece(model);
  if (models.size() > 1)
    throw IoError("tokenizer directory " + dir + " holds several .model files and no tokenizer.model: pass the "
                  "file to use");
  throw IoError("tokenizer directory " + dir + " holds no tokenizer.json, tokenizer.model or *.model: pass the "
                "directory the model was saved with, or the tokenizer file itself");
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::error_code ec;
  const auto status = sfs::status(path, ec);
  if (!sfs::exists(status))
    throw IoError("tokenizer " + path + " does not exist: pass a SentencePiece .model, a HF tokenizer.json, or "
                  "a directory holding one");
  return sfs::is_directory(status) ? load_directory(path) : load_file(path);
}

void check_vocab_fits(const Tokenizer& tokenizer, int64_t model_vocab_size, const std::string& model_where) {
  if (tokenizer.vocab_size() <= model_vocab_size) return;
  throw DataError("tokenizer " + tokenizer.path() + " produces ids up to " + std::to_string(tokenizer.vocab_size() - 1) +
                  " but model " + model_where + " has vocab_size " + std::to_string(model_vocab_size) +
                  ": use the tokenizer the model was trained with");
}

}  // namespace fedsplit
