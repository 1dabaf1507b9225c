#include "federated/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/util/error.h"
#include "core/util/fs.h"
#include "federated/svg_chart.h"

namespace fedsplit {
namespace {

using nlohmann::json;
using Points = std::vector<std::pair<double, double>>;

/// What the report shows of a run directory.
struct Run {
  bool federated = false;            ///< charted per round (else per step)
  std::map<int64_t, json> rounds;    ///< round events by round
  std::map<int64_t, json> steps;     ///< train events by step
  std::map<int64_t, json> evals;     ///< eval events by round (federated) or step
  json summary, partition;           ///< null when the file is absent
  std::optional<std::string> recipe;
};

std::optional<double> finite_number(const json& v) {
  if (!v.is_number() || !std::isfinite(v.get<double>())) return std::nullopt;
  return v.get<double>();
}

// A finite number at `key`, or at a JSON pointer ("/tiers/edge_cloud/bytes_up") into nested objects.
std::optional<double> number(const json& j, const char* key) {
  if (key[0] == '/') {
    const json::json_pointer at(key);
    return j.contains(at) ? finite_number(j.at(at)) : std::nullopt;
  }
  const auto it = j.find(key);
  return it == j.end() ? std::nullopt : finite_number(*it);
}

// A round or step number: an integer, or a float that holds one.
std::optional<int64_t> index_of(const json& j, const char* key) {
  const auto v = number(j, key);
  if (!v || std::floor(*v) != *v || std::abs(*v) > 1e15) return std::nullopt;
  return static_cast<int64_t>(*v);
}

// nlohmann's message without its "[json.exception...] " tag, and for a parse error of one line
// without "parse error at line 1, column N: " either (the caller names the line).
std::string reason_of(const json::exception& e, bool one_line) {
  std::string what = e.what();
  if (const size_t tag = what.find("] "); what.rfind("[json.exception", 0) == 0 && tag != std::string::npos)
    what = what.substr(tag + 2);
  if (const size_t at = what.find(": "); one_line && what.rfind("parse error at", 0) == 0 && at != std::string::npos)
    what = what.substr(at + 2);
  return what;
}

json read_optional_json(const std::string& path) {
  if (!path_exists(path)) return nullptr;
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw FormatError(path + " is not valid JSON (" + reason_of(e, false) +
                      "): fix or remove it and run the report again");
  }
}

Run load_run(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw IoError("run directory " + dir + " does not exist or is not a directory: pass a run directory (the "
                  "recipe's run.dir, which holds metrics.jsonl)");
  const std::string path = dir + "/metrics.jsonl";
  if (!path_exists(path))
    throw IoError(path + " not found: pass a run directory (the recipe's run.dir) of a run that has started");
  Run run;
  std::map<int64_t, json> evals_by_round, evals_by_step;
  std::istringstream in(read_file(path));
  size_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw FormatError(path + " line " + std::to_string(line_number) + ", column " + std::to_string(e.byte) +
                        " is not valid JSON (" + reason_of(e, true) + "): each line must be one JSON object");
    }
    if (!j.is_object())
      throw FormatError(path + " line " + std::to_string(line_number) + " is not a JSON object: each line must be "
                        "one object with an \"event\" field");
    const auto event = j.find("event");
    if (event == j.end() || !event->is_string()) continue;
    // Maps keep the last line per round or step: a resumed run's repeat replaces the earlier one.
    if (*event == "round") {
      if (const auto r = index_of(j, "round")) run.rounds[*r] = j;
    } else if (*event == "train") {
      if (const auto s = index_of(j, "step")) run.steps[*s] = j;
    } else if (*event == "eval") {
      if (const auto r = index_of(j, "round")) evals_by_round[*r] = j;
      else if (const auto s = index_of(j, "step")) evals_by_step[*s] = j;
    }
  }
  run.federated = !run.rounds.empty() || !evals_by_round.empty();
  run.evals = run.federated ? evals_by_round : evals_by_step;
  run.summary = read_optional_json(dir + "/summary.json");
  run.partition = read_optional_json(dir + "/partition.json");
  if (path_exists(dir + "/recipe.ini")) run.recipe = read_file(dir + "/recipe.ini");
  return run;
}

// An eval's perplexity, from val_loss when val_ppl is absent.
std::optional<double> perplexity(const json& eval) {
  if (const auto p = number(eval, "val_ppl")) return p;
  if (const auto l = number(eval, "val_loss")) return std::exp(*l);
  return std::nullopt;
}

// `key` of each record, as points; `cumulative` sums them in round order.
Points series_of(const std::map<int64_t, json>& records, const char* key, bool cumulative = false) {
  Points out;
  double total = 0;
  for (const auto& [x, j] : records)
    if (const auto v = number(j, key)) {
      total = cumulative ? total + *v : *v;
      out.push_back({static_cast<double>(x), total});
    }
  return out;
}

// Log scale when the values span more than a factor `ratio` (perplexity falls by orders).
bool wide_range(const std::vector<const Points*>& all, double ratio) {
  double lo = INFINITY, hi = 0;
  for (const auto* points : all)
    for (const auto& [x, y] : *points) lo = std::min(lo, y), hi = std::max(hi, y);
  return lo > 0 && hi / lo > ratio;
}

ChartSeries line(const std::string& name, Points points, const std::string& color = "", double width = 2.0,
                 bool dashed = false, bool in_legend = true) {
  ChartSeries s;
  s.name = name, s.points = std::move(points), s.color = color, s.width = width, s.dashed = dashed;
  s.in_legend = in_legend;
  return s;
}

bool any_points(const ChartSpec& spec) {
  for (const auto& s : spec.series)
    if (!s.points.empty()) return true;
  return false;
}

ChartSpec chart(const Run& run, const std::string& title, const std::string& y_label) {
  ChartSpec c;
  c.title = title;
  c.x_label = run.federated ? "round" : "step";
  c.y_label = y_label;
  c.integer_x = true;
  return c;
}

ChartSpec loss_chart(const Run& run) {
  ChartSpec c = chart(run, "Training loss", "loss");
  c.series.push_back(
      line("train loss", run.federated ? series_of(run.rounds, "train_loss") : series_of(run.steps, "loss")));
  c.series.push_back(line("held-out loss", series_of(run.evals, "val_loss"), "", 2.0, true));
  return c;
}

Points overall_perplexity(const Run& run) {
  Points out;
  for (const auto& [x, j] : run.evals)
    if (const auto p = perplexity(j)) out.push_back({static_cast<double>(x), *p});
  return out;
}

ChartSpec perplexity_chart(const Run& run) {
  ChartSpec c = chart(run, "Held-out perplexity", "perplexity");
  c.series.push_back(line("held-out perplexity", overall_perplexity(run)));
  c.log_y = wide_range({&c.series[0].points}, 20);
  return c;
}

// One line per client; past 12 clients they turn thin and grey under a min..max band, so that
// the overall line stays readable.
ChartSpec client_chart(const Run& run) {
  std::map<std::string, Points> clients;
  ChartBand band;
  band.name = "clients min..max";
  for (const auto& [x, j] : run.evals) {
    const auto it = j.find("client_ppl");
    if (it == j.end() || !it->is_object()) continue;
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& [name, value] : it->items())
      if (const auto p = finite_number(value)) {
        clients[name].push_back({static_cast<double>(x), *p});
        lo = std::min(lo, *p), hi = std::max(hi, *p);
      }
    if (lo <= hi) band.x.push_back(x), band.low.push_back(lo), band.high.push_back(hi);
  }
  ChartSpec c = chart(run, "Held-out perplexity per client", "perplexity");
  if (clients.empty()) return c;
  const bool many = clients.size() > 12;
  if (many) {
    c.bands.push_back(band);
    c.series.push_back(line("each of " + std::to_string(clients.size()) + " clients", {}, "#a0a0a0", 1.0));
  }
  std::vector<const Points*> all;
  for (const auto& [name, points] : clients) {
    c.series.push_back(line(name, points, many ? "#a0a0a0" : "", many ? 0.8 : 1.8, false, !many));
    all.push_back(&points);
  }
  c.series.push_back(line("overall", overall_perplexity(run), many ? "#d62728" : "#222222", many ? 2.5 : 2.0, !many));
  c.log_y = wide_range(all, 20);
  return c;
}

ChartSpec bytes_chart(const Run& run) {
  ChartSpec c = chart(run, "Communication (cumulative)", "bytes");
  c.y_units = ChartUnits::bytes;
  c.y_from_zero = true;
  c.series.push_back(line("bytes up (clients to server)", series_of(run.rounds, "bytes_up", true)));
  c.series.push_back(line("bytes down (server to clients)", series_of(run.rounds, "bytes_down", true)));
  return c;
}

// Hierarchical runs: what each tier's links carried and how long each tier took (simulated).
ChartSpec tier_bytes_chart(const Run& run) {
  ChartSpec c = chart(run, "Communication per tier (cumulative)", "bytes");
  c.y_units = ChartUnits::bytes;
  c.y_from_zero = true;
  c.series.push_back(line("device-edge up", series_of(run.rounds, "/tiers/device_edge/bytes_up", true)));
  c.series.push_back(line("device-edge down", series_of(run.rounds, "/tiers/device_edge/bytes_down", true)));
  c.series.push_back(line("edge-cloud up", series_of(run.rounds, "/tiers/edge_cloud/bytes_up", true), "", 2.0, true));
  c.series.push_back(line("edge-cloud down", series_of(run.rounds, "/tiers/edge_cloud/bytes_down", true), "", 2.0, true));
  return c;
}

ChartSpec tier_time_chart(const Run& run) {
  ChartSpec c = chart(run, "Simulated time per tier (cumulative)", "seconds");
  c.y_from_zero = true;
  c.series.push_back(line("device-edge (slowest edge)", series_of(run.rounds, "/tiers/device_edge/sim_s", true)));
  c.series.push_back(line("edge-cloud", series_of(run.rounds, "/tiers/edge_cloud/sim_s", true), "", 2.0, true));
  return c;
}

ChartSpec time_chart(const Run& run) {
  ChartSpec c = chart(run, "Time (cumulative): simulated network vs wall clock", "seconds");
  c.y_from_zero = true;
  c.series.push_back(line("simulated network", series_of(run.rounds, "sim_network_s", true)));
  c.series.push_back(line("simulated round", series_of(run.rounds, "sim_round_s", true), "", 2.0, true));
  c.series.push_back(line("wall clock", series_of(run.rounds, "wall_s", true)));
  return c;
}

ChartSpec clients_chart(const Run& run) {
  ChartSpec c = chart(run, "Clients per round", "clients");
  c.y_from_zero = true;
  c.integer_y = true;
  // Sampled wide and light under aggregated, so that both show where they are equal.
  c.series.push_back(line("sampled", series_of(run.rounds, "clients_sampled"), "#9ecae1", 5.0));
  c.series.push_back(line("aggregated", series_of(run.rounds, "clients_aggregated")));
  return c;
}

// A number for a table: whole numbers in full, others to 6 significant digits.
std::string table_number(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, std::floor(v) == v && std::abs(v) < 1e15 ? "%.0f" : "%.6g", v);
  return buf;
}

// A table cell for any JSON value: numbers by table_number, objects as "key: value, ...".
std::string cell(const json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return v.dump();
  if (v.is_number()) return table_number(v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  if (v.is_object()) {
    std::string out;
    for (const auto& [k, x] : v.items()) out += (out.empty() ? "" : ", ") + k + ": " + cell(x);
    return out;
  }
  if (v.is_array()) {
    std::string out;
    for (const auto& x : v) out += (out.empty() ? "" : ", ") + cell(x);
    return "[" + out + "]";
  }
  return v.dump();
}

// A number of bytes also in KB/MB/GB when its key says bytes.
std::string cell_for(const std::string& key, const json& v) {
  const std::string text = cell(v);
  if (v.is_number() && key.find("bytes") != std::string::npos && std::abs(v.get<double>()) >= 1000)
    return text + " (" + format_bytes(v.get<double>()) + ")";
  return text;
}

std::string row(const std::vector<std::string>& cells, const char* tag = "td") {
  std::string out = "<tr>";
  for (const auto& c : cells) out += std::string("<") + tag + ">" + escape_html(c) + "</" + tag + ">";
  return out + "</tr>\n";
}

std::string key_value_table(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::string out = "<table>\n";
  for (const auto& [k, v] : rows) out += row({k, v});
  return out + "</table>\n";
}

// One row per element (array) or per key (object of objects), columns the union of their keys.
std::string record_table(const json& records, const std::string& key_column) {
  std::vector<std::string> columns;
  std::set<std::string> seen;
  std::vector<std::pair<std::string, const json*>> rows;
  for (const auto& [k, r] : records.items()) rows.push_back({k, &r});
  for (const auto& [k, r] : rows)
    for (const auto& [c, x] : r->items())
      if (seen.insert(c).second) columns.push_back(c);
  // Names first: the rest follow in the files' (sorted) key order.
  for (const char* first : {"client", "name"})
    if (const auto it = std::find(columns.begin(), columns.end(), first); it != columns.end())
      std::rotate(columns.begin(), it, it + 1);
  std::vector<std::string> head;
  if (records.is_object()) head.push_back(key_column);
  head.insert(head.end(), columns.begin(), columns.end());
  std::string out = "<table>\n" + row(head, "th");
  for (const auto& [k, r] : rows) {
    std::vector<std::string> cells;
    if (records.is_object()) cells.push_back(k);
    for (const auto& c : columns) cells.push_back(r->contains(c) ? cell_for(c, (*r)[c]) : "");
    out += row(cells);
  }
  return out + "</table>\n";
}

bool is_record_list(const json& v) {
  if (!(v.is_array() || v.is_object()) || v.empty()) return false;
  for (const auto& x : v)
    if (!x.is_object()) return false;
  return true;
}

// Any JSON object as tables: scalars (and flat sub-objects as "a.b") in one key/value table, then a
// table per list of records (such as a partition's per-client rows).
std::string json_tables(const json& j, const std::string& file) {
  if (!j.is_object()) return "<p>" + escape_html(file) + " holds " + escape_html(cell(j)) + "</p>\n";
  std::vector<std::pair<std::string, std::string>> flat;
  std::string records;
  for (const auto& [k, v] : j.items()) {
    if (is_record_list(v)) {
      records += "<h3>" + escape_html(k) + "</h3>\n" + record_table(v, "name");
    } else if (v.is_object()) {
      for (const auto& [sub, x] : v.items()) flat.push_back({k + "." + sub, cell_for(sub, x)});
    } else {
      flat.push_back({k, cell_for(k, v)});
    }
  }
  return (flat.empty() ? "" : key_value_table(flat)) + records;
}

std::string optional_cell(const json& j, const char* key, bool bytes = false) {
  const auto v = number(j, key);
  if (!v) return "";
  return bytes ? format_bytes(*v) : table_number(*v);
}

// Per round: the numbers behind the charts, for readers who want exact values.
std::string rounds_table(const Run& run) {
  std::string out = "<table>\n" + row({"round", "sampled", "aggregated", "excluded", "train loss", "val loss",
                                       "val ppl", "bytes up", "bytes down", "sim network s", "wall s"},
                                      "th");
  std::set<int64_t> xs;
  for (const auto& [x, j] : run.rounds) xs.insert(x);
  for (const auto& [x, j] : run.evals) xs.insert(x);
  const json none = json::object();
  for (const int64_t x : xs) {
    const auto r = run.rounds.find(x);
    const auto e = run.evals.find(x);
    const json& round = r == run.rounds.end() ? none : r->second;
    const json& eval = e == run.evals.end() ? none : e->second;
    const auto excluded = round.find("excluded");
    const auto ppl = perplexity(eval);
    out += row({std::to_string(x), optional_cell(round, "clients_sampled"), optional_cell(round, "clients_aggregated"),
                excluded != round.end() && excluded->is_array() ? std::to_string(excluded->size()) : "",
                optional_cell(round, "train_loss"), optional_cell(eval, "val_loss"),
                ppl ? table_number(*ppl) : "", optional_cell(round, "bytes_up", true),
                optional_cell(round, "bytes_down", true), optional_cell(round, "sim_network_s"),
                optional_cell(round, "wall_s")});
  }
  return out + "</table>\n";
}

std::string evals_table(const Run& run) {
  std::string out = "<table>\n" + row({"step", "val loss", "val ppl"}, "th");
  for (const auto& [x, j] : run.evals) {
    const auto ppl = perplexity(j);
    out += row({std::to_string(x), optional_cell(j, "val_loss"), ppl ? table_number(*ppl) : ""});
  }
  return out + "</table>\n";
}

// Clients left out of aggregation, with the reasons the server gave.
std::string excluded_table(const Run& run) {
  std::string rows;
  for (const auto& [x, j] : run.rounds) {
    const auto it = j.find("excluded");
    if (it == j.end() || !it->is_array()) continue;
    for (const auto& e : *it) {
      if (e.is_object())
        rows += row({std::to_string(x), e.contains("client") ? cell(e["client"]) : "",
                     e.contains("reason") ? cell(e["reason"]) : ""});
      else
        rows += row({std::to_string(x), cell(e), ""});
    }
  }
  return rows.empty() ? "" : "<table>\n" + row({"round", "client", "reason"}, "th") + rows + "</table>\n";
}

constexpr const char* kStyle = R"(
body{font-family:sans-serif;margin:24px auto;max-width:1520px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts svg{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}pre{background:#f7f7f7;padding:12px;overflow-x:auto;font-size:12px}
)";

}  // namespace

std::string render_report(const std::string& run_dir) {
  const Run run = load_run(run_dir);
  std::string charts;
  std::vector<ChartSpec> specs = {loss_chart(run), perplexity_chart(run)};
  if (run.federated)
    for (auto&& s : {client_chart(run), bytes_chart(run), tier_bytes_chart(run), time_chart(run), tier_time_chart(run),
                     clients_chart(run)})
      specs.push_back(s);
  for (const auto& s : specs)
    if (any_points(s)) charts += line_chart(s);

  const size_t progress = run.federated ? run.rounds.size() : run.steps.size();
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>fedsplit report: " +
                  escape_html(run_dir) + "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n";
  o += "<h1>fedsplit run report</h1>\n<p>Run directory <code>" + escape_html(run_dir) + "</code>: " +
       (run.federated ? "federated, " + std::to_string(progress) + " rounds"
                      : "centralized training, " + std::to_string(progress) + " logged steps") +
       ", " + std::to_string(run.evals.size()) + " evaluations.</p>\n";
  o += "<h2>Charts</h2>\n<div class=\"charts\">\n" + (charts.empty() ? "<p>No metrics to chart yet.</p>\n" : charts) +
       "</div>\n";
  if (run.federated) o += "<h2>Rounds</h2>\n" + rounds_table(run);
  else if (!run.evals.empty()) o += "<h2>Evaluations</h2>\n" + evals_table(run);
  if (const std::string t = excluded_table(run); !t.empty()) o += "<h2>Excluded clients</h2>\n" + t;
  if (!run.summary.is_null()) o += "<h2>Summary (summary.json)</h2>\n" + json_tables(run.summary, "summary.json");
  if (!run.partition.is_null())
    o += "<h2>Partition (partition.json)</h2>\n" + json_tables(run.partition, "partition.json");
  if (run.recipe) o += "<h2>Recipe (recipe.ini)</h2>\n<pre>" + escape_html(*run.recipe) + "</pre>\n";
  return o + "</body>\n</html>\n";
}

std::string write_report(const std::string& run_dir, const std::string& out) {
  const std::string path = out.empty() ? run_dir + "/report.html" : out;
  write_text_atomically(path, render_report(run_dir));
  return path;
}

}  // namespace fedsplit
