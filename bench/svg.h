// Hand-written SVG plots (no external libraries): a line plot of several
// series (axes, ticks, labels, polyline + points, legend; optional log x
// axis) and a bar chart. The output is a standalone, well-formed SVG 1.1
// document; text is XML-escaped; non-finite points are dropped.
#ifndef ATTNSEARCH_BENCH_SVG_H_
#define ATTNSEARCH_BENCH_SVG_H_

#include <string>
#include <vector>

namespace attnsearch::bench {

struct Series {
  std::string name;
  std::vector<double> x, y;
  bool points = true;                     // draw a marker at every point
  std::vector<std::string> point_labels;  // optional text beside each point
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_x = false;  // log10 x axis (non-positive x dropped)
  int width = 720, height = 440;
};

struct BarChart {
  std::string title, y_label;
  std::vector<std::string> labels;
  std::vector<double> values;
  std::vector<std::string> value_texts;  // shown above bars; empty: the value
  int width = 640, height = 400;
};

std::string RenderSvg(const LinePlot& plot);
std::string RenderSvg(const BarChart& chart);

// "Nice" tick positions covering [lo, hi]: about `target` steps of 1, 2 or 5
// times a power of ten.
std::vector<double> NiceTicks(double lo, double hi, int target = 6);
// Escapes & < > " ' for XML text and attributes.
std::string XmlEscape(const std::string& s);

}  // namespace attnsearch::bench

#endif  // ATTNSEARCH_BENCH_SVG_H_
