// fedsplit data prepare --corpus NAME|PATH --tokenizer PATH --out FILE.h5
#include <iostream>

#include "core/data/prepare.h"
#include "core/data/shards.h"
#include "core/tokenizer/tokenizer.h"
#include "launch/commands.h"
#include "launch/flags.h"

namespace po = boost::program_options;

namespace fedsplit::cli {

int data(const Args& args) {
  if (args.empty() || args[0] != "prepare") {
    if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
      std::cout << "usage: fedsplit data prepare --corpus NAME|PATH --out FILE.h5 [--tokenizer PATH]\n";
      return 0;
    }
    throw ConfigError("usage: fedsplit data prepare --corpus NAME|PATH --out FILE.h5 (see `fedsplit data prepare --help`)");
  }
  DataOptions o;
  std::string out;
  bool overwrite = false;
  po::options_description flags("data prepare");
  flags.add_options()
      ("corpus", po::value(&o.corpus)->required(), "sotu | moby-dick | brown | spam | a .txt/.jsonl file or directory")
      ("out", po::value(&out)->required(), "token shard to write (HDF5)")
      ("tokenizer", po::value(&o.tokenizer), "tokenizer .model/tokenizer.json/dir; default: train SentencePiece on the corpus")
      ("vocab-size", po::value(&o.vocab_size)->default_value(o.vocab_size), "vocabulary of a tokenizer trained here")
      ("cache", po::value(&o.cache_dir)->default_value(o.cache_dir), "cache folder for corpora and tokenizers")
      ("overwrite", po::bool_switch(&overwrite), "replace an existing shard with different content");
  po::variables_map values;
  if (!parse_flags("data prepare", Args(args.begin() + 1, args.end()), flags, values)) return 0;
  auto tokenizer = resolve_tokenizer(o);
  prepare_corpus(o.corpus, *tokenizer, out, o.cache_dir, overwrite);
  std::cout << TokenShard(out).summary() << "\n";
  return 0;
}

}  // namespace fedsplit::cli
