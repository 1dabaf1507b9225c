// Two Channels joined in memory, for a device and a server that run as two threads of one process
// (the one-process shape of a split-learning job): what one end sends, the other receives, in order.
// A receive that waits longer than the timeout throws CommError, as a World transfer would.
#pragma once
#include <memory>
#include <string>
#include <utility>

#include "split/channel.h"

namespace fedsplit {

/// The device's end and the server's end of one in-memory link.
std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> local_channel_pair(double timeout_s = 600);

}  // namespace fedsplit
