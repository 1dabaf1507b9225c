// Numbers as log lines and reports print them.
#pragma once
#include <string>

namespace fedsplit {

/// `value` with exactly `digits` decimals ("%.*f").
std::string fixed(double value, int digits);

}  // namespace fedsplit
