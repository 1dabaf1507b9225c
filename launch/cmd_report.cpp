// fedsplit report RUN_DIR [--out FILE]: an HTML page of a run's charts and tables.
#include <iostream>

#include "core/util/error.h"
#include "federated/report.h"
#include "launch/commands.h"

namespace fedsplit::cli {
namespace {

constexpr const char* kReportUsage =
    "usage: fedsplit report RUN_DIR [--out FILE]\n"
    "Writes RUN_DIR/report.html (or FILE): charts of metrics.jsonl and tables of summary.json,\n"
    "partition.json and recipe.ini, in one self-contained HTML file.\n";

}  // namespace

int report(const Args& args) {
  std::string run_dir, out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kReportUsage;
      return 0;
    } else if (a == "--out" && i + 1 < args.size()) {
      out = args[++i];
    } else if (a.rfind("--out=", 0) == 0) {
      out = a.substr(6);
    } else if (a.rfind("--", 0) == 0 || !run_dir.empty()) {
      throw ConfigError("fedsplit report: unexpected argument '" + a +
                        "' (usage: fedsplit report RUN_DIR [--out FILE])");
    } else {
      run_dir = a;
    }
  }
  if (run_dir.empty())
    throw ConfigError("usage: fedsplit report RUN_DIR [--out FILE] (RUN_DIR is a recipe's run.dir; see "
                      "`fedsplit report --help`)");
  std::cout << "wrote " << write_report(run_dir, out) << "\n";
  return 0;
}

}  // namespace fedsplit::cli
