// One client's turn in a split-learning round: the device end trains `steps` batches of the client's
// data through the server end (split/split_step.h), each end counting what crossed the cut; and the
// device part's state that travels between turns (its trainable weights and, when clients hand the
// model on to each other, its AdamW moments), packed as a message.
#pragma once
#include <cstdint>
#include <string>

#include "core/comm/message.h"
#include "core/data/dataset.h"
#include "split/split_step.h"

namespace fedsplit {

class Channel;

/// What one end of a session computed and moved. Losses are summed where they are computed (the
/// server in vanilla, the device in U-shape); bytes and messages are counted on both ends alike.
struct SessionTally {
  double loss_sum = 0;
  int64_t loss_steps = 0;  ///< steps whose loss this end computed
  int64_t steps = 0;
  int64_t tokens = 0;
  int64_t bytes_up = 0, bytes_down = 0, messages_up = 0, messages_down = 0;
  nlohmann::json to_json() const;
  static SessionTally from_json(const nlohmann::json& j);
  /// Takes `other`'s loss (when this end has none) and token count (the device's); keeps this end's
  /// traffic, which both ends count alike.
  void merge_loss(const SessionTally& other);
};

/// The device's turn: `steps` batches from `data` at the stream position a client training every
/// round would have reached (round * steps), so a client reads the same batches in every scheme.
SessionTally run_device_session(SplitDevice& device, Channel& server, TokenDataset& data, int64_t round, int64_t steps,
                                double lr);
/// The server's side of the same turn.
SessionTally run_server_session(SplitServer& server, Channel& device, int64_t steps, double lr);

/// AdamW's moments as named tensors ("adamw.exp_avg.<param>", "adamw.exp_avg_sq.<param>", CPU), and
/// back (with the step count). FormatError naming `from` for a missing or misshapen moment.
TensorMap adamw_moments(const AdamW& optimizer);
void load_adamw_moments(AdamW& optimizer, const TensorMap& moments, int64_t steps, const std::string& from);

/// The device part's trainable weights (and, with `optimizer`, its AdamW moments and step count).
Message pack_device_state(const CutModel& cut, const AdamW* optimizer);
/// Loads what pack_device_state wrote into `cut`'s device part (and `optimizer`). FormatError naming
/// `from` for a missing or misshapen tensor.
void unpack_device_state(const Message& state, CutModel& cut, AdamW* optimizer, const std::string& from);

/// The trainable weights of one side, copied (for averaging), and back.
TensorMap side_weights(const CutModel& cut, SplitSide side);
void load_side_weights(CutModel& cut, SplitSide side, const TensorMap& weights);

}  // namespace fedsplit
