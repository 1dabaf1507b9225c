// Line charts as inline SVG text, for reports that must open offline without scripts: axes with
// "nice" ticks (1, 2, 5 x 10^k), optional log-scale y, a legend below the plot, and optional
// shaded bands (e.g. the min..max over clients). Output depends only on the spec: the same spec
// gives the same bytes.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace fedsplit {

/// One line of a chart.
struct ChartSeries {
  std::string name;                              ///< legend text and hover title (escaped when drawn)
  std::vector<std::pair<double, double>> points; ///< (x, y), drawn in the given order
  std::string color;                             ///< CSS colour; "" takes the next palette colour
  double width = 2.0;                            ///< stroke width in pixels
  bool dashed = false;
  bool in_legend = true;                         ///< false: drawn, but not listed in the legend
};

/// A shaded area between two curves that share x values.
struct ChartBand {
  std::string name;                              ///< legend text
  std::vector<double> x, low, high;              ///< equal lengths
  std::string color = "#888888";
};

/// How tick labels print a value.
enum class ChartUnits { plain, bytes };

struct ChartSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<ChartSeries> series;
  std::vector<ChartBand> bands;                  ///< drawn under the series
  bool log_y = false;                            ///< log10 y axis; points with y <= 0 are left out
  bool y_from_zero = false;                      ///< linear axis: include 0 in the y range
  bool integer_x = false;                        ///< x ticks on whole numbers only (rounds)
  bool integer_y = false;                        ///< linear y ticks on whole numbers only (counts)
  ChartUnits y_units = ChartUnits::plain;
  int width = 720;                               ///< pixels, the whole chart
  int plot_height = 260;                         ///< pixels, the plotting area alone
};

/// The chart as one `<svg>` element. A spec without any point draws its axes and "no data".
std::string line_chart(const ChartSpec& spec);

/// Text made safe for HTML and SVG content and attribute values (& < > " ').
std::string escape_html(const std::string& text);

/// A short label for a number: up to `digits` significant digits, k/M/G/T suffixes from 10 000 up.
std::string format_number(double value, int digits = 4);

/// A byte count with a decimal unit: "512 B", "1.5 KB", "20 MB", "3.2 GB".
std::string format_bytes(double bytes);

/// Ticks for [low, high] at a 1/2/5 x 10^k step, about `count` of them, covering the range.
std::vector<double> nice_ticks(double low, double high, int count, bool integer_step = false);

}  // namespace fedsplit
