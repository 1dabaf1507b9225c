// fedsplit tokenizer train|encode
#include <iostream>

#include "core/config/recipe.h"
#include "core/data/prepare.h"
#include "core/tokenizer/tokenizer.h"
#include "launch/commands.h"
#include "launch/flags.h"

namespace po = boost::program_options;

namespace fedsplit::cli {
namespace {

int train(const Args& args) {
  std::string corpus, out, cache = ".cache";
  int64_t vocab_size = 4096;
  po::options_description flags("tokenizer train");
  flags.add_options()
      ("corpus", po::value(&corpus)->required(), "corpora to train on: sotu, moby-dick, brown, spam or paths (a list)")
      ("out", po::value(&out)->required(), "output prefix: writes PREFIX.model and PREFIX.vocab")
      ("vocab-size", po::value(&vocab_size)->default_value(vocab_size), "pieces in the vocabulary")
      ("cache", po::value(&cache)->default_value(cache), "cache folder for corpora");
  po::variables_map values;
  if (!parse_flags("tokenizer train", args, flags, values)) return 0;
  if (vocab_size < 259) throw ConfigError("--vocab-size must be at least 259 (256 byte pieces + unk, bos, eos)");
  train_corpus_tokenizer(split_list(corpus), vocab_size, out, cache);
  auto tokenizer = load_tokenizer(out + ".model");
  std::cout << "wrote " << out << ".model (" << tokenizer->vocab_size() << " pieces)\n";
  return 0;
}

int encode(const Args& args) {
  std::string path, text;
  po::options_description flags("tokenizer encode");
  flags.add_options()
      ("tokenizer", po::value(&path)->required(), "tokenizer .model, tokenizer.json or model directory")
      ("text", po::value(&text)->required(), "text to encode");
  po::variables_map values;
  if (!parse_flags("tokenizer encode", args, flags, values)) return 0;
  auto tokenizer = load_tokenizer(path);
  const auto ids = tokenizer->encode(text);
  for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
  std::cout << "\n";
  return 0;
}

}  // namespace

int tokenizer(const Args& args) {
  const std::string sub = args.empty() ? "" : args[0];
  const Args rest = args.empty() ? Args{} : Args(args.begin() + 1, args.end());
  if (sub == "train") return train(rest);
  if (sub == "encode") return encode(rest);
  throw ConfigError("usage: fedsplit tokenizer train|encode [options] (see `fedsplit tokenizer train --help`)");
}

}  // namespace fedsplit::cli
