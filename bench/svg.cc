#include "svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace attnsearch::bench {
namespace {

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                               "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string TickLabel(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1e5 || a < 1e-3) {
    std::snprintf(buf, sizeof buf, "%.0e", v);
  } else if (a >= 100 || std::fabs(v - std::round(v)) < 1e-9) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  }
  return buf;
}

void Header(std::ostringstream& o, int w, int h, const std::string& title) {
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" << w << "\" height=\""
    << h << "\" viewBox=\"0 0 " << w << " " << h
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect x=\"0\" y=\"0\" width=\"" << w << "\" height=\"" << h << "\" fill=\"white\"/>\n"
    << "<text x=\"" << w / 2 << "\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">"
    << XmlEscape(title) << "</text>\n";
}

}  // namespace

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<double> NiceTicks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!std::isfinite(lo) || !std::isfinite(hi)) return ticks;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  const long first = long(std::ceil(lo / step - 1e-9));
  for (long i = first; double(i) * step <= hi + step * 1e-9; ++i) {
    ticks.push_back(i == 0 ? 0.0 : double(i) * step);
  }
  return ticks;
}

namespace {

// A line plot's drawing area and data range, and the mapping between them.
struct PlotFrame {
  double left = 70, right = 170, top = 35, bottom = 55;
  double pw = 0, ph = 0;  // the drawing area's width and height
  double xmin = 0, xmax = 0, ymin = 0, ymax = 0;
  bool log_x = false;
  double tx(double x) const { return log_x ? std::log10(x) : x; }
  double px(double x) const { return left + (tx(x) - xmin) / (xmax - xmin) * pw; }
  double py(double y) const { return top + (1.0 - (y - ymin) / (ymax - ymin)) * ph; }
  // Whether point i of s is drawn.
  bool Drawn(const Series& s, size_t i) const {
    return std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && !(log_x && s.x[i] <= 0);
  }
};

PlotFrame FrameOf(const LinePlot& plot) {
  PlotFrame f;
  f.pw = plot.width - f.left - f.right;
  f.ph = plot.height - f.top - f.bottom;
  f.log_x = plot.log_x;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin;
  double ymin = xmin, ymax = -xmin;
  for (const auto& s : plot.series) {
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!f.Drawn(s, i)) continue;
      xmin = std::min(xmin, f.tx(s.x[i]));
      xmax = std::max(xmax, f.tx(s.x[i]));
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (xmax == xmin) xmin -= 0.5, xmax += 0.5;
  if (ymax == ymin) ymin -= 0.5, ymax += 0.5;
  const double ypad = (ymax - ymin) * 0.05;
  ymin -= ypad;
  ymax += ypad;
  if (!plot.log_x) {
    const double xpad = (xmax - xmin) * 0.03;
    xmin -= xpad;
    xmax += xpad;
  }
  f.xmin = xmin, f.xmax = xmax, f.ymin = ymin, f.ymax = ymax;
  return f;
}

// The frame, the ticks with their grid lines, and the axis labels.
void DrawAxes(std::ostringstream& o, const LinePlot& plot, const PlotFrame& f) {
  const double left = f.left, top = f.top, pw = f.pw, ph = f.ph;
  o << "<rect x=\"" << Num(left) << "\" y=\"" << Num(top) << "\" width=\"" << Num(pw)
    << "\" height=\"" << Num(ph) << "\" fill=\"none\" stroke=\"black\"/>\n";
  for (double t : NiceTicks(f.ymin, f.ymax)) {
    const double y = f.py(t);
    o << "<line x1=\"" << Num(left - 5) << "\" y1=\"" << Num(y) << "\" x2=\"" << Num(left + pw)
      << "\" y2=\"" << Num(y) << "\" stroke=\"#ddd\"/>\n"
      << "<text x=\"" << Num(left - 8) << "\" y=\"" << Num(y + 4) << "\" text-anchor=\"end\">"
      << XmlEscape(TickLabel(t)) << "</text>\n";
  }
  // X ticks: decades (and 2x, 5x) for log, nice steps otherwise.
  std::vector<double> xt;
  if (plot.log_x) {
    for (int e = int(std::floor(f.xmin)); e <= int(std::ceil(f.xmax)); ++e) {
      for (double m : {1.0, 2.0, 5.0}) {
        const double v = m * std::pow(10.0, e);
        if (std::log10(v) >= f.xmin - 1e-9 && std::log10(v) <= f.xmax + 1e-9) xt.push_back(v);
      }
    }
  } else {
    xt = NiceTicks(f.xmin, f.xmax);
  }
  for (double t : xt) {
    const double x = f.px(t);
    o << "<line x1=\"" << Num(x) << "\" y1=\"" << Num(top) << "\" x2=\"" << Num(x) << "\" y2=\""
      << Num(top + ph + 5) << "\" stroke=\"#ddd\"/>\n"
      << "<text x=\"" << Num(x) << "\" y=\"" << Num(top + ph + 18) << "\" text-anchor=\"middle\">"
      << XmlEscape(TickLabel(t)) << "</text>\n";
  }
  o << "<text x=\"" << Num(left + pw / 2) << "\" y=\"" << plot.height - 12
    << "\" text-anchor=\"middle\">" << XmlEscape(plot.x_label) << (plot.log_x ? " (log scale)" : "")
    << "</text>\n"
    << "<text x=\"16\" y=\"" << Num(top + ph / 2) << "\" text-anchor=\"middle\" "
    << "transform=\"rotate(-90 16 " << Num(top + ph / 2) << ")\">" << XmlEscape(plot.y_label)
    << "</text>\n";
}

// Series si: its point labels, line, points and legend entry.
void DrawSeries(std::ostringstream& o, const LinePlot& plot, const PlotFrame& f, size_t si) {
  const Series& s = plot.series[si];
  const char* color = kColors[si % (sizeof kColors / sizeof kColors[0])];
  std::ostringstream pts;
  std::vector<std::pair<double, double>> kept;
  for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
    if (!f.Drawn(s, i)) continue;
    kept.emplace_back(f.px(s.x[i]), f.py(s.y[i]));
    if (i < s.point_labels.size()) {
      // Left of the point, unless that would leave the frame.
      const bool right_side = kept.back().first < f.left + 90;
      o << "<text x=\"" << Num(kept.back().first + (right_side ? 6 : -6)) << "\" y=\""
        << Num(kept.back().second - 6) << "\" text-anchor=\"" << (right_side ? "start" : "end")
        << "\" font-size=\"10\">" << XmlEscape(s.point_labels[i]) << "</text>\n";
    }
  }
  for (const auto& [x, y] : kept) pts << Num(x) << "," << Num(y) << " ";
  if (!kept.empty()) {
    o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\""
      << pts.str() << "\"/>\n";
  }
  if (s.points) {
    for (const auto& [x, y] : kept) {
      o << "<circle cx=\"" << Num(x) << "\" cy=\"" << Num(y) << "\" r=\"3\" fill=\"" << color
        << "\"/>\n";
    }
  }
  const double ly = f.top + 10 + 20 * double(si), lx = f.left + f.pw;
  o << "<line x1=\"" << Num(lx + 12) << "\" y1=\"" << Num(ly) << "\" x2=\"" << Num(lx + 32)
    << "\" y2=\"" << Num(ly) << "\" stroke=\"" << color << "\" stroke-width=\"2\"/>\n"
    << "<text x=\"" << Num(lx + 38) << "\" y=\"" << Num(ly + 4) << "\">" << XmlEscape(s.name)
    << "</text>\n";
}

}  // namespace

std::string RenderSvg(const LinePlot& plot) {
  const PlotFrame frame = FrameOf(plot);
  std::ostringstream o;
  Header(o, plot.width, plot.height, plot.title);
  DrawAxes(o, plot, frame);
  for (size_t si = 0; si < plot.series.size(); ++si) DrawSeries(o, plot, frame, si);
  o << "</svg>\n";
  return o.str();
}

std::string RenderSvg(const BarChart& chart) {
  const int w = chart.width, h = chart.height;
  const double left = 70, right = 20, top = 35, bottom = 60;
  const double pw = w - left - right, ph = h - top - bottom;
  double ymax = 0;
  for (double v : chart.values) {
    if (std::isfinite(v)) ymax = std::max(ymax, v);
  }
  if (ymax <= 0) ymax = 1;
  ymax *= 1.12;
  auto py = [&](double y) { return top + (1.0 - y / ymax) * ph; };

  std::ostringstream o;
  Header(o, w, h, chart.title);
  for (double t : NiceTicks(0, ymax)) {
    const double y = py(t);
    o << "<line x1=\"" << Num(left - 5) << "\" y1=\"" << Num(y) << "\" x2=\"" << Num(left + pw)
      << "\" y2=\"" << Num(y) << "\" stroke=\"#ddd\"/>\n"
      << "<text x=\"" << Num(left - 8) << "\" y=\"" << Num(y + 4) << "\" text-anchor=\"end\">"
      << XmlEscape(TickLabel(t)) << "</text>\n";
  }
  o << "<line x1=\"" << Num(left) << "\" y1=\"" << Num(top) << "\" x2=\"" << Num(left) << "\" y2=\""
    << Num(top + ph) << "\" stroke=\"black\"/>\n"
    << "<line x1=\"" << Num(left) << "\" y1=\"" << Num(top + ph) << "\" x2=\"" << Num(left + pw)
    << "\" y2=\"" << Num(top + ph) << "\" stroke=\"black\"/>\n"
    << "<text x=\"16\" y=\"" << Num(top + ph / 2) << "\" text-anchor=\"middle\" "
    << "transform=\"rotate(-90 16 " << Num(top + ph / 2) << ")\">" << XmlEscape(chart.y_label)
    << "</text>\n";
  const size_t n = chart.values.size();
  const double slot = n == 0 ? pw : pw / double(n);
  for (size_t i = 0; i < n; ++i) {
    const double v = std::isfinite(chart.values[i]) ? std::max(0.0, chart.values[i]) : 0.0;
    const double x = left + slot * double(i) + slot * 0.15;
    const double bw = slot * 0.7;
    const char* color = kColors[i % (sizeof kColors / sizeof kColors[0])];
    o << "<rect x=\"" << Num(x) << "\" y=\"" << Num(py(v)) << "\" width=\"" << Num(bw)
      << "\" height=\"" << Num(top + ph - py(v)) << "\" fill=\"" << color << "\"/>\n";
    const std::string vt = i < chart.value_texts.size() ? chart.value_texts[i] : TickLabel(v);
    o << "<text x=\"" << Num(x + bw / 2) << "\" y=\"" << Num(py(v) - 5)
      << "\" text-anchor=\"middle\">" << XmlEscape(vt) << "</text>\n";
    const std::string label = i < chart.labels.size() ? chart.labels[i] : "";
    o << "<text x=\"" << Num(x + bw / 2) << "\" y=\"" << Num(top + ph + 18)
      << "\" text-anchor=\"middle\">" << XmlEscape(label) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace attnsearch::bench
