// Recipes: INI files (`[section]` then `key = value`) read through Boost.Program_options. Every key
// is bound to a field of an options struct; `--section.key=value` flags override the file. Unknown
// keys, wrong types and out-of-range values stop the run before any work with a one-line
// ConfigError naming the file, line and key, and the allowed values.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace boost::program_options {
class options_description;
}

namespace fedsplit {

class Recipe {
 public:
  Recipe();
  ~Recipe();
  Recipe(const Recipe&) = delete;
  Recipe& operator=(const Recipe&) = delete;

  /// Binds `section.key` to `*field`; the field's current value is the default.
  void add(const std::string& key, std::string* field, const std::string& help);
  void add(const std::string& key, bool* field, const std::string& help);
  void add(const std::string& key, int64_t* field, const std::string& help, int64_t min, int64_t max);
  void add(const std::string& key, double* field, const std::string& help, double min, double max);
  /// A string restricted to `choices`.
  void add_choice(const std::string& key, std::string* field, const std::vector<std::string>& choices,
                  const std::string& help);

  /// Reads `path` (may be empty: defaults only), then applies `overrides` ("--section.key=value" or
  /// "section.key=value"), which win over the file. Throws ConfigError.
  void parse(const std::string& path, const std::vector<std::string>& overrides);
  /// Parses recipe text held in memory (an embedded default); `name` stands for the file in errors.
  void parse_text(const std::string& text, const std::string& name, const std::vector<std::string>& overrides);

  /// Every key with its default and meaning, grouped by section.
  std::string help() const;
  /// The resolved values as INI text (sections sorted), for the run directory.
  std::string to_ini() const;
  /// The resolved values as a flat JSON object {"section.key": "value"}.
  nlohmann::json to_json() const;
  /// True if the user set this key (in the file or a flag).
  bool was_set(const std::string& key) const;

 private:
  struct Entry;
  void add_entry(const std::string& key, const std::string& help, std::string default_text,
                 std::function<void(const std::string&, const std::string&)> set, std::string allowed);
  std::unique_ptr<boost::program_options::options_description> description_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
};

/// Splits a list value ("sotu brown" or "sotu, brown") into items.
std::vector<std::string> split_list(const std::string& value);

}  // namespace fedsplit
