// Messages between ranks (a federated server and its clients, split learning's parties): a JSON
// header and named tensors in one byte string, so that every transfer is counted by its size and a
// peer's message is checked before it is used.
//
// Format (fedsplit message, version 1), little-endian:
//   bytes 0..3    "FSM1"
//   bytes 4..11   uint64 header length H
//   H bytes       JSON {"meta": {...}, "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}
//   payload       the tensors' bytes, each at its offset from the payload's start (contiguous, C order)
// dtypes: float32, float16, bfloat16, float64, int64, int32, uint8.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

struct Message {
  nlohmann::json meta = nlohmann::json::object();  ///< what the message is about (round, client, samples, ...)
  TensorMap tensors;                               ///< named tensors (CPU after decoding)
};

/// The message as bytes (tensors are copied from any device, in name order).
std::string encode_message(const Message& message);

/// Reads bytes written by encode_message. Throws FormatError naming `from` (e.g. "client 3 on rank 2")
/// for a bad magic, a truncated or malformed header, an unknown dtype, or tensors whose sizes or offsets
/// do not fit the payload; never reads outside `bytes`.
Message decode_message(const std::string& bytes, const std::string& from);

/// Payload bytes of `tensors` (what a message carrying them moves, without the header).
int64_t payload_bytes(const TensorMap& tensors);

}  // namespace fedsplit
