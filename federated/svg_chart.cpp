#include "federated/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>

namespace fedsplit {
namespace {

// Distinct colours for up to 12 lines; more lines reuse them in turn.
const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a"};
// Margins around the plot (pixels); kPad keeps lines on the first and last y tick off the frame.
constexpr int kLeft = 76, kRight = 16, kTop = 34, kRowHeight = 18, kPad = 6;

// A pixel coordinate with one decimal; never "-0.0", so equal charts are equal bytes.
std::string px(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", std::abs(v) < 0.05 ? 0.0 : v);
  return buf;
}

std::string with_digits(double v, int digits, const char* suffix) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*g%s", digits, v, suffix);
  return buf;
}

bool finite(double v) { return std::isfinite(v); }

// Characters of UTF-8 text (continuation bytes do not count), to estimate legend widths.
size_t glyphs(const std::string& s) {
  return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// One axis: its range in data units and the ticks to draw, mapped to [0, 1] by `unit`.
struct Axis {
  double low = 0, high = 1;
  bool log = false;
  std::vector<double> ticks;
  double unit(double v) const {
    if (log) return (std::log10(v) - low) / (high - low);
    return (v - low) / (high - low);
  }
};

Axis linear_axis(double low, double high, bool integer) {
  Axis a;
  a.ticks = nice_ticks(low, high, 6, integer);
  a.low = a.ticks.front();
  a.high = a.ticks.back();
  return a;
}

// Whole decades around the positive range; with few decades, 2 and 5 times each power as well.
Axis log_axis(double low, double high) {
  Axis a;
  a.log = true;
  a.low = std::floor(std::log10(low));
  a.high = std::ceil(std::log10(high));
  if (a.high <= a.low) a.high = a.low + 1;
  const bool fine = a.high - a.low <= 2;
  for (int k = static_cast<int>(a.low); k <= static_cast<int>(a.high); ++k)
    for (const double m : {1.0, 2.0, 5.0}) {
      if (m != 1.0 && (!fine || k == static_cast<int>(a.high))) continue;
      a.ticks.push_back(m * std::pow(10.0, k));
    }
  return a;
}

std::string tick_label(double v, ChartUnits units) {
  return units == ChartUnits::bytes ? format_bytes(v) : format_number(v, 6);
}

}  // namespace

std::string escape_html(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_number(double value, int digits) {
  if (value == 0 || !finite(value)) return value == 0 ? "0" : with_digits(value, digits, "");
  const double mag = std::abs(value);
  if (mag >= 1e12) return with_digits(value / 1e12, digits, "T");
  if (mag >= 1e9) return with_digits(value / 1e9, digits, "G");
  if (mag >= 1e6) return with_digits(value / 1e6, digits, "M");
  if (mag >= 1e4) return with_digits(value / 1e3, digits, "k");
  return with_digits(value, digits, "");
}

std::string format_bytes(double bytes) {
  const double mag = std::abs(bytes);
  if (mag >= 1e12) return with_digits(bytes / 1e12, 4, " TB");
  if (mag >= 1e9) return with_digits(bytes / 1e9, 4, " GB");
  if (mag >= 1e6) return with_digits(bytes / 1e6, 4, " MB");
  if (mag >= 1e3) return with_digits(bytes / 1e3, 4, " KB");
  return with_digits(bytes, 4, " B");
}

std::vector<double> nice_ticks(double low, double high, int count, bool integer_step) {
  if (!finite(low) || !finite(high)) low = 0, high = 1;
  if (high < low) std::swap(low, high);
  if (high - low <= std::max(std::abs(low), std::abs(high)) * 1e-9) {
    // One value (or nearly): centre it in a small range rather than divide by zero.
    const double d = std::max(integer_step ? 1.0 : 0.0, low == 0 ? 1.0 : std::abs(low) * 0.1);
    low -= d;
    high += d;
  }
  const double raw = (high - low) / std::max(count - 1, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  double step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  if (integer_step && step < 1) step = 1;
  // Ticks as integer multiples of the step, so that they do not accumulate rounding error.
  const double first = std::floor(low / step + 1e-9), last = std::ceil(high / step - 1e-9);
  std::vector<double> ticks;
  for (int i = 0; first + i <= last && i < 100; ++i) ticks.push_back((first + i) * step);
  if (ticks.size() < 2) ticks = {first * step, (first + 1) * step};
  return ticks;
}

std::string line_chart(const ChartSpec& spec) {
  // Data ranges, over finite points (positive y only on a log axis).
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  auto take = [&](double x, double y) {
    if (!finite(x) || !finite(y) || (spec.log_y && y <= 0)) return false;
    x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x), y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
    return true;
  };
  for (const auto& s : spec.series)
    for (const auto& [x, y] : s.points) take(x, y);
  for (const auto& b : spec.bands)
    for (size_t i = 0; i < b.x.size() && i < b.low.size() && i < b.high.size(); ++i)
      take(b.x[i], b.low[i]), take(b.x[i], b.high[i]);
  const bool empty = !(x_lo <= x_hi);
  if (empty) x_lo = 0, x_hi = 1, y_lo = spec.log_y ? 1 : 0, y_hi = spec.log_y ? 10 : 1;
  if (!spec.log_y && spec.y_from_zero) y_lo = std::min(y_lo, 0.0), y_hi = std::max(y_hi, 0.0);
  const Axis xa = linear_axis(x_lo, x_hi, spec.integer_x);
  const Axis ya = spec.log_y ? log_axis(y_lo, y_hi) : linear_axis(y_lo, y_hi, spec.integer_y);

  const double plot_w = spec.width - kLeft - kRight, plot_h = spec.plot_height;
  auto sx = [&](double x) { return kLeft + xa.unit(x) * plot_w; };
  auto sy = [&](double y) { return kTop + kPad + (1 - ya.unit(y)) * (plot_h - 2 * kPad); };

  // Legend layout: entries left to right, wrapping at the plot's width.
  struct Entry { std::string name, color; bool dashed, band; double x; int row; };
  std::vector<Entry> legend;
  double cursor = 0;
  int rows = 0;
  auto add_entry = [&](const std::string& name, const std::string& color, bool dashed, bool band) {
    const double w = 40 + 6.5 * glyphs(name);
    if (legend.empty()) rows = 1;
    else if (cursor + w > plot_w) cursor = 0, ++rows;
    legend.push_back({name, color, dashed, band, kLeft + cursor, rows - 1});
    cursor += w;
  };
  std::vector<std::string> colors;
  size_t next_colour = 0;
  for (const auto& b : spec.bands) add_entry(b.name, b.color, false, true);
  for (const auto& s : spec.series) {
    colors.push_back(s.color.empty() ? kPalette[next_colour++ % std::size(kPalette)] : s.color);
    if (s.in_legend) add_entry(s.name, colors.back(), s.dashed, false);
  }
  const double legend_top = kTop + plot_h + 56;
  const int height = static_cast<int>(legend_top + rows * kRowHeight + (rows ? 4 : -12));

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + std::to_string(spec.width) + " " +
       std::to_string(height) + "\" width=\"" + std::to_string(spec.width) + "\" height=\"" + std::to_string(height) +
       "\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\" aria-label=\"" + escape_html(spec.title) + "\">\n";
  o += "<title>" + escape_html(spec.title) + "</title>\n";
  o += "<text x=\"" + px(kLeft) + "\" y=\"20\" font-size=\"14\" font-weight=\"bold\">" + escape_html(spec.title) +
       "</text>\n";
  // Grid and tick labels.
  for (const double t : ya.ticks) {
    const std::string y = px(sy(t));
    o += "<line x1=\"" + px(kLeft) + "\" x2=\"" + px(kLeft + plot_w) + "\" y1=\"" + y + "\" y2=\"" + y +
         "\" stroke=\"#e4e4e4\"/><text x=\"" + px(kLeft - 6) + "\" y=\"" + px(sy(t) + 4) + "\" text-anchor=\"end\">" +
         escape_html(tick_label(t, spec.y_units)) + "</text>\n";
  }
  for (const double t : xa.ticks) {
    const std::string x = px(sx(t));
    o += "<line x1=\"" + x + "\" x2=\"" + x + "\" y1=\"" + px(kTop) + "\" y2=\"" + px(kTop + plot_h) +
         "\" stroke=\"#e4e4e4\"/><text x=\"" + x + "\" y=\"" + px(kTop + plot_h + 16) + "\" text-anchor=\"middle\">" +
         escape_html(format_number(t, 6)) + "</text>\n";
  }
  o += "<rect x=\"" + px(kLeft) + "\" y=\"" + px(kTop) + "\" width=\"" + px(plot_w) + "\" height=\"" + px(plot_h) +
       "\" fill=\"none\" stroke=\"#555\"/>\n";
  o += "<text x=\"" + px(kLeft + plot_w / 2) + "\" y=\"" + px(kTop + plot_h + 36) + "\" text-anchor=\"middle\">" +
       escape_html(spec.x_label) + "</text>\n";
  o += "<text transform=\"translate(14 " + px(kTop + plot_h / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
       escape_html(spec.y_label + (spec.log_y ? " (log scale)" : "")) + "</text>\n";
  if (empty)
    o += "<text x=\"" + px(kLeft + plot_w / 2) + "\" y=\"" + px(kTop + plot_h / 2) +
         "\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n";

  for (const auto& b : spec.bands) {
    std::string upper, lower;
    for (size_t i = 0; i < b.x.size() && i < b.low.size() && i < b.high.size(); ++i) {
      if (!finite(b.x[i]) || !finite(b.low[i]) || !finite(b.high[i]) || (spec.log_y && b.low[i] <= 0)) continue;
      upper += px(sx(b.x[i])) + "," + px(sy(b.high[i])) + " ";
      lower = px(sx(b.x[i])) + "," + px(sy(b.low[i])) + " " + lower;
    }
    if (upper.empty()) continue;
    o += "<polygon points=\"" + upper + lower.substr(0, lower.size() - 1) + "\" fill=\"" + escape_html(b.color) +
         "\" fill-opacity=\"0.2\" stroke=\"none\"><title>" + escape_html(b.name) + "</title></polygon>\n";
  }
  for (size_t i = 0; i < spec.series.size(); ++i) {
    const auto& s = spec.series[i];
    std::vector<std::pair<double, double>> kept;
    for (const auto& [x, y] : s.points)
      if (finite(x) && finite(y) && !(spec.log_y && y <= 0)) kept.push_back({sx(x), sy(y)});
    if (kept.empty()) continue;
    const std::string color = escape_html(colors[i]);
    o += "<g><title>" + escape_html(s.name) + "</title>";
    if (kept.size() > 1) {
      o += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"" + px(s.width) + "\"" +
           (s.dashed ? " stroke-dasharray=\"6 4\"" : "") + " stroke-linejoin=\"round\" points=\"";
      for (size_t k = 0; k < kept.size(); ++k) o += (k ? " " : "") + px(kept[k].first) + "," + px(kept[k].second);
      o += "\"/>";
    }
    // Markers where they stay readable: prominent lines with few points, and any lone point.
    if (kept.size() == 1 || (s.width >= 1.5 && kept.size() <= 60))
      for (const auto& [x, y] : kept)
        o += "<circle cx=\"" + px(x) + "\" cy=\"" + px(y) + "\" r=\"" + px(s.width + 0.8) + "\" fill=\"" + color +
             "\"/>";
    o += "</g>\n";
  }
  for (const auto& e : legend) {
    const double y = legend_top + e.row * kRowHeight;
    const std::string color = escape_html(e.color);
    if (e.band)
      o += "<rect x=\"" + px(e.x) + "\" y=\"" + px(y - 6) + "\" width=\"22\" height=\"10\" fill=\"" + color +
           "\" fill-opacity=\"0.2\"/>";
    else
      o += "<line x1=\"" + px(e.x) + "\" x2=\"" + px(e.x + 22) + "\" y1=\"" + px(y - 1) + "\" y2=\"" + px(y - 1) +
           "\" stroke=\"" + color + "\" stroke-width=\"2.5\"" + (e.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>";
    o += "<text x=\"" + px(e.x + 28) + "\" y=\"" + px(y + 3) + "\">" + escape_html(e.name) + "</text>\n";
  }
  o += "</svg>\n";
  return o;
}

}  // namespace fedsplit
