// tools/svg.cpp — the SVG line-plot writer of `moe bench --svg` (see svg.h). Our own code: the
// document is built as text with fixed geometry (user units = px), nothing external.
// Thread-safety: reentrant (no shared state).
#include "svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "moe/error.h"

namespace moe::tools::svg {
namespace {

// Colour-blind-friendly palette (Okabe-Ito), cycled.
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                    "#E69F00", "#56B4E9", "#000000", "#F0E442"};
constexpr int kPanelW = 420, kPanelH = 280;
constexpr int kMarginL = 70, kMarginR = 20, kMarginT = 36, kMarginB = 52;  // inside a panel

std::string num(double v) { return fmt::format("{:.2f}", v); }

std::string default_format(double v) { return fmt::format("{:g}", v); }

// 1, 2 or 5 times a power of ten, about (hi - lo) / 5.
double nice_step(double lo, double hi) {
  const double span = hi - lo;
  if (!(span > 0)) return 1;
  const double raw = span / 5;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

void render_panel(std::string& out, const Figure& f, const Panel& p, double ox, double oy) {
  const double px0 = ox + kMarginL, px1 = ox + kPanelW - kMarginR;
  const double py0 = oy + kMarginT, py1 = oy + kPanelH - kMarginB;  // py0 top, py1 bottom
  // Data ranges over finite points (and the reference line).
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  std::vector<double> xs;
  for (const Series& s : p.series)
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xlo = std::min(xlo, s.x[i]);
      xhi = std::max(xhi, s.x[i]);
      ylo = std::min(ylo, s.y[i]);
      yhi = std::max(yhi, s.y[i]);
      xs.push_back(s.x[i]);
    }
  if (p.has_reference && std::isfinite(p.reference)) {
    ylo = std::min(ylo, p.reference);
    yhi = std::max(yhi, p.reference);
  }
  const bool any = std::isfinite(xlo);
  if (!any) xlo = 0, xhi = 1, ylo = 0, yhi = 1;
  if (p.y_from_zero) ylo = std::min(0.0, ylo);
  if (!(yhi > ylo)) yhi = ylo + (ylo == 0 ? 1 : std::fabs(ylo) * 0.1);
  const double ystep = nice_step(ylo, yhi);
  ylo = std::floor(ylo / ystep) * ystep;
  yhi = std::ceil(yhi / ystep - 1e-9) * ystep;
  if (!(yhi > ylo)) yhi = ylo + ystep;
  // A lone x value is centred: widen the range symmetrically.
  double xl = xlo, xh = xhi;
  if (!(xh > xl)) {
    const double d = xl == 0 ? 1 : std::fabs(xl) * 0.5;
    xl -= d;
    xh += d;
  } else {
    const double pad = (xh - xl) * 0.05;
    xl -= pad;
    xh += pad;
  }
  auto X = [&](double x) { return px0 + (x - xl) / (xh - xl) * (px1 - px0); };
  auto Y = [&](double y) { return py1 - (y - ylo) / (yhi - ylo) * (py1 - py0); };
  const auto& xf = f.x_format ? f.x_format : std::function<std::string(double)>(default_format);
  const auto& yf = f.y_format ? f.y_format : std::function<std::string(double)>(default_format);

  out += fmt::format("<g class=\"panel\">\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
                     num((px0 + px1) / 2), num(oy + 22), xml_escape(p.title));
  // Frame, grid and ticks.
  out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", num(px0),
                     num(py0), num(px1 - px0), num(py1 - py0));
  for (double y = ylo; y <= yhi + ystep * 1e-6; y += ystep) {
    const double yy = Y(y);
    out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>\n", num(px0), num(yy),
                       num(px1), num(yy));
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\">{}</text>\n", num(px0 - 5),
                       num(yy + 4), xml_escape(yf(std::fabs(y) < ystep * 1e-9 ? 0.0 : y)));
  }
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  for (double x : xs) {
    const double xx = X(x);
    out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/>\n", num(xx), num(py1), num(xx),
                       num(py1 + 5));
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n", num(xx),
                       num(py1 + 18), xml_escape(xf(x)));
  }
  // Axis labels.
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n",
                     num((px0 + px1) / 2), num(py1 + 38), xml_escape(p.x_label));
  const double ly = (py0 + py1) / 2, lx = ox + 16;
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 {} {})\">{}</text>\n",
                     num(lx), num(ly), num(lx), num(ly), xml_escape(p.y_label));
  if (p.has_reference && std::isfinite(p.reference)) {
    const double yy = Y(p.reference);
    out += fmt::format("<line class=\"reference\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#777\" "
                       "stroke-dasharray=\"6 4\"/>\n",
                       num(px0), num(yy), num(px1), num(yy));
  }
  // One polyline per series (points in the given order) and a marker per point.
  for (size_t i = 0; i < p.series.size(); ++i) {
    const Series& s = p.series[i];
    const char* col = kPalette[i % std::size(kPalette)];
    std::string pts;
    for (size_t j = 0; j < std::min(s.x.size(), s.y.size()); ++j) {
      if (!std::isfinite(s.x[j]) || !std::isfinite(s.y[j])) continue;
      if (!pts.empty()) pts += ' ';
      pts += num(X(s.x[j])) + "," + num(Y(s.y[j]));
    }
    out += fmt::format("<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" "
                       "points=\"{}\"/>\n",
                       xml_escape(s.label), col, pts);
    for (size_t j = 0; j < std::min(s.x.size(), s.y.size()); ++j) {
      if (!std::isfinite(s.x[j]) || !std::isfinite(s.y[j])) continue;
      out += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>\n", num(X(s.x[j])), num(Y(s.y[j])), col);
    }
  }
  out += "</g>\n";
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&apos;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string render(const Figure& f) {
  const int cols = std::max(1, std::min<int>(f.columns, static_cast<int>(std::max<size_t>(1, f.panels.size()))));
  const int rows = static_cast<int>((f.panels.size() + cols - 1) / cols);
  const int title_h = f.title.empty() ? 8 : 34;
  // Legend: the series names of the first panel that has any (every panel shares the colours).
  std::vector<std::string> names;
  for (const Panel& p : f.panels)
    if (p.series.size() > names.size()) {
      names.clear();
      for (const Series& s : p.series) names.push_back(s.label);
    }
  // Series names in rows of `legend_per_row`; the reference line's (longer) label on its own row.
  const size_t legend_per_row = static_cast<size_t>(std::max(1, cols * kPanelW / 200));
  const size_t name_rows = (names.size() + legend_per_row - 1) / legend_per_row;
  const size_t legend_items = names.size() + (f.reference_label.empty() ? 0 : 1);
  const int legend_rows = static_cast<int>(name_rows + (f.reference_label.empty() ? 0 : 1));
  const int W = cols * kPanelW, H = title_h + rows * kPanelH + legend_rows * 22 + 12;

  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n",
      W, H, W, H);
  out += fmt::format("<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", W, H);
  if (!f.title.empty())
    out += fmt::format("<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
                       W / 2, xml_escape(f.title));
  for (size_t i = 0; i < f.panels.size(); ++i) {
    const int r = static_cast<int>(i) / cols, c = static_cast<int>(i) % cols;
    render_panel(out, f, f.panels[i], c * kPanelW, title_h + r * kPanelH);
  }
  // Legend.
  out += "<g class=\"legend\">\n";
  const double ly0 = title_h + rows * kPanelH + 8;
  for (size_t i = 0; i < legend_items; ++i) {
    const bool ref = i >= names.size();
    const double x = ref ? 20 : 20 + static_cast<double>(i % legend_per_row) * 200;
    const double y = ly0 + static_cast<double>(ref ? name_rows : i / legend_per_row) * 22;
    if (!ref) {
      const char* col = kPalette[i % std::size(kPalette)];
      out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"/>\n", num(x),
                         num(y + 6), num(x + 24), num(y + 6), col);
      out += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", num(x + 30), num(y + 10), xml_escape(names[i]));
    } else {
      out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#777\" stroke-dasharray=\"6 4\"/>\n",
                         num(x), num(y + 6), num(x + 24), num(y + 6));
      out += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", num(x + 30), num(y + 10), xml_escape(f.reference_label));
    }
  }
  out += "</g>\n</svg>\n";
  return out;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(ErrorCode::Io, "{}: cannot open for writing: {}", path, std::strerror(errno));
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  f.close();
  if (!f) fail(ErrorCode::Io, "{}: write failed: {}", path, std::strerror(errno));
}

}  // namespace moe::tools::svg
