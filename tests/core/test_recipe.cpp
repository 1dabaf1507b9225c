// labels: unit
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/config/recipe.h"
#include "core/util/error.h"

using namespace fedsplit;

namespace {
struct Options {
  int64_t steps = 100;
  double lr = 3e-4;
  bool bf16 = false;
  std::string family = "llama";
  std::string name = "run";
};

void bind(Recipe& r, Options& o) {
  r.add("train.steps", &o.steps, "optimizer steps", 1, 1000000);
  r.add("train.lr", &o.lr, "peak learning rate", 0.0, 10.0);
  r.add("train.bf16", &o.bf16, "bf16 autocast on CUDA");
  r.add_choice("model.family", &o.family, {"llama", "qwen2", "gpt2"}, "architecture family");
  r.add("run.name", &o.name, "name of the run");
}

std::string error_of(const std::string& text, const std::vector<std::string>& flags = {}) {
  Recipe r;
  Options o;
  bind(r, o);
  try {
    r.parse_text(text, "r.ini", flags);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Recipe, FileValuesAndFlagOverrides) {
  Recipe r;
  Options o;
  bind(r, o);
  r.parse_text("[train]\nsteps = 50\nlr = 1e-3\n# comment\n[model]\nfamily = gpt2\n", "r.ini",
               {"--train.steps=7", "run.name=abc"});
  EXPECT_EQ(o.steps, 7);  // flag wins over file
  EXPECT_DOUBLE_EQ(o.lr, 1e-3);
  EXPECT_EQ(o.family, "gpt2");
  EXPECT_EQ(o.name, "abc");
  EXPECT_FALSE(o.bf16);
  EXPECT_TRUE(r.was_set("train.lr"));
  EXPECT_FALSE(r.was_set("train.bf16"));
  EXPECT_EQ(r.to_json()["train.steps"], "7");
  EXPECT_NE(r.to_ini().find("[train]\nbf16 = false\nlr = 1e-3\nsteps = 7\n"), std::string::npos);
}

TEST(Recipe, ErrorsNameFileLineKeyAndAllowedValues) {
  auto e = error_of("[train]\nsteps = 10\nstepz = 5\n");
  EXPECT_NE(e.find("r.ini:3"), std::string::npos) << e;
  EXPECT_NE(e.find("train.stepz"), std::string::npos) << e;

  e = error_of("[train]\n\nsteps = ten\n");
  EXPECT_NE(e.find("r.ini:3"), std::string::npos) << e;
  EXPECT_NE(e.find("not an integer"), std::string::npos) << e;

  e = error_of("[train]\nsteps = 0\n");
  EXPECT_NE(e.find("out of range (allowed 1..1000000)"), std::string::npos) << e;

  e = error_of("[train]\nlr = 1e-3x\n");
  EXPECT_NE(e.find("train.lr"), std::string::npos) << e;

  e = error_of("[model]\nfamily = bert\n");
  EXPECT_NE(e.find("not one of llama|qwen2|gpt2"), std::string::npos) << e;

  e = error_of("[train]\nbf16 = maybe\n");
  EXPECT_NE(e.find("not a boolean"), std::string::npos) << e;

  e = error_of("", {"--train.nope=1"});
  EXPECT_NE(e.find("command line"), std::string::npos) << e;

  e = error_of("", {"--train.steps=-3"});
  EXPECT_NE(e.find("--train.steps"), std::string::npos) << e;
}

TEST(Recipe, HelpListsEveryKeyWithDefault) {
  Recipe r;
  Options o;
  bind(r, o);
  const auto help = r.help();
  for (const char* k : {"steps", "lr", "bf16", "family", "name"}) EXPECT_NE(help.find(k), std::string::npos) << k;
  EXPECT_NE(help.find("default: 100"), std::string::npos);
  EXPECT_NE(help.find("allowed: llama|qwen2|gpt2"), std::string::npos);
}

TEST(Recipe, SplitList) {
  EXPECT_EQ(split_list("sotu brown"), (std::vector<std::string>{"sotu", "brown"}));
  EXPECT_EQ(split_list(" a, b ,c "), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(split_list("").empty());
}
