// The run report: one self-contained HTML page (inline CSS and SVG, no scripts, no other files)
// with charts and tables of a run directory, for `fedsplit report RUN_DIR`.
//
// It reads RUN_DIR/metrics.jsonl, one JSON object per line with an "event" field. Events used
// (any field may be missing; what is missing is skipped, and other events are ignored):
//
//   round  federated round t:  round, clients_sampled, clients_aggregated,
//          excluded: [{client, reason}], train_loss, and the round's own (not cumulative)
//          bytes_up, bytes_down, sim_network_s, sim_round_s, wall_s
//   eval   held-out evaluation: round (federated) or step (centralized), val_loss, val_ppl,
//          client_ppl: {client name: perplexity}
//   train  centralized step:   step, loss (lr, tokens_per_s, elapsed_s are not charted)
//
// A run with round events is charted per round, otherwise per step. A resumed run may repeat a
// round or step: the later line replaces the earlier one. When present, RUN_DIR/summary.json
// and RUN_DIR/partition.json (any JSON objects) become tables and RUN_DIR/recipe.ini is shown
// as text. Every text from these files is HTML-escaped. The same files give the same bytes.
#pragma once
#include <string>

namespace fedsplit {

/// Reads the run directory's metrics (and summary/partition/recipe when present) and returns the
/// HTML page. Throws IoError when `run_dir` or its metrics.jsonl is missing, and FormatError
/// naming the file (and line) when a file is not valid JSON.
std::string render_report(const std::string& run_dir);

/// render_report, written atomically to `out` (default <run_dir>/report.html); returns the path written.
std::string write_report(const std::string& run_dir, const std::string& out = "");

}  // namespace fedsplit
