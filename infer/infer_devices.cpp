#include "infer/infer_devices.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>

#include "core/config/recipe.h"
#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit {

namespace {

constexpr const char* kKeys = "[device NAME] speed, memory_mb, first; [link] and [link A B] mbps, latency_ms";
constexpr size_t kMaxDevices = 16;

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool valid_name(const std::string& name) {
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == ':')) return false;
  return !name.empty();
}

/// A section header of the file: its words and where it is.
struct Section {
  std::vector<std::string> words;  // {"device", NAME}, {"link"} or {"link", A, B}
  int line = 0;
  std::string canonical() const {
    std::string s;
    for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
    return s;
  }
};

/// Finds the sections, checks their kinds and names, and rewrites each header with single spaces
/// (what the keys are registered under; line numbers stay).
std::vector<Section> scan_sections(std::string& text, const std::string& name) {
  std::vector<Section> sections;
  std::map<std::string, int> seen;  // canonical header (links with sorted ends) -> line
  std::istringstream in(text);
  std::string rewritten, line;
  for (int n = 1; std::getline(in, line); ++n) {
    const std::string t = trim(line);
    if (!t.empty() && t.front() == '[' && t.back() == ']') {
      Section s{words(t.substr(1, t.size() - 2)), n};
      const std::string where = name + ":" + std::to_string(n) + ": [" + s.canonical() + "]";
      const bool device = s.words.size() == 2 && s.words[0] == "device";
      const bool link = (s.words.size() == 1 || s.words.size() == 3) && s.words[0] == "link";
      if (s.words.size() == 1 && s.words[0] == "device")
        throw ConfigError(where + " needs a name: [device NAME], e.g. [device phone]");
      if (!device && !link)
        throw ConfigError(where + ": unknown section (sections are [device NAME], [link] and [link A B])");
      for (size_t i = 1; i < s.words.size(); ++i)
        if (!valid_name(s.words[i]))
          throw ConfigError(where + ": '" + s.words[i] + "' is not a device name (letters, digits, '_', '-', ':')");
      if (s.words.size() == 3 && s.words[1] == s.words[2])
        throw ConfigError(where + ": a link joins two different devices");
      std::string key = s.canonical();
      if (s.words.size() == 3) key = "link " + std::min(s.words[1], s.words[2]) + " " + std::max(s.words[1], s.words[2]);
      if (auto it = seen.find(key); it != seen.end())
        throw ConfigError(where + " is given twice (also at line " + std::to_string(it->second) + "): merge them");
      seen.emplace(key, n);
      sections.push_back(s);
      rewritten += "[" + s.canonical() + "]\n";
    } else {
      rewritten += line + "\n";
    }
  }
  text = rewritten;
  return sections;
}

}  // namespace

InferDevicesFile parse_infer_devices(const std::string& original, const std::string& name) {
  std::string text = original;
  const std::vector<Section> sections = scan_sections(text, name);
  InferDevicesFile f;
  f.path = name;

  // Bind every key of every section to a field, then let the project's INI reader check them.
  struct DeviceKeys {
    const Section* section;
    double speed = 1;
    int64_t memory_mb = 0;
    bool first = false;
  };
  struct LinkKeys {
    const Section* section;
    double mbps = 0, latency_ms = 0;
  };
  std::vector<DeviceKeys> devices;
  std::vector<LinkKeys> links;
  const Section* default_link = nullptr;
  for (const auto& s : sections) {
    if (s.words[0] == "device") devices.push_back({&s});
    else if (s.words.size() == 3) links.push_back({&s});
    else default_link = &s;
  }
  if (devices.empty()) throw ConfigError(name + ": no [device NAME] section: list the devices to plan over");
  if (devices.size() > kMaxDevices)
    throw ConfigError(name + ": " + std::to_string(devices.size()) + " devices; at most " + std::to_string(kMaxDevices) +
                      " can be planned: drop some");
  LinkKeys default_keys{default_link};
  Recipe ini;
  for (auto& d : devices) {
    const std::string sec = d.section->canonical() + ".";
    ini.add(sec + "speed", &d.speed, "compute speed relative to the profiling machine", 1e-9, 1e9);
    ini.add(sec + "memory_mb", &d.memory_mb, "memory for the model, MB (0 = unlimited)", 0, int64_t{1} << 40);
    ini.add(sec + "first", &d.first, "the source device, which holds the prompt");
  }
  if (default_link) {
    ini.add("link.mbps", &default_keys.mbps, "bandwidth, megabits/s (0 = unlimited)", 0, 1e9);
    ini.add("link.latency_ms", &default_keys.latency_ms, "one-way latency per message, ms", 0, 1e9);
  }
  for (auto& l : links) {
    const std::string sec = l.section->canonical() + ".";
    ini.add(sec + "mbps", &l.mbps, "bandwidth, megabits/s (0 = unlimited)", 0, 1e9);
    ini.add(sec + "latency_ms", &l.latency_ms, "one-way latency per message, ms", 0, 1e9);
  }
  try {
    ini.parse_text(text, name, {});
  } catch (const ConfigError& e) {
    // The recipe reader points at `fedsplit run --help`; this file has its own keys.
    std::string what = e.what();
    const std::string hint = " (see `fedsplit run --help` for the keys)";
    if (auto at = what.find(hint); at != std::string::npos) what.replace(at, hint.size(), std::string(" (keys: ") + kKeys + ")");
    throw ConfigError(what);
  }

  std::map<std::string, int> index;
  for (const auto& d : devices) {
    const std::string at = name + ":" + std::to_string(d.section->line) + ": [" + d.section->canonical() + "]";
    if (!ini.was_set(d.section->canonical() + ".speed"))
      throw ConfigError(at + " speed is required (compute speed relative to the machine that profiles, e.g. 0.25)");
    if (d.first && f.first_device >= 0)
      throw ConfigError(at + " first = true, and [device " + f.devices[size_t(f.first_device)].name +
                        "] says so too: the source is one device");
    if (d.first) f.first_device = int(f.devices.size());
    index[d.section->words[1]] = int(f.devices.size());
    f.devices.push_back({d.section->words[1], d.speed, d.memory_mb << 20});
  }
  if (default_link) {
    const std::string at = name + ":" + std::to_string(default_link->line) + ": [link]";
    for (const char* key : {"mbps", "latency_ms"})
      if (!ini.was_set(std::string("link.") + key))
        throw ConfigError(at + " " + key + " is missing: give mbps and latency_ms (0 mbps = unlimited)");
    f.default_link = {default_keys.mbps, default_keys.latency_ms};
  } else if (devices.size() > 1) {
    throw ConfigError(name + ": no [link]: add [link] with mbps and latency_ms, the link between any two devices");
  }
  for (const auto& l : links) {
    const std::string sec = l.section->canonical();
    const std::string at = name + ":" + std::to_string(l.section->line) + ": [" + sec + "]";
    for (size_t i = 1; i < 3; ++i)
      if (!index.count(l.section->words[i]))
        throw ConfigError(at + ": no [device " + l.section->words[i] + "] in this file");
    const bool mbps = ini.was_set(sec + ".mbps"), latency = ini.was_set(sec + ".latency_ms");
    if (!mbps && !latency) throw ConfigError(at + " sets nothing: give mbps and/or latency_ms, or remove it");
    InferLinkOverride o;
    o.a = index[l.section->words[1]];
    o.b = index[l.section->words[2]];
    o.link = {mbps ? l.mbps : f.default_link.mbps, latency ? l.latency_ms : f.default_link.latency_ms};
    f.links.push_back(o);
  }
  return f;
}

InferDevicesFile read_infer_devices(const std::string& path) {
  if (!path_exists(path)) throw IoError("--devices " + path + ": no such file");
  return parse_infer_devices(read_file(path), path);
}

void apply_devices(const InferDevicesFile& devices, InferProblem& problem) {
  problem.devices = devices.devices;
  problem.default_link = devices.default_link;
  problem.links = devices.links;
  problem.first_device = devices.first_device;
}

}  // namespace fedsplit
