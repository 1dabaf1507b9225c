// The flags that choose how text is generated, shared by `generate` and `serve`.
#pragma once
#include <boost/program_options.hpp>

#include "infer/generate.h"

namespace fedsplit::cli {

inline void add_generation_flags(boost::program_options::options_description& flags, GenerateOptions& options) {
  namespace po = boost::program_options;
  flags.add_options()
      ("max-tokens", po::value(&options.max_tokens)->default_value(64), "new tokens at most")
      ("temperature", po::value(&options.sampling.temperature)->default_value(0), "0 = greedy")
      ("top-k", po::value(&options.sampling.top_k)->default_value(0), "keep the k most likely tokens (0 = all)")
      ("top-p", po::value(&options.sampling.top_p)->default_value(1), "nucleus: keep the most likely tokens up to this mass")
      ("repetition-penalty", po::value(&options.sampling.repetition_penalty)->default_value(1), "1 = off")
      ("seed", po::value(&options.sampling.seed)->default_value(0), "seeds the draws");
}

}  // namespace fedsplit::cli
