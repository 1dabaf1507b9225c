// A simple network model: per link class, bandwidth each way and a latency per message, which turns the
// bytes and messages that a World counts into simulated transfer time for the metrics.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace fedsplit {

struct LinkClass {
  std::string name = "client";  ///< e.g. client (device–server), edge, cloud
  double up_mbps = 0;           ///< uplink bandwidth in megabits/s (0 = infinite)
  double down_mbps = 0;         ///< downlink bandwidth in megabits/s (0 = infinite)
  double latency_ms = 0;        ///< one-way latency per message
};

/// Simulated seconds to move `bytes` in `messages` messages over `link` upward (client→server) or downward:
/// bytes * 8 / (mbps * 1e6) + messages * latency_ms / 1000. Messages are not pipelined. Error if a count is negative.
double transfer_seconds(const LinkClass& link, int64_t bytes, int64_t messages, bool upward);

/// Simulated seconds of one party's exchange: `down_bytes` down and `up_bytes` up, each in `messages`
/// messages; 0 without a link (no link model).
double exchange_seconds(const std::optional<LinkClass>& link, int64_t down_bytes, int64_t up_bytes, int64_t messages);

/// Parses "up_mbps/down_mbps/latency_ms" (e.g. "20/100/30"); ConfigError naming `key` and the expected form otherwise.
LinkClass parse_link(const std::string& name, const std::string& text, const std::string& key);

}  // namespace fedsplit
