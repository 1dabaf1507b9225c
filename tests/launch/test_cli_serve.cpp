// labels: unit mpi
// An export's pipeline through the executable (fedsplit serve, and generate with a manifest), on a
// tiny llama trained here and exported in one stage and in two:
//   - one process running both stages, and `mpirun -np 2` (one stage per rank), answer a mix of
//     plain and JSON requests exactly as the one-stage file does (greedy), in request order;
//   - a malformed request gets an error line and the others still run;
//   - heartbeats keep idle ranks alive while stdin waits longer than the timeout;
//   - a rank count that does not fit the manifest, or a missing shard, ends every rank with one
//     line and a non-zero exit, in seconds.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>


#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

// The answers without their timings, which differ from run to run.
std::vector<nlohmann::json> untimed(std::vector<nlohmann::json> answers) {
  for (auto& a : answers) a.erase("seconds"), a.erase("decode_tokens_per_s"), a.erase("prompt_tokens_per_s");
  return answers;
}

std::string mpirun(int ranks) {
  return "timeout 120 mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " '" +
         std::string(FEDSPLIT_BINARY) + "' ";
}

class CliServe : public SharedDirSuite<CliServe> {
 public:
  static constexpr const char* kDirName = "cli_serve";
  static void prepare() {
    run_ok(*tmp_, "base", tiny_base_recipe(*tmp_));
    for (const std::string stages : {"1", "2"}) {
      const auto r = run_fedsplit("export gguf --model " + (*tmp_ / "base/model") + " --quant q8_0 --stages " + stages + " --out " +
                       (*tmp_ / ("s" + stages)));
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    write_text(*tmp_ / "requests.txt",
               "Call me Ishmael.\n{\"prompt\": \"It was the best of times\", \"max_tokens\": 3}\n{\"prompt\": 7}\n"
               "{\"prompt\": \"Some years ago\", \"temperature\": 0.8, \"seed\": 4}\nThe whale\n");
  }
  static std::string manifest(const std::string& stages) { return *tmp_ / ("s" + stages + "/manifest.json"); }
  // stderr goes to its own file, printed after stdout: under mpirun the ranks' stderr lines could
  // land inside a JSON line. The command's exit code is kept.
  static std::string stderr_after() {
    const std::string err = *tmp_ / "stderr.txt";
    return " 2>" + err + "; rc=$?; cat " + err + "; exit $rc";
  }
  static std::string requests() { return " --max-tokens 8 < " + (*tmp_ / "requests.txt") + stderr_after(); }
};

}  // namespace

TEST_F(CliServe, StagesAnswerAsTheWholeModel) {
  const auto whole = run_command("'" + std::string(FEDSPLIT_BINARY) + "' serve --manifest " + manifest("1") + requests());
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  const auto answers = json_lines(whole.output);
  ASSERT_EQ(answers.size(), 5u) << whole.output;
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(answers[static_cast<size_t>(i)]["id"], i) << "request order";
  EXPECT_EQ(answers[1]["new_tokens"], 3);
  EXPECT_NE(answers[2].value("error", "").find("\"prompt\" in the request has the wrong type"), std::string::npos)
      << answers[2].dump();
  EXPECT_TRUE(answers[3].contains("completion"));

  const auto local = run_command("'" + std::string(FEDSPLIT_BINARY) + "' serve --manifest " + manifest("2") +
                                 " --micro-batches 3" + requests());
  ASSERT_EQ(local.exit_code, 0) << local.output;
  EXPECT_EQ(untimed(json_lines(local.output)), untimed(answers)) << "both stages in one process";

  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  const auto ranks = run_command(mpirun(2) + "serve --manifest " + manifest("2") + " --micro-batches 3" + requests());
  ASSERT_EQ(ranks.exit_code, 0) << ranks.output;
  EXPECT_EQ(untimed(json_lines(ranks.output)), untimed(answers)) << "one stage per rank";
  EXPECT_NE(ranks.output.find("rank 1: stage 1 of 2"), std::string::npos) << ranks.output;

  // generate with the manifest: one streamed prompt, and a prompts file (the batch path).
  const auto one = run_command(mpirun(2) + "generate --model " + manifest("2") + " --prompt 'The whale' --max-tokens 8 2>/dev/null");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_NE(one.output.find(answers[4]["completion"].get<std::string>()), std::string::npos) << one.output;
  const auto batch = run_command(mpirun(2) + "generate --model " + manifest("2") + " --prompts " + (*tmp_ / "requests.txt") +
                                 " --max-tokens 8" + stderr_after());
  ASSERT_EQ(batch.exit_code, 0) << batch.output;
  EXPECT_EQ(untimed(json_lines(batch.output)), untimed(answers));
}

TEST_F(CliServe, HeartbeatsKeepIdleRanksAlive) {
  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  // Standard input stays silent for 4 s, twice the timeout.
  const auto r = run_command("(sleep 4; echo 'Call me Ishmael.') | " + mpirun(2) + "serve --manifest " + manifest("2") +
                             " --timeout 2 --max-tokens 4" + stderr_after());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json_lines(r.output).size(), 1u) << r.output;
}

TEST_F(CliServe, BadShardSetsEndEveryRankWithOneLine) {
  if (!have_command("mpirun")) GTEST_SKIP() << "mpirun is not on PATH";
  auto r = run_command(mpirun(3) + "serve --manifest " + manifest("2") + requests());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("has 2 stages but 3 ranks were started: run mpirun -np 2"), std::string::npos) << r.output;

  const std::string shard = *tmp_ / "s2/stage-1.gguf";
  std::rename(shard.c_str(), (shard + ".away").c_str());
  r = run_command(mpirun(2) + "serve --manifest " + manifest("2") + " --timeout 20" + requests());
  std::rename((shard + ".away").c_str(), shard.c_str());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1: " + shard + " (stage 1 of"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("is missing"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("timeout"), std::string::npos) << "the ranks agree at once: " << r.output;
}
