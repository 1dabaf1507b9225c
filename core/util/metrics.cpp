#include "core/util/metrics.h"

#include <nlohmann/json.hpp>

#include "core/util/error.h"

namespace fedsplit {

MetricsWriter::MetricsWriter(const std::string& path, bool truncate)
    : out_(path, truncate ? std::ios::trunc : std::ios::app), path_(path) {
  if (!out_) throw IoError("cannot open metrics file " + path + " for writing");
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!out_.is_open()) return;
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) throw IoError("failed writing metrics to " + path_ + " (disk full?)");
}

}  // namespace fedsplit
