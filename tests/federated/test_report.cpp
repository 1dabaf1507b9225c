// labels: unit
// The run report: charts and tables of synthetic federated and centralized run directories
// (escaping, the later of a repeated round, no scripts, same input gives same bytes), its errors,
// the chart helpers, and `fedsplit report` through the executable.
#include <gtest/gtest.h>

#include <string>

#include "core/util/error.h"
#include "federated/report.h"
#include "federated/svg_chart.h"
#include "tests/launch/cli_helpers.h"
#include "tests/test_support.h"

using namespace fedsplit;
using namespace fedsplit::testing;

namespace {

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string round_line(int round, double loss, const std::string& excluded) {
  return R"({"event":"round","round":)" + std::to_string(round) +
         R"(,"clients_sampled":3,"clients_aggregated":2,"excluded":[)" + excluded + R"(],"train_loss":)" +
         std::to_string(loss) +
         R"(,"bytes_up":1500000,"bytes_down":3000000,"sim_network_s":0.5,"sim_round_s":1.5,"wall_s":0.25})" + "\n";
}

std::string eval_line(int round, double ppl) {
  return R"({"event":"eval","round":)" + std::to_string(round) + R"(,"val_loss":2.0,"val_ppl":)" +
         std::to_string(ppl) + R"(,"client_ppl":{"alice":)" + std::to_string(ppl + 1) +
         R"(,"<b>&co":)" + std::to_string(ppl + 2) + "}}\n";
}

// Three rounds; round 2 is logged twice (a resumed run) and the second line must win.
void write_federated_run(const std::string& dir) {
  std::string metrics = round_line(1, 5.5, R"({"client":"<b>&co","reason":"late"})") + eval_line(1, 40) +
                        round_line(2, 4.321, R"({"client":"alice","reason":"stale-first-try"})") +
                        round_line(2, 1.234, R"({"client":"alice","reason":"dropped"})") + eval_line(2, 20) +
                        R"({"event":"something_else","x":1})" + "\n" + round_line(3, 0.875, "") + eval_line(3, 10);
  write_text(dir + "/metrics.jsonl", metrics);
  write_text(dir + "/summary.json", R"({"rounds":3,"val_ppl":10.5,"bytes_up":4500000,"note":"a<b"})");
  write_text(dir + "/partition.json",
             R"({"clients":2,"documents":30,"documents_per_client":{"min":10,"median":20,"max":20},)"
             R"("per_client":[{"name":"alice","documents":10,"labels":{"x":10}},)"
             R"({"name":"<b>&co","documents":20,"labels":{"x":5,"y":15}}]})");
  write_text(dir + "/recipe.ini", "[federated]\nrounds = 3\nnote = <i>\n");
}

void write_train_run(const std::string& dir) {
  std::string metrics;
  for (int step = 1; step <= 6; ++step)
    metrics += R"({"event":"train","step":)" + std::to_string(step) + R"(,"loss":)" + std::to_string(6.0 - step * 0.5) +
               R"(,"lr":0.01,"tokens_per_s":1000,"elapsed_s":)" + std::to_string(step) + "}\n";
  metrics += R"({"event":"eval","step":3,"val_loss":4.5,"val_ppl":90.0})" "\n"
             R"({"event":"eval","step":6,"val_loss":3.5,"val_ppl":33.1})" "\n";
  write_text(dir + "/metrics.jsonl", metrics);
}

}  // namespace

TEST(Report, FederatedRunHasEveryChartAndEscapedText) {
  TempDir tmp("report_fed");
  write_federated_run(tmp.path());
  const std::string html = render_report(tmp.path());
  // Loss, perplexity, per-client perplexity, bytes, time, clients.
  EXPECT_EQ(count_of(html, "<svg"), 6u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_EQ(html.find("<i>"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;&amp;co"), std::string::npos);
  EXPECT_NE(html.find("&lt;i&gt;"), std::string::npos);  // the recipe
  // The repeated round: the later line's loss and exclusion, not the earlier one's.
  EXPECT_NE(html.find("<td>1.234</td>"), std::string::npos);
  EXPECT_EQ(html.find("4.321"), std::string::npos);
  EXPECT_NE(html.find("dropped"), std::string::npos);
  EXPECT_EQ(html.find("stale-first-try"), std::string::npos);
  EXPECT_NE(html.find("<td>late</td>"), std::string::npos);
  // Tables of summary.json and partition.json, with bytes in readable units.
  EXPECT_NE(html.find("4500000 (4.5 MB)"), std::string::npos);
  EXPECT_NE(html.find("documents_per_client.median"), std::string::npos);
  EXPECT_NE(html.find("x: 5, y: 15"), std::string::npos);
  EXPECT_NE(html.find(">10 MB</text>"), std::string::npos);  // the cumulative bytes axis (9 MB) ends at 10 MB
}

TEST(Report, HierarchicalRunsGetPerTierCharts) {
  TempDir tmp("report_tiers");
  write_federated_run(tmp.path());
  std::string metrics = read_text(tmp.path() + "/metrics.jsonl");
  const std::string flat_html = render_report(tmp.path());
  metrics += R"({"event":"round","round":3,"bytes_up":10,"bytes_down":10,"tiers":{"device_edge":{"bytes_up":7000000,"bytes_down":8000000,"sim_s":1.5},"edge_cloud":{"bytes_up":2000000,"bytes_down":2000000,"sim_s":0.2}}})" "\n";
  write_text(tmp.path() + "/metrics.jsonl", metrics);
  const std::string html = render_report(tmp.path());
  EXPECT_EQ(count_of(html, "<svg"), count_of(flat_html, "<svg") + 2) << "bytes and simulated time per tier";
  EXPECT_NE(html.find("device-edge up"), std::string::npos);
  EXPECT_NE(html.find("Simulated time per tier"), std::string::npos);
}

TEST(Report, SameInputGivesSameBytes) {
  TempDir tmp("report_same");
  write_federated_run(tmp.path());
  EXPECT_EQ(render_report(tmp.path()), render_report(tmp.path()));
}

TEST(Report, ManyClientsTurnGreyUnderABand) {
  TempDir tmp("report_many");
  std::string metrics;
  for (int round = 1; round <= 3; ++round) {
    metrics += R"({"event":"eval","round":)" + std::to_string(round) + R"(,"val_ppl":20,"client_ppl":{)";
    for (int c = 0; c < 20; ++c)
      metrics += (c ? ",\"c" : "\"c") + std::to_string(c) + "\":" + std::to_string(10 + c);
    metrics += "}}\n";
  }
  write_text(tmp / "metrics.jsonl", metrics);
  const std::string html = render_report(tmp.path());
  EXPECT_NE(html.find("each of 20 clients"), std::string::npos);
  EXPECT_NE(html.find("clients min..max"), std::string::npos);
  EXPECT_NE(html.find("<polygon"), std::string::npos);
}

TEST(Report, TrainRunRendersPerStep) {
  TempDir tmp("report_train");
  write_train_run(tmp.path());
  const std::string html = render_report(tmp.path());
  EXPECT_EQ(count_of(html, "<svg"), 2u);  // loss, perplexity
  EXPECT_NE(html.find(">step</text>"), std::string::npos);
  EXPECT_NE(html.find("<td>33.1</td>"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

TEST(Report, Errors) {
  TempDir tmp("report_errors");
  expect_error<IoError>([&] { render_report(tmp / "missing"); }, {tmp / "missing", "pass a run directory"});
  expect_error<IoError>([&] { render_report(tmp.path()); }, {"metrics.jsonl", "pass a run directory"});
  write_text(tmp / "metrics.jsonl", R"({"event":"round","round":1})" "\n\n{not json\n");
  expect_one_line_error<FormatError>([&] { render_report(tmp.path()); }, {tmp / "metrics.jsonl", "line 3"});
  write_text(tmp / "metrics.jsonl", "[1,2]\n");
  expect_error<FormatError>([&] { render_report(tmp.path()); }, {"line 1", "JSON object"});
  write_text(tmp / "metrics.jsonl", R"({"event":"round","round":1})" "\n");
  write_text(tmp / "summary.json", "{broken");
  expect_error<FormatError>([&] { render_report(tmp.path()); }, {tmp / "summary.json"});
}

TEST(SvgChart, NiceTicksAndUnits) {
  EXPECT_EQ(nice_ticks(0, 9.3, 6), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  EXPECT_EQ(nice_ticks(1, 3, 6, /*integer_step=*/true), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(nice_ticks(5, 5, 6, true), (std::vector<double>{4, 5, 6}));
  EXPECT_LE(nice_ticks(1e17, 1e17 + 16, 6).size(), 100u);  // a range below the values' precision ends
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1.5e6), "1.5 MB");
  EXPECT_EQ(format_bytes(3.2e9), "3.2 GB");
  EXPECT_EQ(format_number(25000), "25k");
  EXPECT_EQ(escape_html("<a href='x'>&\""), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;");
  ChartSpec empty;
  empty.title = "nothing";
  EXPECT_NE(line_chart(empty).find("no data"), std::string::npos);
}

TEST(CliReport, WritesReportHtmlAndNeedsARunDir) {
  TempDir tmp("report_cli");
  write_federated_run(tmp / "run");
  auto r = run_fedsplit("report '" + (tmp / "run") + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_text(tmp / "run/report.html"), render_report(tmp / "run"));
  r = run_fedsplit("report '" + (tmp / "run") + "' --out '" + (tmp / "elsewhere.html") + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(read_text(tmp / "elsewhere.html").find("<svg"), std::string::npos);
  r = run_fedsplit("report");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("usage: fedsplit report RUN_DIR"), std::string::npos) << r.output;
  r = run_fedsplit("report '" + (tmp / "nowhere") + "'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("pass a run directory"), std::string::npos) << r.output;
}
