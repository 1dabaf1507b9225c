// Helpers of the federated CLI tests: a small labelled corpus (the fixture text's paragraphs dealt to
// four speakers), recipe sections, running a recipe, and reading and comparing a run's metrics and
// server checkpoint.
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/io/hdf5.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

namespace fedsplit::testing {

// Paragraphs of the fixture text as JSONL documents, dealt to four speakers.
inline void write_corpus(const std::string& path) {
  std::istringstream in(read_text(fixtures() + "/hf-tiny/tokenizers/training-text.txt"));
  std::vector<std::string> paragraphs;
  std::string line, current;
  while (std::getline(in, line)) {
    if (line.empty()) {
      if (current.size() > 200) paragraphs.push_back(current), current.clear();
      continue;
    }
    current += line + " ";
  }
  std::ofstream out(path);
  const char* speakers[] = {"ahab", "ishmael", "queequeg", "starbuck"};
  for (size_t i = 0; i < paragraphs.size(); ++i)
    out << nlohmann::json{{"text", paragraphs[i]}, {"speaker", speakers[(i / 3) % 4]}}.dump() << "\n";
}

inline std::string data_section(const TempDir& tmp) {
  return "[data]\ncorpus = " + (tmp / "speakers.jsonl") + "\ntokenizer = " + fixtures() +
         "/hf-tiny/tokenizers/spm-bpe.model\nseq_len = 32\nbatch_size = 2\nval_fraction = 0.2\ncache_dir = " +
         (tmp / "cache") + "\n\n";
}

inline std::string model_section() { return "[model]\nhidden_size = 32\nlayers = 2\nheads = 4\nkv_heads = 2\nmax_position = 64\n\n"; }

// The [federated] section: `defaults` ("key = value" lines) unless `extra` sets the key, then `extra`.
inline std::string federated_section(const std::string& defaults, const std::string& extra) {
  std::string out = "[federated]\n";
  std::istringstream in(defaults);
  for (std::string line; std::getline(in, line);)
    if (("\n" + extra).find("\n" + line.substr(0, line.find(" =") + 2)) == std::string::npos) out += line + "\n";
  return out + extra;
}

inline std::string fedavg_recipe(const TempDir& tmp, const std::string& dir, const std::string& federated_extra = "") {
  return "[run]\nmode = federated\ndir = " + dir + "\nseed = 5\nthreads = 1\ndevice = cpu\n\n" + data_section(tmp) +
         model_section() + "[train]\nlr = 5e-3\nweight_decay = 0\n\n" +
         federated_section("rounds = 4\npartition = natural\npartition_key = speaker\nlocal_steps = 4\neval_batches = 2",
                           federated_extra);
}

inline std::vector<nlohmann::json> events(const std::string& run_dir, const std::string& kind) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] == kind) out.push_back(j);
  }
  return out;
}

inline std::map<std::string, torch::Tensor> global_of(const std::string& run_dir) {
  auto file = fedsplit::h5::Group::open_file(run_dir + "/checkpoint.h5");
  auto g = file.group("global");
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : g.children()) out[name] = g.read_tensor(name);
  return out;
}

/// The largest element-wise difference between two sets of global tensors (which must have the same names).
inline double max_difference(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, t] : a) worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
  return worst;
}

}  // namespace fedsplit::testing
