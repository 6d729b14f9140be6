// The trace simulator (moe/sim.h) and `moe sim`: cache bounds, Belady bound, oracle prefetch,
// hand-computed timelines, device profiles, JSON output, errors.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "moe/error.h"
#include "moe/json.h"
#include "moe/sim.h"
#include "moe/trace.h"

using namespace moe;

namespace {

std::string tmp(const std::string& n) { return std::string(MOE_TEST_TMP) + "/" + n; }

trace::Trace synth(uint64_t seed, uint32_t L = 6, uint32_t E = 16, uint32_t k = 4, uint64_t tokens = 400,
                   double skew = 1.0) {
  trace::SynthOptions o;
  o.n_layer = L;
  o.n_expert = E;
  o.k = k;
  o.n_tokens = tokens;
  o.seed = seed;
  o.skew = skew;
  o.n_requests = 4;
  o.expert_bytes = 1 << 20;
  return trace::synthesize(o);
}

sim::SimConfig config(std::string policy, uint64_t slots, std::string predictor = "none") {
  sim::SimConfig c;
  c.policy = std::move(policy);
  c.predictor = std::move(predictor);
  c.budget_bytes = slots << 20;
  c.device = sim::device_profile("pcie4");
  return c;
}

uint64_t distinct_keys(const trace::Trace& t) {
  std::set<std::pair<uint32_t, uint32_t>> s;
  for (uint64_t i = 0; i < t.n_events(); ++i)
    for (uint64_t p = t.off[i]; p < t.off[i + 1]; ++p) s.insert({static_cast<uint32_t>(i % t.n_layer), t.ids[p]});
  return s.size();
}

std::string run_tool(const std::string& args, int* rc) {
  const std::string cmd = std::string(MOE_TOOL_PATH) + " " + args + " 2>&1";
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

// The hand-computed trace: 2 tokens x 2 layers, 4 experts, top-1, one recorded guess column.
//   events: (t0,l0) {0}  (t0,l1) {1}  (t1,l0) {2}  (t1,l1) {3}
//   guesses recorded for them: {0}, {1,2}, {0}, {3}
trace::Trace tiny() {
  trace::TraceBuilder b(2, 4, false, {"g"});
  b.set_expert_bytes(1000000);
  const std::vector<std::vector<uint16_t>> a = {{0}, {1}, {2}, {3}};
  const std::vector<std::vector<uint16_t>> g = {{0}, {1, 2}, {0}, {3}};
  for (uint32_t t = 0; t < 2; ++t) {
    b.begin_token(0, 1);
    for (uint32_t l = 0; l < 2; ++l) {
      std::vector<std::vector<uint16_t>> guess = {g[t * 2 + l]};
      b.add_layer(a[t * 2 + l], {}, guess);
    }
  }
  return b.finish();
}

sim::SimConfig tiny_config(double link_gbps) {
  sim::SimConfig c;
  c.policy = "lru";
  c.predictor = "recorded";
  c.budget_bytes = 8 * 1000000ull;  // every expert fits: no eviction
  c.guesses_per_layer = 4;
  c.device.link_gbps = link_gbps;
  c.device.link_latency_us = 0;
  c.device.dense_ms_per_layer = 1;
  c.device.expert_ms = 1;
  return c;
}

}  // namespace

TEST_CASE("budget = all experts: hit rate = 1 - cold misses / accesses (both scopes)") {
  for (uint64_t seed : {1, 2}) {
    const trace::Trace t = synth(seed);
    const uint64_t cold = distinct_keys(t);
    for (auto scope : {cache::Scope::Global, cache::Scope::Layer}) {
      for (const char* pol : {"lru", "lfu", "arc", "belady"}) {
        sim::SimConfig c = config(pol, uint64_t{t.n_layer} * t.n_expert);
        c.scope = scope;
        const sim::SimResult r = sim::simulate(t, c);
        CAPTURE(pol);
        CHECK(r.accesses == t.ids.size());
        CHECK(r.misses == cold);
        CHECK(r.hit_rate == doctest::Approx(1.0 - static_cast<double>(cold) / static_cast<double>(r.accesses)));
        CHECK(r.bytes_moved == cold * (1u << 20));
        CHECK(r.streamed == 0);
      }
    }
  }
}

TEST_CASE("budget 0: every access misses and is streamed") {
  const trace::Trace t = synth(3);
  for (const char* pred : {"none", "oracle", "transition"}) {
    const sim::SimResult r = sim::simulate(t, config("lru", 0, pred));
    CAPTURE(pred);
    CHECK(r.hits == 0);
    CHECK(r.hit_rate == 0.0);
    CHECK(r.misses == r.accesses);
    CHECK(r.streamed == r.accesses);
    CHECK(r.prefetch_issued == 0);
    CHECK(r.bytes_moved == r.accesses * (1u << 20));
    CHECK(r.stall_ms > 0);
  }
}

// Belady (MIN) as the manager runs it always admits a demand miss (no bypass). In a pool of at most
// top-k slots every slot is pinned by the current event, and a policy that refuses to evict (the
// static hot set) turns misses into streamed accesses, i.e. bypasses, which MIN-without-bypass
// cannot; so the bound is asserted for pools of more than top-k slots (global and per-layer).
TEST_CASE("Belady's hit rate bounds every other policy on synthetic traces") {
  for (uint64_t seed : {11, 12, 13}) {
    for (double skew : {0.6, 1.2}) {
      const trace::Trace t = synth(seed, 6, 16, 4, 500, skew);
      for (uint64_t slots : {8, 16, 24, 32, 48, 64}) {
        for (auto scope : {cache::Scope::Global, cache::Scope::Layer}) {
          if (scope == cache::Scope::Layer && slots / 6 <= 4) continue;
          sim::SimConfig c = config("belady", slots);
          c.scope = scope;
          const double bound = sim::simulate(t, c).hit_rate;
          for (const char* pol : {"lru", "lfu", "lfru", "arc", "static"}) {
            c.policy = pol;
            const double h = sim::simulate(t, c).hit_rate;
            CAPTURE(seed);
            CAPTURE(skew);
            CAPTURE(slots);
            const std::string name = pol;
            CAPTURE(name);
            CAPTURE(static_cast<int>(scope));
            CHECK(bound >= h);
          }
        }
      }
    }
  }
}

TEST_CASE("oracle prefetch: recall and precision 1, and no stalls beyond the cold start on an ample link") {
  const trace::Trace t = synth(21, 6, 16, 4, 200);
  sim::SimConfig c = config("lru", 6 * 16, "oracle");
  c.device.link_gbps = 100;        // 1 MiB in ~0.01 ms
  c.device.link_latency_us = 0;
  c.device.dense_ms_per_layer = 0.5;  // >> k transfers
  const sim::SimResult r = sim::simulate(t, c);
  CHECK(r.recall == 1.0);
  CHECK(r.precision == 1.0);
  // Only the first event (nothing predicted it) waits: at most k transfers.
  const double xfer = c.device.transfer_ms(1 << 20);
  CHECK(r.stall_ms <= 4 * xfer + 1e-9);
  CHECK(r.prefetch_used > 0);
  c.predictor = "none";
  const sim::SimResult base = sim::simulate(t, c);
  CHECK(base.stall_ms > 10 * r.stall_ms);
  CHECK(r.tok_s > base.tok_s);
  CHECK(r.overlap > base.overlap);
  // Per-layer recall is 1 wherever something was predicted.
  for (double x : r.recall_per_layer) CHECK(x == 1.0);
}

TEST_CASE("hand-computed tiny trace: precision, recall, stall, overlap") {
  const trace::Trace t = tiny();
  // link 2 GB/s: 1e6 bytes = 0.5 ms per transfer; dense 1 ms, expert 1 ms.
  //  ev0 route@1  miss {0}: 1.0->1.5, layer ends 2.5 (stall 0.5); queues guesses {1,2} for ev1
  //  ev1 route@3.5 prefetches ran 1.5->2.0, 2.0->2.5; {1} resident; ends 4.5; guess {0} resident
  //  ev2 route@5.5 miss {2}: 5.5->6.0, ends 7.0 (stall 0.5); queues {3}
  //  ev3 route@8.0 prefetch ran 7.0->7.5... (link free at 6.0: 6.0->6.5); {3} resident; ends 9.0
  const sim::SimResult r = sim::simulate(t, tiny_config(2));
  CHECK(r.recall == doctest::Approx(2.0 / 3.0));    // ev1: 1/1, ev2: 0/1, ev3: 1/1
  CHECK(r.precision == doctest::Approx(2.0 / 4.0)); // |P| = 2 + 1 + 1
  CHECK(r.stall_ms == doctest::Approx(1.0));
  CHECK(r.transfer_ms == doctest::Approx(2.5));
  CHECK(r.overlap == doctest::Approx(0.6));
  CHECK(r.total_ms == doctest::Approx(9.0));
  CHECK(r.stall_ms_per_token == doctest::Approx(0.5));
  CHECK(r.tok_s == doctest::Approx(2.0 / 0.009));
  CHECK(r.bytes_moved == 5000000);
  CHECK(r.prefetch_issued == 3);
  CHECK(r.prefetch_used == 2);
  CHECK(r.prefetch_cancelled == 0);
  CHECK(r.hits == 2);
  CHECK(r.misses == 2);
  CHECK(r.hit_rate == doctest::Approx(0.5));

  // A slow link (2 ms per transfer) leaves guess {2} for ev1 still queued when ev1's routing is
  // known: it is cancelled before moving a byte.
  //  ev0 miss 1->3, ends 4 (stall 2); ev1 route@5: {1} ran 3->5, resident; {2} cancelled; ends 6
  //  ev2 route@7 miss 7->9, ends 10 (stall 2); ev3 route@11: {3} ran 9->11; ends 12
  const sim::SimResult s = sim::simulate(t, tiny_config(0.5));
  CHECK(s.prefetch_cancelled == 1);
  CHECK(s.prefetch_issued == 3);
  CHECK(s.bytes_moved == 4000000);
  CHECK(s.stall_ms == doctest::Approx(4.0));
  CHECK(s.transfer_ms == doctest::Approx(8.0));
  CHECK(s.overlap == doctest::Approx(0.5));
  CHECK(s.total_ms == doctest::Approx(12.0));
}

TEST_CASE("device profiles: built-ins, composition, JSON files, errors") {
  for (auto n : sim::device_profile_names()) {
    const sim::DeviceProfile p = sim::device_profile(n);
    CHECK(p.link_gbps > 0);
    CHECK(p.expert_compute_ms(1 << 20) > 0);
  }
  CHECK(sim::device_profile("pcie5").link_gbps > sim::device_profile("pcie3").link_gbps);
  CHECK(sim::device_profile("pcie4").gpu);
  CHECK_FALSE(sim::device_profile("nvme-gen4").gpu);
  const sim::DeviceProfile combo = sim::device_profile("nvme-gen5+ddr5");
  CHECK(combo.link_gbps == sim::device_profile("nvme-gen5").link_gbps);
  CHECK(combo.compute_gbps == sim::device_profile("ddr5").compute_gbps);
  CHECK_THROWS_AS(sim::device_profile("pcie9"), Error);

  const std::string path = tmp("sim_device.json");
  {
    std::ofstream f(path);
    f << R"({"base": "pcie3", "name": "mine", "link_gbps": 7.5, "expert_ms": 0.25})";
  }
  const sim::DeviceProfile j = sim::device_profile(path);
  CHECK(j.name == "mine");
  CHECK(j.link_gbps == 7.5);
  CHECK(j.expert_compute_ms(123) == 0.25);
  CHECK(j.compute_gbps == sim::device_profile("pcie3").compute_gbps);
  {
    std::ofstream f(path);
    f << R"({"link_gbps": "fast"})";
  }
  try {
    sim::device_profile(path);
    FAIL("a bad profile was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("link_gbps") != std::string::npos);
  }
}

TEST_CASE("configuration errors are clear") {
  const trace::Trace t = synth(4);
  CHECK_THROWS_WITH_AS(sim::simulate(t, config("mru", 8)), doctest::Contains("mru"), Error);
  CHECK_THROWS_WITH_AS(sim::simulate(t, config("lru", 8, "crystal-ball")), doctest::Contains("crystal-ball"),
                       Error);
  CHECK_THROWS_WITH_AS(sim::simulate(t, config("lru", 8, "recorded")), doctest::Contains("guess"), Error);
  trace::Trace u = t;
  u.expert_bytes = 0;
  CHECK_THROWS_WITH_AS(sim::simulate(u, config("lru", 8)), doctest::Contains("expert-bytes"), Error);
  sim::SimConfig c = config("lru", 8);
  c.expert_bytes = 4096;
  CHECK_NOTHROW(sim::simulate(u, c));
}

TEST_CASE("JSON: SimResult and `moe sim --json` parse with the required keys") {
  const trace::Trace t = synth(5);
  const sim::SimResult r = sim::simulate(t, config("lru", 16, "transition"));
  const json::Value v = json::parse(r.to_json().dump(), "to_json");
  for (const char* key : {"policy", "predictor", "budget_bytes", "hit_rate", "bytes_moved", "stall_ms_per_token",
                          "tok_s", "prefetch_precision", "prefetch_recall", "overlap_ratio"})
    CHECK_MESSAGE(v.get(key) != nullptr, key);

  REQUIRE(std::filesystem::exists(MOE_TOOL_PATH));
  const std::string path = tmp("sim_tool.moetrace");
  trace::write(t, path);
  int rc = 0;
  const std::string out = run_tool("sim --trace " + path +
                                       " --policy lru,belady --predictor none,transition+popularity --budget 4M,8M"
                                       " --device nvme-gen4 --json",
                                   &rc);
  REQUIRE(rc == 0);
  const json::Value a = json::parse(out, "moe sim --json");
  REQUIRE(a.is_array());
  REQUIRE(a.size() == 8);
  for (const auto& o : a.items()) {
    for (const char* key : {"policy", "predictor", "budget_bytes", "hit_rate", "bytes_moved", "stall_ms_per_token",
                            "tok_s"})
      REQUIRE_MESSAGE(o.get(key) != nullptr, key);
    CHECK(o.get("hit_rate")->as_number() >= 0.0);
    CHECK(o.get("hit_rate")->as_number() <= 1.0);
  }
  CHECK(a[0].get("budget_bytes")->as_number() == 4.0 * (1 << 20));
  CHECK(a[1].get("predictor")->as_string() == "transition,popularity");
  CHECK(a[2].get("policy")->as_string() == "belady");
  // The table form prints one row per combination too.
  const std::string table = run_tool("sim --trace " + path + " --policy lru,arc --budget-experts 8", &rc);
  CHECK(rc == 0);
  CHECK(table.find("arc") != std::string::npos);
}

TEST_CASE("a corrupt trace gives a clear error naming the file") {
  const trace::Trace t = synth(6);
  const std::string path = tmp("sim_corrupt.moetrace");
  trace::write(t, path);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  CHECK_THROWS_WITH_AS(trace::read(path), doctest::Contains("sim_corrupt.moetrace"), Error);
  int rc = 0;
  const std::string out = run_tool("sim --trace " + path + " --budget-experts 8", &rc);
  CHECK(rc != 0);
  CHECK(out.find("sim_corrupt.moetrace") != std::string::npos);
  {
    std::ofstream f(path, std::ios::binary);
    f << "NOTATRACE-------------------------------------------------------------------";
  }
  const std::string out2 = run_tool("sim --trace " + path + " --budget-experts 8", &rc);
  CHECK(rc != 0);
  CHECK(out2.find("sim_corrupt.moetrace") != std::string::npos);
}
