// devices.ini for inference: the devices a model may be spread over and the links between them, for
// `fedsplit plan infer` (see infer/infer_planner.h and recipes/devices-edge.ini).
//
//   [device phone]        one section per device; NAME is letters, digits, '_', '-' or ':'
//   speed = 0.3           compute speed relative to the machine that profiles the model (required, > 0)
//   memory_mb = 3072      memory the model may use there: weights and KV cache, MB = 2^20 bytes
//                         (default 0 = unlimited)
//   first = true          the source: it holds the prompt and runs the embedding (optional, at most
//                         one device; without it the planner picks the first device too)
//   [link]                the link between any two devices (required with two or more devices)
//   mbps = 100            bandwidth, megabits/s, both ways (0 = unlimited)
//   latency_ms = 5        one way, per message
//   [link phone laptop]   optional: a pair whose link differs (symmetric); keys left out take [link]'s
//   mbps = 300
//
// An unknown section or key, a missing or out-of-range value, a section given twice (also [link A B]
// after [link B A]), a link naming an unknown device or one device twice, two first devices, no
// device or more than 16: one-line ConfigErrors naming the file (and line), the section and the key.
#pragma once
#include <string>
#include <vector>

#include "infer/infer_planner.h"

namespace fedsplit {

struct InferDevicesFile {
  std::string path;                      ///< the file it was read from (for messages)
  std::vector<InferDevice> devices;      ///< in the file's order
  InferLink default_link;                ///< [link]
  std::vector<InferLinkOverride> links;  ///< [link A B], device indices
  int first_device = -1;                 ///< the device with first = true, or -1
};

/// Reads and validates `path` (format above). IoError if it cannot be read.
InferDevicesFile read_infer_devices(const std::string& path);

/// The same from text held in memory; `name` stands for the file in messages.
InferDevicesFile parse_infer_devices(const std::string& text, const std::string& name);

/// Copies the devices, links and first device into `problem`.
void apply_devices(const InferDevicesFile& devices, InferProblem& problem);

}  // namespace fedsplit
