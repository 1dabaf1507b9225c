#include "core/util/format.h"

#include <cstdio>

namespace fedsplit {

std::string fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

}  // namespace fedsplit
