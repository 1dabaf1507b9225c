// labels: unit
// `fedsplit tokenizer` and `fedsplit data prepare` as a user runs them, and their errors.
#include <gtest/gtest.h>

#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

TEST(CliData, TrainTokenizerThenPrepareShard) {
  TempDir tmp("cli_data");
  const std::string text = fixtures() + "/hf-tiny/tokenizers/training-text.txt";
  auto r = run_fedsplit("tokenizer train --corpus " + text + " --vocab-size 400 --out " + (tmp / "tok") +
                        " --cache " + (tmp / "cache"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("400 pieces"), std::string::npos) << r.output;

  r = run_fedsplit("tokenizer encode --tokenizer " + (tmp / "tok.model") + " --text 'Call me Ishmael.'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(r.output.empty());
  for (char c : r.output) EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(c)) || c == ' ' || c == '\n') << r.output;

  const std::string shard = tmp / "text.h5";
  r = run_fedsplit("data prepare --corpus " + text + " --tokenizer " + (tmp / "tok.model") + " --out " + shard +
                   " --cache " + (tmp / "cache"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The fixture text has 430 non-blank paragraphs, each a document of a .txt corpus.
  EXPECT_NE(r.output.find("documents"), std::string::npos) << r.output;
  const auto size = std::filesystem::file_size(shard);

  // The same shard from a different tokenizer is refused, and the file is left as it was.
  r = run_fedsplit("data prepare --corpus " + text + " --tokenizer " + fixtures() +
                   "/hf-tiny/tokenizers/spm-bpe.model --out " + shard + " --cache " + (tmp / "cache"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("text.h5"), std::string::npos) << r.output;
  EXPECT_EQ(std::filesystem::file_size(shard), size);
}

TEST(CliData, ErrorsNameTheInput) {
  TempDir tmp("cli_data_errors");
  auto r = run_fedsplit("data prepare --corpus " + (tmp / "nope.txt") + " --tokenizer " + fixtures() +
                        "/hf-tiny/tokenizers/spm-bpe.model --out " + (tmp / "x.h5"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("nope.txt"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(tmp / "x.h5"));

  r = run_fedsplit("tokenizer train --corpus sotu --vocab-size 100 --out " + (tmp / "t"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--vocab-size"), std::string::npos) << r.output;

  r = run_fedsplit("tokenizer encode --tokenizer " + (tmp / "missing.model") + " --text hi");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("missing.model"), std::string::npos) << r.output;

  r = run_fedsplit("data prepare --corpus x --out y --bogus 1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("bogus"), std::string::npos) << r.output;

  r = run_fedsplit("frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}
