// labels: unit
// fedsplit plan infer through the executable, on the tiny llama fixture (2 blocks) exported to Q8_0:
// a slow source device and a fast one over a free link, where any measured costs make the best
// plan "the source runs block 0, the fast device block 1" (for both objectives); the plan file that
// export gguf --plan turns into two stage files for those devices; and one-line refusals (a bad
// devices.ini, an unknown objective, a stage file, memory that no plan fits).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "compress/gguf_manifest.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

const std::string kDevices =
    "[device slow]\nspeed = 0.001\nfirst = true\n"
    "[device fast]\nspeed = 100\n"
    "[link]\nmbps = 0\nlatency_ms = 0\n";

class CliPlanInfer : public SharedDirSuite<CliPlanInfer> {
 public:
  static constexpr const char* kDirName = "cli_plan_infer";
  static void prepare() {
    const auto r = run_fedsplit("export gguf --model " + llama() + " --quant q8_0 --out " + (*tmp_ / "gguf"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    write_text(*tmp_ / "devices.ini", kDevices);
  }
  static std::string llama() { return fixtures() + "/hf-tiny/llama"; }
  static std::string plan_args(const std::string& extra) {
    return "plan infer --model " + (*tmp_ / "gguf/model.gguf") + " --devices " + (*tmp_ / "devices.ini") +
           " --repetitions 3 " + extra;
  }
};

TEST_F(CliPlanInfer, PlansAndExportTakesThePlan) {
  for (const std::string objective : {"latency", "throughput"}) {
    SCOPED_TRACE(objective);
    const std::string out = *tmp_ / (objective + ".json");
    const auto r = run_fedsplit(plan_args("--objective " + objective + " --context 64 --out " + out));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("block 1"), std::string::npos) << r.output;  // the profile table
    EXPECT_NE(r.output.find("0     slow             [0, 1)"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("1     fast             [1, 2)"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("predicted per-token latency"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("objective: " + objective), std::string::npos) << r.output;
    const auto plan = nlohmann::json::parse(read_text(out));
    EXPECT_EQ(plan, nlohmann::json::parse(R"({"stages":[{"layers":[0,1],"device":"slow"},{"layers":[1,2],"device":"fast"}]})"));
  }
  const auto r = run_fedsplit("export gguf --model " + llama() + " --quant q8_0 --plan " + (*tmp_ / "latency.json") +
                              " --out " + (*tmp_ / "planned"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto manifest = fedsplit::load_manifest(*tmp_ / "planned/manifest.json");
  ASSERT_EQ(manifest.stages.size(), 2u);
  EXPECT_EQ(manifest.stages[0].device, "slow");
  EXPECT_EQ(manifest.stages[1].device, "fast");
  EXPECT_TRUE(std::filesystem::exists(*tmp_ / "planned/stage-1.gguf"));
}

TEST_F(CliPlanInfer, RefusesWithOneLine) {
  // The error is the last line, and the only one unless the profile was printed before it.
  auto refused = [](const std::string& args, const std::vector<std::string>& needles, bool after_profile = false) {
    SCOPED_TRACE(args);
    const auto r = run_fedsplit(args);
    EXPECT_NE(r.exit_code, 0) << r.output;
    const size_t start = after_profile ? r.output.rfind('\n', r.output.size() - 2) + 1 : 0;
    const std::string error = r.output.substr(start);
    for (const auto& n : needles) EXPECT_NE(error.find(n), std::string::npos) << "'" << n << "' not in: " << r.output;
    EXPECT_EQ(error.find('\n'), error.size() - 1) << "one line: " << r.output;
    EXPECT_EQ(error.rfind("fedsplit: ", 0), 0u) << r.output;
  };
  refused(plan_args("--objective fast"), {"--objective 'fast'", "latency", "throughput"});
  refused(plan_args("--sequences 0"), {"--sequences 0"});
  write_text(*tmp_ / "bad.ini", "[device a]\nspeed = 1\nmemory = 5\n");
  refused("plan infer --model " + (*tmp_ / "gguf/model.gguf") + " --devices " + (*tmp_ / "bad.ini"),
          {"bad.ini:3", "device a.memory", "memory_mb"});
  refused("plan infer --model " + (*tmp_ / "missing.gguf") + " --devices " + (*tmp_ / "devices.ini"), {"missing.gguf"});
  // A million positions of cache need far more than 1 MB on either device.
  write_text(*tmp_ / "small.ini", "[device a]\nspeed = 1\nmemory_mb = 1\n[device b]\nspeed = 1\nmemory_mb = 1\n"
                                  "[link]\nmbps = 0\nlatency_ms = 0\n");
  refused("plan infer --model " + (*tmp_ / "gguf/model.gguf") + " --devices " + (*tmp_ / "small.ini") +
              " --repetitions 1 --context 1000000",
          {"no plan of the 2 layers fits", "raise [device a] memory_mb to at least"}, /*after_profile=*/true);
}

TEST_F(CliPlanInfer, RefusesAStageFile) {
  auto r = run_fedsplit("export gguf --model " + llama() + " --quant q8_0 --stages 2 --out " + (*tmp_ / "stages"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_fedsplit("plan infer --model " + (*tmp_ / "stages/stage-0.gguf") + " --devices " + (*tmp_ / "devices.ini"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("give its single GGUF file"), std::string::npos) << r.output;
}

}  // namespace
