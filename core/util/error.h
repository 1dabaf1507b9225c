// Error types. Each kind of failure has its own type so callers can tell them apart; every message
// names the file, key or rank involved and says what to do. Libraries throw, `main` prints one line.
#pragma once
#include <stdexcept>
#include <string>

namespace fedsplit {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A recipe key, flag or value is unknown, mistyped or out of range.
struct ConfigError : Error {
  using Error::Error;
};
/// A file exists but its contents do not follow the expected format.
struct FormatError : Error {
  using Error::Error;
};
/// A file or directory cannot be opened, read or written.
struct IoError : Error {
  using Error::Error;
};
/// Data does not fit what it is used with (vocabulary, shapes, splits).
struct DataError : Error {
  using Error::Error;
};
/// A peer, collective or rendezvous failed.
struct CommError : Error {
  using Error::Error;
};

}  // namespace fedsplit
