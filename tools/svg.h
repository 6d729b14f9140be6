// tools/svg.h — a small self-contained SVG line-plot writer for `moe bench --svg` (no dependency):
// a figure is a grid of panels; each panel has labelled axes, "nice" y ticks, x ticks at the data's
// x values, one polyline (with point markers) per series and optional dashed horizontal reference
// lines (baselines). Series keep the same colour in every panel by their index, and one legend
// (series names and the reference line's meaning) is drawn under the panels.
//
// Thread-safety: pure functions on their arguments (reentrant).
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace moe::tools::svg {

struct Series {
  std::string label;           // legend text (the colour is picked by the series' index)
  std::vector<double> x, y;    // points, same length; drawn in the given order
};

struct Panel {
  std::string title, x_label, y_label;
  std::vector<Series> series;  // series[i] gets colour i in every panel
  bool has_reference = false;  // a dashed horizontal line at `reference` (e.g. the baseline)
  double reference = 0;
  bool y_from_zero = true;     // y axis starts at 0 (else at the data's minimum)
};

struct Figure {
  std::string title;
  std::vector<Panel> panels;   // laid out row by row, `columns` per row
  int columns = 2;
  std::string reference_label; // legend text of the dashed reference line ("" = none in the legend)
  std::function<std::string(double)> x_format;  // tick labels of x (default: %g)
  std::function<std::string(double)> y_format;  // tick labels of y (default: %g)
};

// The SVG document (starts with "<svg", ends with "</svg>\n"). Texts are XML-escaped. Empty series,
// non-finite points and a single x value are handled (a lone x is centred).
std::string render(const Figure& f);

// Escapes &, <, >, " and ' for XML text and attribute values.
std::string xml_escape(const std::string& s);

// Writes `text` to `path`; throws moe::Error (Io) naming the path when it cannot be written.
void write_file(const std::string& path, const std::string& text);

}  // namespace moe::tools::svg
