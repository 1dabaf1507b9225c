// labels: unit
// `fedsplit plan split` on the tiny llama fixture: a table row per cut, the chosen cut is the table's
// fastest that fits, memory limits move it, and a bad devices.ini stops with one line naming file and key.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <sstream>

#include "core/model/hf.h"
#include "core/util/error.h"
#include "split/devices_profile.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

struct Row {
  std::string cut;
  double total = 0;
  double server_mb = 0;
  bool fits = false;
  std::string why;
};

struct PlanOutput {
  std::vector<Row> rows;
  std::string chosen;   // the cut named on the "chosen cut:" line
  std::string keys;     // the recipe keys it names, e.g. "split.cut = 1"
  double chosen_total = -1;
};

PlanOutput parse(const std::string& output) {
  static const std::regex row(
      R"(^(after [a-z]+(?: [0-9]+)?(?:; after [a-z]+(?: [0-9]+)?)?) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+)  (yes|no: .*)$)");
  static const std::regex chosen(
      R"(^chosen cut: (.*) \((split\.cut = [0-9]+(?:, split\.tail_cut = [0-9]+)?)\): ([0-9.]+) s per step .*$)");
  PlanOutput out;
  std::istringstream in(output);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, row)) {
      out.rows.push_back({m[1], std::stod(m[5]), std::stod(m[7]), m[8] == "yes", m[8]});
    } else if (std::regex_match(line, m, chosen)) {
      out.chosen = m[1];
      out.keys = m[2];
      out.chosen_total = std::stod(m[3]);
    }
  }
  return out;
}

std::string plan_args(const std::string& profile, const std::string& extra = "",
                      const std::string& model = fixtures() + "/hf-tiny/llama") {
  return "plan split --model " + model + " --profile " + profile + " --batch-size 8 --seq-len 64 --threads 1 " +
         "--repetitions 1 " + extra;
}

/// A random 4-block llama written as a HF directory: enough blocks for several cuts on each side.
std::string four_block_model(const TempDir& tmp) {
  Decoder model(family_config(ModelFamily::llama, /*vocab_size=*/256, /*hidden_size=*/64, /*num_layers=*/4,
                              /*num_heads=*/4, /*num_kv_heads=*/2, /*intermediate_size=*/0, /*max_position=*/128));
  model->init_weights(3);
  save_hf_model(model, tmp / "model");
  return tmp / "model";
}

/// The chosen cut must be a feasible row whose total no feasible row beats.
void expect_chosen_is_best(const PlanOutput& plan, const std::string& output) {
  const Row* chosen = nullptr;
  for (const auto& r : plan.rows)
    if (r.cut == plan.chosen) chosen = &r;
  ASSERT_NE(chosen, nullptr) << output;
  EXPECT_TRUE(chosen->fits) << output;
  EXPECT_DOUBLE_EQ(chosen->total, plan.chosen_total) << output;
  for (const auto& r : plan.rows) {
    if (r.fits) {
      EXPECT_LE(chosen->total, r.total) << r.cut << "\n" << output;
    }
  }
}

int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

}  // namespace

TEST(CliPlan, ChoosesTheFastestCutThatFits) {
  TempDir tmp("cli_plan");
  const std::string model = four_block_model(tmp);
  // A slow device: compute there dominates, so the cut moves as early as memory allows.
  const std::string free = tmp / "free.ini";
  write_text(free, "[device]\nspeed = 0.01\n[server]\nspeed = 4\n[link]\nup_mbps = 20\ndown_mbps = 100\nlatency_ms = 30\n");
  auto r = run_fedsplit(plan_args(free, "", model));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  PlanOutput plan = parse(r.output);
  // Four blocks, each side keeping at least one: cuts after blocks 0, 1 and 2.
  ASSERT_EQ(plan.rows.size(), 3u) << r.output;
  EXPECT_EQ(plan.rows[0].cut, "after block 0");
  EXPECT_EQ(plan.rows[2].cut, "after block 2");
  expect_chosen_is_best(plan, r.output);
  EXPECT_EQ(plan.chosen, "after block 0") << r.output;
  EXPECT_EQ(plan.keys, "split.cut = 1") << r.output;
  EXPECT_NE(r.output.find("profile of "), std::string::npos);

  // A server that holds one block and the head but not two blocks: only the last cut fits.
  const double last = plan.rows[2].server_mb, before = plan.rows[1].server_mb;
  ASSERT_GT(before - last, 1.0) << "blocks too small for a 1 MB limit to separate the cuts:\n" << r.output;
  const auto limit = static_cast<int64_t>(std::ceil(last + 0.1));  // the table rounds to 0.1 MB
  ASSERT_LT(limit, before);
  const std::string tight = tmp / "tight.ini";
  write_text(tight, "[device]\nspeed = 0.01\n[server]\nspeed = 4\nmemory_mb = " + std::to_string(limit) +
                        "\n[network]\nlink = 20/100/30\n");
  r = run_fedsplit(plan_args(tight, "", model));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  plan = parse(r.output);
  ASSERT_EQ(plan.rows.size(), 3u) << r.output;
  EXPECT_FALSE(plan.rows[0].fits);
  EXPECT_FALSE(plan.rows[1].fits);
  EXPECT_NE(plan.rows[1].why.find("no: server memory"), std::string::npos) << r.output;
  EXPECT_TRUE(plan.rows[2].fits);
  EXPECT_EQ(plan.chosen, "after block 2") << r.output;
  EXPECT_EQ(plan.keys, "split.cut = 3") << r.output;
  expect_chosen_is_best(plan, r.output);

  // U-shaped: every 1 <= cut < tail_cut <= 4, the device keeping the head; still the best feasible row.
  r = run_fedsplit(plan_args(free, "--scheme ushaped --codec fp16", model));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  plan = parse(r.output);
  ASSERT_EQ(plan.rows.size(), 6u) << r.output;
  EXPECT_EQ(plan.rows[0].cut, "after block 0; after block 1");
  EXPECT_EQ(plan.rows[5].cut, "after block 2; after block 3");
  expect_chosen_is_best(plan, r.output);
  EXPECT_NE(plan.keys.find("split.tail_cut = "), std::string::npos) << r.output;

  // A server too small for a block and the head: nothing fits, and the error names the key to raise.
  const std::string tiny = tmp / "tiny.ini";
  write_text(tiny, "[device]\nspeed = 1\n[server]\nspeed = 4\nmemory_mb = 1\n[network]\nlink = 20/100/30\n");
  r = run_fedsplit(plan_args(tiny, "", model));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  const std::string last_line = r.output.substr(r.output.rfind('\n', r.output.size() - 2) + 1);
  EXPECT_EQ(last_line.rfind("fedsplit: " + tiny + ": no placement fits", 0), 0u) << r.output;
  EXPECT_NE(last_line.find("set server.memory_mb to at least"), std::string::npos) << r.output;
}

TEST(CliPlan, BadProfilesStopWithOneLine) {
  TempDir tmp("cli_plan_errors");
  const std::string good_link = "[link]\nup_mbps = 20\ndown_mbps = 100\nlatency_ms = 30\n";
  struct Case {
    std::string text;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"[device]\nsped = 1\n[server]\nspeed = 2\n" + good_link, {"device.sped", "device.speed"}},
      {"[device]\nspeed = fast\n[server]\nspeed = 2\n" + good_link, {":2", "device.speed", "fast"}},
      {"[device]\nspeed = 0\n[server]\nspeed = 2\n" + good_link, {"device.speed", "out of range"}},
      {"[device]\nspeed = 1\nmemory_mb = -5\n[server]\nspeed = 2\n" + good_link, {"device.memory_mb", "out of range"}},
      {"[device]\nspeed = 1\n" + good_link, {"server.speed is required"}},
      {"[device]\nspeed = 1\n[server]\nspeed = 2\n", {"no link", "[network] link"}},
      {"[device]\nspeed = 1\n[server]\nspeed = 2\n[link]\nup_mbps = 20\n", {"link.down_mbps is missing"}},
      {"[device]\nspeed = 1\n[server]\nspeed = 2\n[network]\nlink = 20/100\n", {"network.link", "up_mbps/down_mbps/latency_ms"}},
      {"[device]\nspeed = 1\n[server]\nspeed = 2\n[network]\nlink = 20/100/30\n" + good_link, {"network.link", "keep one"}},
      {"link = 20/100/30\n[device]\nspeed = 1\n[server]\nspeed = 2\n", {"'link'", "network.link"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = tmp / ("bad" + std::to_string(i) + ".ini");
    write_text(path, cases[i].text);
    SCOPED_TRACE(cases[i].text);
    auto needles = cases[i].needles;
    needles.push_back(path);
    // The reader, in process (each run of the binary costs a LibTorch start-up) ...
    expect_one_line_error<ConfigError>([&] { read_devices_profile(path); }, needles);
    // ... and the command, for the first few: exit code 1 and the message as its only line.
    if (i < 3) {
      const auto r = run_fedsplit(plan_args(path));
      EXPECT_EQ(r.exit_code, 1) << r.output;
      EXPECT_EQ(lines(r.output), 1) << r.output;
      for (const auto& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << n << " in " << r.output;
    }
  }

  // A missing file, a missing model directory, and bad flags.
  const std::string good = tmp / "good.ini";
  write_text(good, "[device]\nspeed = 1\n[server]\nspeed = 2\n" + good_link);
  auto r = run_fedsplit(plan_args(tmp / "absent.ini"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find(tmp / "absent.ini"), std::string::npos) << r.output;
  r = run_fedsplit("plan split --model " + (tmp / "no-model") + " --profile " + good);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(lines(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("no-model"), std::string::npos) << r.output;
  r = run_fedsplit(plan_args(good, "--codec fp8"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--codec"), std::string::npos) << r.output;
  r = run_fedsplit(plan_args(good, "--scheme y"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("vanilla|ushaped"), std::string::npos) << r.output;
  r = run_fedsplit("plan split --model " + fixtures() + "/hf-tiny/llama --profile " + good + " --seq-len 4096");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("max_position"), std::string::npos) << r.output;
  // The two-block fixture has a single cut: one block on each side.
  r = run_fedsplit(plan_args(good));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(parse(r.output).rows.size(), 1u) << r.output;
  r = run_fedsplit("plan pipeline");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("available: split"), std::string::npos) << r.output;

  // The shipped example profile is valid.
  r = run_fedsplit(plan_args(std::string(FEDSPLIT_SOURCE_DIR) + "/recipes/devices-phone.ini"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chosen cut: after "), std::string::npos) << r.output;
}
