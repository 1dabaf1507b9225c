// Flag parsing for the subcommands other than `run`: Boost.Program_options with one-line errors.
#pragma once
#include <boost/program_options.hpp>

#include <iostream>
#include <string>
#include <vector>

#include "core/util/error.h"

namespace fedsplit::cli {

/// Parses `args` against `options`; prints usage and returns false on --help. Unknown flags and
/// missing required ones throw ConfigError naming the command.
inline bool parse_flags(const std::string& command, const std::vector<std::string>& args,
                        const boost::program_options::options_description& options,
                        boost::program_options::variables_map& values) {
  namespace po = boost::program_options;
  for (const auto& a : args)
    if (a == "--help" || a == "-h") {
      std::cout << "usage: fedsplit " << command << " [options]\n" << options;
      return false;
    }
  try {
    po::store(po::command_line_parser(args).options(options).run(), values);
    po::notify(values);
  } catch (const po::error& e) {
    throw ConfigError("fedsplit " + command + ": " + e.what() + " (see `fedsplit " + command + " --help`)");
  }
  return true;
}

}  // namespace fedsplit::cli
