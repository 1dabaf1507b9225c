// Metrics as JSON Lines: one object per event, appended to <run_dir>/metrics.jsonl and flushed
// at once so that a killed run keeps what it reported.
#pragma once
#include <fstream>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace fedsplit {

class MetricsWriter {
 public:
  MetricsWriter() = default;
  /// Opens `path` for appending; `truncate` starts it empty.
  explicit MetricsWriter(const std::string& path, bool truncate = false);
  bool is_open() const { return out_.is_open(); }
  /// Writes one line; the writer adds nothing to the object.
  void write(const nlohmann::json& record);

 private:
  std::ofstream out_;
  std::string path_;
};

}  // namespace fedsplit
