// labels: unit
// Every recipe shipped in recipes/ parses against the whole schema (`fedsplit run RECIPE --check`),
// so that a renamed or removed key cannot leave a recipe broken until someone runs it; and --check
// refuses a bad key as a run would.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

TEST(CliRecipes, EveryShippedRecipeParses) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(FEDSPLIT_SOURCE_DIR) + "/recipes")) {
    const std::string path = entry.path().string();
    // devices-*.ini are device profiles for `fedsplit plan`, not run recipes.
    if (entry.path().extension() != ".ini" || entry.path().filename().string().rfind("devices-", 0) == 0) continue;
    const auto r = run_fedsplit("run " + path + " --check");
    EXPECT_EQ(r.exit_code, 0) << path << ": " << r.output;
    EXPECT_NE(r.output.find("[run]"), std::string::npos) << path;
    ++checked;
  }
  EXPECT_GE(checked, 15);
}

TEST(CliRecipes, CheckRefusesABadKey) {
  const auto r = run_fedsplit("run " + std::string(FEDSPLIT_SOURCE_DIR) + "/recipes/gptq-sotu.ini --quantize.bitz=4 --check");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("quantize.bitz"), std::string::npos) << r.output;
}
