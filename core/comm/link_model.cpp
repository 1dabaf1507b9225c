#include "core/comm/link_model.h"

#include <cmath>
#include <locale>
#include <sstream>
#include <vector>

#include "core/util/error.h"
#include "core/util/log.h"

namespace fedsplit {

double transfer_seconds(const LinkClass& link, int64_t bytes, int64_t messages, bool upward) {
  if (bytes < 0 || messages < 0)
    throw Error(cat("transfer_seconds over link '", link.name, "': negative count (", bytes, " bytes, ", messages,
                    " messages)"));
  const double mbps = upward ? link.up_mbps : link.down_mbps;
  const double wire = mbps > 0 ? static_cast<double>(bytes) * 8.0 / (mbps * 1e6) : 0.0;
  return wire + static_cast<double>(messages) * link.latency_ms / 1000.0;
}

double exchange_seconds(const std::optional<LinkClass>& link, int64_t down_bytes, int64_t up_bytes, int64_t messages) {
  if (!link) return 0.0;
  return transfer_seconds(*link, down_bytes, messages, false) + transfer_seconds(*link, up_bytes, messages, true);
}

namespace {

/// One non-negative finite number, with optional spaces around it; false otherwise.
bool parse_number(const std::string& field, double& value) {
  std::istringstream in(field);
  in.imbue(std::locale::classic());  // '.' is the decimal point whatever the global locale says
  in >> value;
  if (in.fail()) return false;
  in >> std::ws;
  return in.eof() && std::isfinite(value) && value >= 0;
}

}  // namespace

LinkClass parse_link(const std::string& name, const std::string& text, const std::string& key) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(text);
  while (std::getline(in, field, '/')) fields.push_back(field);
  if (!text.empty() && text.back() == '/') fields.push_back("");  // getline drops a trailing empty field
  LinkClass link;
  link.name = name;
  if (fields.size() == 3 && parse_number(fields[0], link.up_mbps) && parse_number(fields[1], link.down_mbps) &&
      parse_number(fields[2], link.latency_ms))
    return link;
  throw ConfigError(cat(key, ": expected up_mbps/down_mbps/latency_ms with non-negative numbers (e.g. 20/100/30; ",
                        "0 bandwidth = unlimited), got '", text, "'"));
}

}  // namespace fedsplit
