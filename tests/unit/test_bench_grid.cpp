// tests/unit/test_bench_grid.cpp — `moe bench` as a grid (policies x budgets x predictors) on a
// generated model and on a trace: JSON rows and keys, CSV shape, SVG structure, the baseline and
// ratios, agreement with `moe sim`, the unchanged single form, and the replay rate of `moe sim`.
// Timings are never asserted (only that they are reported and positive).
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "moe/json.h"
#include "moe/sim.h"
#include "moe/trace.h"

using namespace moe;

namespace {

std::string tmp(const std::string& n) { return std::string(MOE_TEST_TMP) + "/" + n; }

std::string run_tool(const std::string& args, int* rc, bool with_stderr = false) {
  const std::string cmd = std::string(MOE_TOOL_PATH) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* f = popen(cmd.c_str(), "r");
  REQUIRE(f);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int st = pclose(f);
  *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// An olmoe-shaped q8_0 model, 4 layers x 32 experts (top-4), written once by `moe gen`.
const std::string& model_path() {
  static const std::string path = [] {
    const std::string p = tmp("bench_grid.gguf");
    int rc = 0;
    run_tool("gen --arch olmoe --layers 4 --embd 256 --ff 256 --experts 32 --top-k 4 --heads 4 --heads-kv 4 "
             "--head-dim 64 --vocab none --vocab-size 256 --type q8_0 --router-skew 1.0 -q -o " + p,
             &rc);
    REQUIRE(rc == 0);
    return p;
  }();
  return path;
}

const std::string& trace_path() {
  static const std::string path = [] {
    trace::SynthOptions o;
    o.n_layer = 6;
    o.n_expert = 16;
    o.k = 4;
    o.n_tokens = 300;
    o.n_requests = 3;
    o.seed = 3;
    o.expert_bytes = 1 << 20;
    const std::string p = tmp("bench_grid.moetrace");
    trace::write(trace::synthesize(o), p);
    return p;
  }();
  return path;
}

// The CSV's lines (without the trailing empty one) and the number of columns of each.
std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string l;
  while (std::getline(ss, l))
    if (!l.empty()) v.push_back(l);
  return v;
}

void check_svg(const std::string& svg, const std::vector<std::string>& policies, size_t n_predictors) {
  REQUIRE(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("xmlns=\"http://www.w3.org/2000/svg\"") != std::string::npos);
  CHECK(svg.size() >= 7);
  CHECK(svg.substr(svg.size() - 7) == "</svg>\n");
  CHECK(count(svg, "<svg") == 1);
  CHECK(count(svg, "<g") == count(svg, "</g>"));
  // Two panels (hit rate, tok/s) per predictor, one line per policy in each.
  CHECK(count(svg, "<polyline class=\"series\"") == policies.size() * 2 * n_predictors);
  for (const auto& p : policies) {
    CHECK(count(svg, "data-series=\"" + p + "\"") == 2 * n_predictors);
    CHECK(svg.find(">" + p + "</text>") != std::string::npos);  // legend entry
  }
  CHECK(svg.find("hit rate") != std::string::npos);  // axis labels
  CHECK(svg.find("tokens / s") != std::string::npos);
  CHECK(svg.find("baseline") != std::string::npos);
  CHECK(svg.find("nan") == std::string::npos);
}

void check_rows(const json::Value& a, size_t n) {
  REQUIRE(a.is_array());
  REQUIRE(a.size() == n);
  for (const auto& o : a.items()) {
    for (const char* k : {"policy", "predictor", "budget_bytes", "hit_rate", "bytes_read_per_token", "decode_tok_s",
                          "prefill_tok_s", "hit_rate_sd", "decode_tok_s_sd", "decode_tok_s_min", "decode_tok_s_max",
                          "bytes_read_per_token_sd", "reps", "decode_tok_s_baseline", "decode_tok_s_ratio",
                          "bytes_read_per_token_ratio", "hit_rate_baseline", "baseline"}) {
      CAPTURE(k);
      REQUIRE(o.get(k) != nullptr);
    }
    CHECK(o.get("hit_rate")->as_number() >= 0.0);
    CHECK(o.get("hit_rate")->as_number() <= 1.0);
    CHECK(o.get("decode_tok_s")->as_number() > 0.0);
    CHECK(o.get("decode_tok_s_baseline")->as_number() > 0.0);
    CHECK(o.get("decode_tok_s_ratio")->as_number() ==
          doctest::Approx(o.get("decode_tok_s")->as_number() / o.get("decode_tok_s_baseline")->as_number()));
    CHECK(o.get("baseline")->get("predictor")->as_string() == "none");
  }
}

}  // namespace

TEST_CASE("bench grid on a model: 2 policies x 2 budgets x 2 predictors, JSON, CSV and SVG") {
  const std::string csv = tmp("bench_grid_model.csv"), svg = tmp("bench_grid_model.svg");
  std::filesystem::remove(csv);
  std::filesystem::remove(svg);
  int rc = 0;
  // The store's minimum for this model is about 67 MiB (64 MiB of it the fixed overhead): 68M and
  // 72M pay for a few and for most of the 128 experts.
  const std::string out = run_tool("bench -m " + model_path() +
                                       " -t 1 -p 4 -n 6 -r 1 --ram 68M,72M --policy lru,lfu --predictor none "
                                       "--predictor transition --json --csv " + csv + " --svg " + svg,
                                   &rc);
  REQUIRE(rc == 0);
  const json::Value a = json::parse(out, "moe bench --json (grid)");
  check_rows(a, 8);
  // Order: policy, then predictor, then budget.
  CHECK(a[0].get("policy")->as_string() == "lru");
  CHECK(a[0].get("predictor")->as_string() == "none");
  CHECK(a[1].get("predictor")->as_string() == "none");
  CHECK(a[2].get("predictor")->as_string() == "transition");
  CHECK(a[4].get("policy")->as_string() == "lfu");
  CHECK(a[0].get("budget_bytes")->as_number() == 68.0 * (1 << 20));
  CHECK(a[1].get("budget_bytes")->as_number() == 72.0 * (1 << 20));
  CHECK(a[0].get("slots")->as_number() < a[1].get("slots")->as_number());
  for (const auto& o : a.items()) {
    CHECK(o.get("mode")->as_string() == "model");
    CHECK(o.get("reps")->as_number() == 1);
    CHECK(o.get("decode_tok_s_sd")->as_number() == 0.0);  // one repetition: no spread
    CHECK(o.get("prefill_tok_s")->as_number() > 0.0);
    CHECK(o.get("baseline")->get("budget_bytes")->as_number() == 0.0);  // the memory map
    CHECK(o.get("hit_rate_baseline")->as_number() == 0.0);
    CHECK(o.get("bytes_read_per_token_baseline")->as_number() > 0.0);
  }
  // The larger budget hits at least sometimes; the transition predictor is scored.
  CHECK(a[1].get("hit_rate")->as_number() > 0.0);
  CHECK(a[3].get("prefetch_recall")->as_number() > 0.0);

  const std::vector<std::string> rows = lines_of(slurp(csv));
  REQUIRE(rows.size() == 1 + 8);
  CHECK(rows[0].rfind("mode,policy,predictor,budget_bytes", 0) == 0);
  CHECK(rows[0].find("decode_tok_s_ratio") != std::string::npos);
  const size_t cols = count(rows[0], ",");
  for (size_t i = 1; i < rows.size(); ++i) {
    CAPTURE(rows[i]);
    CHECK(count(rows[i], ",") == cols);
    CHECK(rows[i].rfind("model,", 0) == 0);
  }
  check_svg(slurp(svg), {"lru", "lfu"}, 2);

  // The table form shows the baseline and the ratios.
  const std::string table = run_tool("bench -m " + model_path() +
                                         " -t 1 -p 4 -n 4 -r 1 --ram 72M --policy lru,lfu",
                                     &rc);
  CHECK(rc == 0);
  CHECK(table.find("baseline (memory map") != std::string::npos);
  CHECK(table.find("lfu") != std::string::npos);
  CHECK(table.find("x") != std::string::npos);
}

TEST_CASE("the single form keeps its JSON object and keys") {
  int rc = 0;
  const std::string out =
      run_tool("bench -m " + model_path() + " -t 1 -p 4 -n 4 -r 1 --no-bandwidth --json", &rc);
  REQUIRE(rc == 0);
  const json::Value v = json::parse(out, "moe bench --json");
  REQUIRE(v.is_object());
  for (const char* k : {"decode_tok_s", "prefill_tok_s", "bytes_read_per_token", "mem_bw_fraction"}) {
    CAPTURE(k);
    REQUIRE(v.get(k) != nullptr);
  }
  // One --predictor with a comma still combines (one configuration, not a grid).
  const std::string out2 = run_tool("bench -m " + model_path() +
                                        " -t 1 -p 4 -n 4 -r 1 --no-bandwidth --ram 72M --predictor pregated,transition "
                                        "--json",
                                    &rc);
  REQUIRE(rc == 0);
  const json::Value v2 = json::parse(out2, "moe bench --json --predictor a,b");
  REQUIRE(v2.is_object());
  CHECK(v2.get("hit_rate") != nullptr);
}

TEST_CASE("bench grid on a trace: the same replay as moe sim, deterministic across repetitions") {
  const std::string csv = tmp("bench_grid_trace.csv"), svg = tmp("bench_grid_trace.svg");
  int rc = 0;
  const std::string args = " --policy lru,arc --predictors none,transition+popularity --device nvme-gen4";
  const std::string out = run_tool("bench --trace " + trace_path() + args +
                                       " --ram 8M,32M -r 2 --json --csv " + csv + " --svg " + svg,
                                   &rc);
  REQUIRE(rc == 0);
  const json::Value a = json::parse(out, "moe bench --trace --json");
  check_rows(a, 8);
  for (const auto& o : a.items()) {
    CHECK(o.get("mode")->as_string() == "trace");
    CHECK(o.get("reps")->as_number() == 2);
    CHECK(o.get("hit_rate_sd")->as_number() == 0.0);  // the replay is deterministic
    CHECK(o.get("decode_tok_s_sd")->as_number() == 0.0);
    REQUIRE(o.get("events_per_s") != nullptr);
    CHECK(o.get("events_per_s")->as_number() > 0.0);
    CHECK(o.get("baseline")->get("hit_rate")->as_number() == 0.0);  // no cache
  }
  CHECK(a[2].get("predictor")->as_string() == "transition,popularity");
  // The same points through `moe sim`: identical hit rates and simulated tok/s.
  const std::string sim_out =
      run_tool("sim --trace " + trace_path() +
                   " --policy lru,arc --predictor none,transition+popularity --device nvme-gen4 --budget 8M,32M --json",
               &rc);
  REQUIRE(rc == 0);
  const json::Value s = json::parse(sim_out, "moe sim --json");
  REQUIRE(s.size() == 8);
  size_t matched = 0;
  for (const auto& o : a.items())
    for (const auto& r : s.items())
      if (r.get("policy")->as_string() == o.get("policy")->as_string() &&
          r.get("predictor")->as_string() == o.get("predictor")->as_string() &&
          r.get("budget_bytes")->as_number() == o.get("budget_bytes")->as_number()) {
        ++matched;
        CHECK(r.get("hit_rate")->as_number() == o.get("hit_rate")->as_number());
        CHECK(r.get("tok_s")->as_number() == doctest::Approx(o.get("decode_tok_s")->as_number()));
      }
  CHECK(matched == 8);
  const std::vector<std::string> rows = lines_of(slurp(csv));
  REQUIRE(rows.size() == 1 + 8);
  CHECK(rows[0].find("events_per_s") != std::string::npos);
  check_svg(slurp(svg), {"lru", "arc"}, 2);
  // Budgets in experts, and the table form with the replay rate.
  const std::string table =
      run_tool("bench --trace " + trace_path() + " --budget-experts 8,24 --policy lru -r 1", &rc);
  CHECK(rc == 0);
  CHECK(table.find("baseline (no cache") != std::string::npos);
  CHECK(table.find("events/s") != std::string::npos);
}

TEST_CASE("bench grid errors are clear") {
  int rc = 0;
  std::string out = run_tool("bench --ram 1G,2G", &rc, true);
  CHECK(rc != 0);
  CHECK(out.find("--trace") != std::string::npos);
  out = run_tool("bench --trace " + trace_path() + " --predictors nonsense --ram 8M", &rc, true);
  CHECK(rc != 0);
  CHECK(out.find("nonsense") != std::string::npos);
  out = run_tool("bench -m " + model_path() + " -t 1 -p 2 -n 2 -r 1 --ram 1M,2M", &rc, true);
  CHECK(rc != 0);
  CHECK(out.find("minimum") != std::string::npos);
  out = run_tool("bench --trace " + tmp("no_such.moetrace") + " --ram 8M", &rc, true);
  CHECK(rc != 0);
  CHECK(out.find("no_such.moetrace") != std::string::npos);
}

TEST_CASE("moe sim reports its replay rate (events per CPU second)") {
  trace::SynthOptions o;
  o.n_layer = 4;
  o.n_expert = 16;
  o.k = 2;
  o.n_tokens = 200;
  o.expert_bytes = 1 << 20;
  const trace::Trace t = trace::synthesize(o);
  sim::SimConfig c;
  c.predictor = "transition";
  c.budget_bytes = 16ull << 20;
  const sim::SimResult r = sim::simulate(t, c);
  CHECK(r.events == 800);
  CHECK(r.wall_s > 0.0);
  CHECK(r.events_per_s() > 0.0);
  const json::Value v = json::parse(r.to_json().dump(), "to_json");
  REQUIRE(v.get("events_per_s") != nullptr);
  CHECK(v.get("events_per_s")->as_number() == doctest::Approx(r.events_per_s()));
  int rc = 0;
  const std::string out = run_tool("sim --trace " + trace_path() + " --predictor transition --budget 8M --json", &rc);
  REQUIRE(rc == 0);
  const json::Value a = json::parse(out, "moe sim --json");
  REQUIRE(a.size() == 1);
  REQUIRE(a[0].get("events_per_s") != nullptr);
  CHECK(a[0].get("events_per_s")->as_number() > 0.0);
  const std::string table = run_tool("sim --trace " + trace_path() + " --predictor transition --budget 8M", &rc);
  CHECK(rc == 0);
  CHECK(table.find("Mev/s") != std::string::npos);
}
