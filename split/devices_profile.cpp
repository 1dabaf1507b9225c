#include "split/devices_profile.h"

#include "core/config/recipe.h"
#include "core/util/error.h"

namespace fedsplit {

namespace {

constexpr const char* kKeys =
    "device.speed, device.memory_mb, server.speed, server.memory_mb, link.up_mbps, link.down_mbps, link.latency_ms, "
    "network.link";

}  // namespace

DevicesProfile read_devices_profile(const std::string& path) {
  DevicesProfile d;
  d.path = path;
  double up = 0, down = 0, latency = 0;
  std::string link_text;
  Recipe ini;
  ini.add("device.speed", &d.device_speed, "device compute speed relative to this machine", 1e-9, 1e9);
  ini.add("device.memory_mb", &d.device_memory_mb, "device memory for training state, MB (0 = unlimited)", 0,
          int64_t{1} << 40);
  ini.add("server.speed", &d.server_speed, "server compute speed relative to this machine", 1e-9, 1e9);
  ini.add("server.memory_mb", &d.server_memory_mb, "server memory for training state, MB (0 = unlimited)", 0,
          int64_t{1} << 40);
  ini.add("link.up_mbps", &up, "device -> server bandwidth, megabits/s (0 = unlimited)", 0, 1e9);
  ini.add("link.down_mbps", &down, "server -> device bandwidth, megabits/s (0 = unlimited)", 0, 1e9);
  ini.add("link.latency_ms", &latency, "one-way latency per message, ms", 0, 1e9);
  ini.add("network.link", &link_text, "the link as up_mbps/down_mbps/latency_ms");
  try {
    ini.parse(path, {});
  } catch (const ConfigError& e) {
    // The recipe reader points at `fedsplit run --help`; this file has its own keys.
    std::string what = e.what();
    const std::string hint = " (see `fedsplit run --help` for the keys)";
    if (auto at = what.find(hint); at != std::string::npos) what.replace(at, hint.size(), std::string(" (keys: ") + kKeys + ")");
    throw ConfigError(what);
  }
  for (const char* key : {"device.speed", "server.speed"})
    if (!ini.was_set(key))
      throw ConfigError(path + ": " + key + " is required (compute speed relative to the machine that profiles, e.g. 0.25)");
  const bool three = ini.was_set("link.up_mbps") || ini.was_set("link.down_mbps") || ini.was_set("link.latency_ms");
  if (three && ini.was_set("network.link"))
    throw ConfigError(path + ": network.link and the [link] keys both describe the link: keep one of them");
  if (ini.was_set("network.link")) {
    d.link = parse_link("client", link_text, path + ": network.link");
  } else if (three) {
    for (const char* key : {"link.up_mbps", "link.down_mbps", "link.latency_ms"})
      if (!ini.was_set(key))
        throw ConfigError(path + ": " + key + " is missing: give up_mbps, down_mbps and latency_ms in [link] (0 = unlimited)");
    d.link = LinkClass{"client", up, down, latency};
  } else {
    throw ConfigError(path + ": no link: add [link] up_mbps, down_mbps, latency_ms, or [network] link = up/down/latency");
  }
  return d;
}

}  // namespace fedsplit
