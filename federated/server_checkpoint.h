// The server's checkpoint, written after every round: what a killed federated job needs to continue
// as if it had never stopped. Client state is not saved because clients keep none between rounds, and
// client sampling is a pure function of (seed, round, attempt).
//
// Format (fedsplit server checkpoint, version 1), HDF5:
//   /          attrs: format = "fedsplit-server-checkpoint", version = 1, round (rounds completed),
//                     optimizer_rounds (server optimizer steps), recipe (resolved INI), extra (JSON)
//   /global/<name>   the global trainable parameters, fp32
//   /state/<name>    the server optimizer state ("m/<key>" stored as "m|<key>")
//   /base/<name>     flora only: the adapted modules' base weights, which each round's merge changes
// Written to a temporary name and renamed, so it is whole or absent.
#pragma once
#include <string>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

struct ServerCheckpoint {
  int64_t round = 0;             ///< rounds completed
  int64_t optimizer_rounds = 0;  ///< steps the server optimizer has taken
  std::string recipe;            ///< resolved recipe of the run
  std::string extra = "{}";      ///< JSON: cumulative metrics (bytes, simulated time)
  TensorMap global;              ///< global trainable parameters
  TensorMap optimizer_state;     ///< ServerOptimizer::state()
  TensorMap base;                ///< flora's merged base weights (empty otherwise)
};

void save_server_checkpoint(const std::string& path, const ServerCheckpoint& checkpoint);
/// Throws FormatError naming the file for anything that is not a server checkpoint of this version.
ServerCheckpoint load_server_checkpoint(const std::string& path);

}  // namespace fedsplit
