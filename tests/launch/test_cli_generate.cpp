// labels: unit
// fedsplit generate through the executable, on a tiny llama trained here and exported to GGUF:
// a streamed --prompt, a prompts file and standard input (the serving mode) answered with one JSON
// line each, seeded sampling that repeats, and bad input refused with one line (a prompt beyond
// the context, sampling flags out of range, a missing model, one stage of a pipeline export).
// With --draft (speculative decoding; here the same model exported to q4_0 drafts for the q8_0
// one) greedy answers are the ones without it, and a draft of another vocabulary is refused.
// That the engine's tokens equal the fp32 path's is tests/infer/test_gguf_runner.cpp's job.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>


#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit::testing;

namespace {

class CliGenerate : public SharedDirSuite<CliGenerate> {
 public:
  static constexpr const char* kDirName = "cli_generate";
  static void prepare() {
    run_ok(*tmp_, "base", tiny_base_recipe(*tmp_));
    auto r = run_fedsplit("export gguf --model " + (*tmp_ / "base/model") + " --quant q8_0 --out " + (*tmp_ / "gguf"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_fedsplit("export gguf --model " + (*tmp_ / "base/model") + " --quant q8_0 --stages 2 --out " + (*tmp_ / "stages"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_fedsplit("export gguf --model " + (*tmp_ / "base/model") + " --quant q4_0 --out " + (*tmp_ / "draft"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_fedsplit("export gguf --model " + fixtures() + "/hf-tiny/llama --quant f32 --out " + (*tmp_ / "other-vocab"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static std::string model() { return " --model " + (*tmp_ / "gguf/model.gguf") + " --tokenizer " + (*tmp_ / "base/model"); }
};

}  // namespace

TEST_F(CliGenerate, StreamsOnePromptAndReportsSpeeds) {
  const auto r = run_fedsplit("generate" + model() + " --prompt 'Call me Ishmael.' --max-tokens 8");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("prompt tokens at"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("new tokens at"), std::string::npos) << r.output;
  EXPECT_GT(r.output.find("prompt tokens at"), 0u) << "text comes before the speeds: " << r.output;
}

TEST_F(CliGenerate, PromptFilesAndStandardInputGetAJsonLineEach) {
  const TempDir& tmp = *tmp_;
  // A plain prompt, a blank line and a JSON request as serve takes them (launch/request_lines.h).
  const std::string json_request = R"({"prompt": "It was the best of times", "max_tokens": 3})";
  write_text(tmp / "prompts.txt", "Call me Ishmael.\n\n" + json_request + "\n");
  const auto from_file = run_fedsplit("generate" + model() + " --prompts " + (tmp / "prompts.txt") + " --max-tokens 6");
  ASSERT_EQ(from_file.exit_code, 0) << from_file.output;
  const auto lines = json_lines(from_file.output);
  ASSERT_EQ(lines.size(), 2u) << from_file.output;  // the blank line is skipped
  EXPECT_EQ(lines[0]["prompt"], "Call me Ishmael.");
  EXPECT_EQ(lines[1]["prompt"], "It was the best of times");
  for (int64_t i = 0; i < 2; ++i) {
    const auto& line = lines[static_cast<size_t>(i)];
    EXPECT_EQ(line["id"], i) << line.dump();
    EXPECT_GE(line["new_tokens"].get<int64_t>(), 1) << line.dump();
    EXPECT_LE(line["new_tokens"].get<int64_t>(), i == 0 ? 6 : 3) << line.dump();
    EXPECT_GT(line["prompt_tokens_per_s"].get<double>(), 0) << line.dump();
    EXPECT_GT(line["seconds"].get<double>(), 0) << line.dump();
  }
  const auto from_stdin = run_command("printf '%s\\n%s\\n' 'Call me Ishmael.' '" + json_request + "' | '" +
                                      std::string(FEDSPLIT_BINARY) + "' generate" + model() +
                                      " --prompts - --max-tokens 6 2>&1");
  ASSERT_EQ(from_stdin.exit_code, 0) << from_stdin.output;
  auto without_speed = [](std::vector<nlohmann::json> answers) {
    for (auto& a : answers) a.erase("decode_tokens_per_s"), a.erase("prompt_tokens_per_s"), a.erase("seconds");
    return answers;
  };
  EXPECT_EQ(without_speed(json_lines(from_stdin.output)), without_speed(lines))
      << "greedy answers do not depend on where the prompts come from";
}

TEST_F(CliGenerate, SeededSamplingRepeats) {
  const std::string sampled = "generate" + model() + " --prompt 'Call me' --max-tokens 10 --temperature 1.2 --top-k 20 "
                              "--top-p 0.95 --repetition-penalty 1.1 --seed ";
  const auto a = run_fedsplit(sampled + "5"), b = run_fedsplit(sampled + "5");
  ASSERT_EQ(a.exit_code, 0) << a.output;
  auto first_line = [](const std::string& s) { return s.substr(0, s.find('\n')); };
  EXPECT_EQ(first_line(a.output), first_line(b.output));
}

TEST_F(CliGenerate, BadInputIsOneLine) {
  const TempDir& tmp = *tmp_;
  auto refused = [&](const std::string& args, const std::vector<std::string>& needles) {
    const auto r = run_fedsplit("generate" + args);
    EXPECT_NE(r.exit_code, 0) << args;
    for (const auto& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << args << ": " << r.output;
  };
  refused(model() + " --prompt 'Call me Ishmael. Some years ago' --context 8 --max-tokens 4", {"context of 8", "--max-tokens"});
  refused(model() + " --prompt x --temperature -1", {"--temperature"});
  refused(model() + " --prompt x --top-p 0", {"--top-p"});
  refused(model(), {"--prompt"});
  refused(" --model " + (tmp / "missing.gguf") + " --prompt x", {"missing.gguf"});
  refused(" --model " + (tmp / "stages/stage-0.gguf") + " --tokenizer " + (tmp / "base/model") + " --prompt x",
          {"one stage of a pipeline export"});
  // In a prompts file a bad request gets an error line and the others still run.
  write_text(tmp / "mixed.txt", "Call me\nCall me Ishmael. Some years ago never mind how long precisely\n");
  const auto r = run_fedsplit("generate" + model() + " --prompts " + (tmp / "mixed.txt") + " --context 10 --max-tokens 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto lines = json_lines(r.output);
  ASSERT_EQ(lines.size(), 2u) << r.output;
  EXPECT_TRUE(lines[0].contains("completion")) << lines[0].dump();
  EXPECT_NE(lines[1].value("error", "").find("context of 10"), std::string::npos) << lines[1].dump();
}

TEST_F(CliGenerate, DraftModelKeepsTheGreedyAnswers) {
  const TempDir& tmp = *tmp_;
  write_text(tmp / "draft-prompts.txt", "Call me Ishmael.\nIt was the best of times\n");
  const std::string ask = "generate" + model() + " --prompts " + (tmp / "draft-prompts.txt") + " --max-tokens 12";
  const auto plain = run_fedsplit(ask);
  const auto drafted = run_fedsplit(ask + " --draft " + (tmp / "draft/model.gguf") + " --draft-tokens 3");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_EQ(drafted.exit_code, 0) << drafted.output;
  const auto a = json_lines(plain.output), b = json_lines(drafted.output);
  ASSERT_EQ(a.size(), 2u) << plain.output;
  ASSERT_EQ(b.size(), 2u) << drafted.output;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i]["completion"], a[i]["completion"]) << b[i].dump();
    EXPECT_FALSE(a[i].contains("accepted_fraction")) << a[i].dump();
    const double accepted = b[i].value("accepted_fraction", -1.0);
    EXPECT_TRUE(accepted >= 0 && accepted <= 1) << b[i].dump();
  }
  const auto streamed = run_fedsplit("generate" + model() + " --prompt 'Call me' --max-tokens 8 --draft " +
                                     (tmp / "draft/model.gguf"));
  ASSERT_EQ(streamed.exit_code, 0) << streamed.output;
  EXPECT_NE(streamed.output.find("proposed tokens accepted"), std::string::npos) << streamed.output;
}

TEST_F(CliGenerate, DraftOfAnotherVocabularyOrNoTokensIsRefused) {
  const TempDir& tmp = *tmp_;
  auto r = run_fedsplit("generate" + model() + " --prompt x --draft " + (tmp / "other-vocab/model.gguf"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--draft: the draft model's vocabulary of 512"), std::string::npos) << r.output;
  r = run_fedsplit("generate" + model() + " --prompt x --draft " + (tmp / "draft/model.gguf") + " --draft-tokens 0");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--draft-tokens must be at least 1"), std::string::npos) << r.output;
  r = run_fedsplit("generate" + model() + " --prompt x --draft " + (tmp / "missing.gguf"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("missing.gguf"), std::string::npos) << r.output;
}
