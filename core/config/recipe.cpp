#include "core/config/recipe.h"

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <iomanip>
#include <sstream>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace po = boost::program_options;

namespace fedsplit {

struct Recipe::Entry {
  std::string help;
  std::string default_text;
  std::string allowed;  // shown in help and errors, e.g. "1..100000" or "llama|qwen2|gpt2"
  std::string value_text;
  bool set = false;
  std::function<void(const std::string& value, const std::string& where)> assign;
};

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string format_double(double v) {
  std::ostringstream ss;
  ss << std::setprecision(10) << v;
  return ss.str();
}

// Maps "section.key" to its line in the recipe text, so that errors can point at it.
std::map<std::string, int> key_lines(const std::string& text) {
  std::map<std::string, int> lines;
  std::istringstream in(text);
  std::string line, section;
  for (int n = 1; std::getline(in, line); ++n) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      section = trim(line.substr(1, line.size() - 2));
    } else if (auto eq = line.find('='); eq != std::string::npos) {
      const std::string key = trim(line.substr(0, eq));
      lines.emplace(section.empty() ? key : section + "." + key, n);
    }
  }
  return lines;
}

}  // namespace

Recipe::Recipe() : description_(std::make_unique<po::options_description>()) {}
Recipe::~Recipe() = default;

void Recipe::add_entry(const std::string& key, const std::string& help, std::string default_text,
                       std::function<void(const std::string&, const std::string&)> assign, std::string allowed) {
  if (key.find('.') == std::string::npos) throw Error("recipe key '" + key + "' must be section.key");
  if (entries_.count(key)) throw Error("recipe key '" + key + "' registered twice");
  Entry e;
  e.help = help;
  e.default_text = default_text;
  e.value_text = std::move(default_text);
  e.allowed = std::move(allowed);
  e.assign = std::move(assign);
  entries_.emplace(key, std::move(e));
  order_.push_back(key);
  description_->add_options()(key.c_str(), po::value<std::string>(), help.c_str());
}

void Recipe::add(const std::string& key, std::string* field, const std::string& help) {
  add_entry(key, help, *field, [field](const std::string& v, const std::string&) { *field = v; }, "");
}

void Recipe::add(const std::string& key, bool* field, const std::string& help) {
  add_entry(key, help, *field ? "true" : "false",
            [field, key](const std::string& v, const std::string& where) {
              if (v == "true" || v == "1" || v == "yes" || v == "on") *field = true;
              else if (v == "false" || v == "0" || v == "no" || v == "off") *field = false;
              else throw ConfigError(where + ": " + key + " = '" + v + "' is not a boolean (use true or false)");
            },
            "true|false");
}

void Recipe::add(const std::string& key, int64_t* field, const std::string& help, int64_t min, int64_t max) {
  const std::string range = std::to_string(min) + ".." + std::to_string(max);
  add_entry(key, help, std::to_string(*field),
            [=](const std::string& v, const std::string& where) {
              size_t used = 0;
              long long parsed = 0;
              try {
                parsed = std::stoll(v, &used);
              } catch (const std::exception&) {
                used = 0;
              }
              if (used == 0 || used != v.size())
                throw ConfigError(where + ": " + key + " = '" + v + "' is not an integer (allowed " + range + ")");
              if (parsed < min || parsed > max)
                throw ConfigError(where + ": " + key + " = " + v + " is out of range (allowed " + range + ")");
              *field = parsed;
            },
            range);
}

void Recipe::add(const std::string& key, double* field, const std::string& help, double min, double max) {
  const std::string range = format_double(min) + ".." + format_double(max);
  add_entry(key, help, format_double(*field),
            [=](const std::string& v, const std::string& where) {
              size_t used = 0;
              double parsed = 0;
              try {
                parsed = std::stod(v, &used);
              } catch (const std::exception&) {
                used = 0;
              }
              if (used == 0 || used != v.size() || !std::isfinite(parsed))
                throw ConfigError(where + ": " + key + " = '" + v + "' is not a number (allowed " + range + ")");
              if (parsed < min || parsed > max)
                throw ConfigError(where + ": " + key + " = " + v + " is out of range (allowed " + range + ")");
              *field = parsed;
            },
            range);
}

void Recipe::add_choice(const std::string& key, std::string* field, const std::vector<std::string>& choices,
                        const std::string& help) {
  std::string allowed;
  for (const auto& c : choices) allowed += (allowed.empty() ? "" : "|") + c;
  add_entry(key, help, *field,
            [=](const std::string& v, const std::string& where) {
              for (const auto& c : choices)
                if (v == c) {
                  *field = v;
                  return;
                }
              throw ConfigError(where + ": " + key + " = '" + v + "' is not one of " + allowed);
            },
            allowed);
}

void Recipe::parse(const std::string& path, const std::vector<std::string>& overrides) {
  parse_text(path.empty() ? std::string() : read_file(path), path.empty() ? "(defaults)" : path, overrides);
}

void Recipe::parse_text(const std::string& text, const std::string& name, const std::vector<std::string>& overrides) {
  // Flags first: Program_options keeps the first value stored, so flags win over the file.
  std::vector<std::string> args;
  for (const auto& o : overrides) args.push_back(o.rfind("--", 0) == 0 ? o : "--" + o);
  po::variables_map flag_values, file_values;
  try {
    po::store(po::command_line_parser(args).options(*description_).style(po::command_line_style::unix_style ^
                                                                           po::command_line_style::allow_guessing).run(),
              flag_values);
  } catch (const po::error& e) {
    throw ConfigError("command line: " + std::string(e.what()) + " (see `fedsplit run --help` for the keys)");
  }
  const auto lines = key_lines(text);
  try {
    std::istringstream in(text);
    po::store(po::parse_config_file(in, *description_, /*allow_unregistered=*/false), file_values);
  } catch (const po::error& e) {
    std::string where = name;
    // Point at the line of the offending key where Program_options names it.
    for (const auto& [key, line] : lines)
      if (std::string(e.what()).find("'" + key + "'") != std::string::npos) where = name + ":" + std::to_string(line);
    throw ConfigError(where + ": " + e.what() + " (see `fedsplit run --help` for the keys)");
  }
  for (const auto& key : order_) {
    Entry& e = entries_.at(key);
    std::string where;
    std::string value;
    if (flag_values.count(key)) {
      value = flag_values[key].as<std::string>();
      where = "--" + key;
    } else if (file_values.count(key)) {
      value = file_values[key].as<std::string>();
      auto it = lines.find(key);
      where = name + (it != lines.end() ? ":" + std::to_string(it->second) : "");
    } else {
      continue;
    }
    value = trim(value);
    e.assign(value, where);
    e.value_text = value;
    e.set = true;
  }
}

std::string Recipe::help() const {
  std::ostringstream out;
  std::string section;
  for (const auto& key : order_) {
    const Entry& e = entries_.at(key);
    const std::string sec = key.substr(0, key.find('.'));
    if (sec != section) {
      out << "\n[" << sec << "]\n";
      section = sec;
    }
    out << "  " << std::left << std::setw(28) << key.substr(key.find('.') + 1) << " " << e.help << " (default: "
        << (e.default_text.empty() ? "\"\"" : e.default_text);
    if (!e.allowed.empty()) out << "; allowed: " << e.allowed;
    out << ")\n";
  }
  return out.str();
}

std::string Recipe::to_ini() const {
  std::map<std::string, std::map<std::string, std::string>> sections;
  for (const auto& [key, e] : entries_) sections[key.substr(0, key.find('.'))][key.substr(key.find('.') + 1)] = e.value_text;
  std::ostringstream out;
  for (const auto& [sec, kv] : sections) {
    out << "[" << sec << "]\n";
    for (const auto& [k, v] : kv) out << k << " = " << v << "\n";
    out << "\n";
  }
  return out.str();
}

nlohmann::json Recipe::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, e] : entries_) j[key] = e.value_text;
  return j;
}

bool Recipe::was_set(const std::string& key) const {
  auto it = entries_.find(key);
  return it != entries_.end() && it->second.set;
}

std::vector<std::string> split_list(const std::string& value) {
  std::vector<std::string> items;
  std::string item;
  for (char c : value + " ") {
    if (c == ' ' || c == ',' || c == '\t') {
      if (!item.empty()) items.push_back(item);
      item.clear();
    } else {
      item += c;
    }
  }
  return items;
}

}  // namespace fedsplit
