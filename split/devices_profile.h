// devices.ini: the machines and the link of a split-learning deployment, for the cut planner.
//
//   [device]                 the data owner (a phone, a laptop)
//   speed = 0.25             compute speed relative to the machine that profiles the model (required, > 0)
//   memory_mb = 512          memory it may use for the model's training state, MB = 2^20 bytes (0 = unlimited)
//   [server]
//   speed = 8                (required, > 0)
//   memory_mb = 0
//   [link]                   the device–server link: all three keys ...
//   up_mbps = 20             device -> server, megabits/s (0 = unlimited)
//   down_mbps = 100          server -> device, megabits/s (0 = unlimited)
//   latency_ms = 30          one way, per message
//   [network]                ... or one key, written as in recipes' [network] link
//   link = 20/100/30         up_mbps/down_mbps/latency_ms
//
// Every other key, a missing required key, a value of the wrong type or range, and both link forms at
// once are one-line ConfigErrors naming the file (and line) and the key.
#pragma once
#include <cstdint>
#include <string>

#include "core/comm/link_model.h"

namespace fedsplit {

struct DevicesProfile {
  std::string path;              ///< the file it was read from (for messages)
  double device_speed = 1;       ///< device compute speed relative to the profiling machine
  int64_t device_memory_mb = 0;  ///< device memory for training state, MB (0 = unlimited)
  double server_speed = 1;       ///< server compute speed relative to the profiling machine
  int64_t server_memory_mb = 0;  ///< server memory for training state, MB (0 = unlimited)
  LinkClass link;                ///< device–server link (up = device to server)
};

/// Reads and validates `path` (see the format above). IoError if it cannot be read.
DevicesProfile read_devices_profile(const std::string& path);

}  // namespace fedsplit
