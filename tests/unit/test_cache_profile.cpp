// Usage profiles: round trips, the published Fiddler statistics as input, and the malformed inputs
// the reader must reject with file:line:column and a cause.
#include <filesystem>
#include <fstream>

#include "moe/cache/profile.h"
#include "test_cache_util.h"

using namespace cache_test;

namespace {

CacheStatus parse(const std::string& text, UsageProfile* p) { return parse_usage_profile(text, "p.json", p); }

void expect_corrupt(const std::string& text, const std::string& fragment) {
  UsageProfile p;
  const CacheStatus st = parse(text, &p);
  CAPTURE(text);
  CHECK(st.code == CacheCode::Corrupt);
  CHECK_MESSAGE(st.message.find(fragment) != std::string::npos, st.message);
  CHECK(st.message.rfind("p.json:", 0) == 0);
}

}  // namespace

TEST_CASE("Usage profile round trip") {
  UsageProfile p;
  p.total_tokens = 42;
  p.resize(3, 4);
  p.counts[1].clear();  // a dense layer
  p.add(ExpertKey{0, 2}, 7);
  p.add(ExpertKey{2, 3});
  p.add(ExpertKey{2, 3}, UINT64_MAX - 1);
  const std::string text = format_usage_profile(p);
  UsageProfile q;
  const CacheStatus st = parse(text, &q);
  REQUIRE_MESSAGE(st.ok(), st.message);
  CHECK(q == p);
  CHECK(q.count(ExpertKey{2, 3}) == UINT64_MAX);
  CHECK(q.count(ExpertKey{1, 0}) == 0);
  CHECK(q.count(ExpertKey{9, 0}) == 0);

  const std::string path = std::string(MOE_TEST_TMP) + "/cache_profile.json";
  REQUIRE(write_usage_profile(path, p).ok());
  UsageProfile r;
  const CacheStatus rs = read_usage_profile(path, &r);
  REQUIRE_MESSAGE(rs.ok(), rs.message);
  CHECK(r == p);

  UsageProfile empty;
  REQUIRE(parse(format_usage_profile(empty), &q).ok());
  CHECK(q == empty);

  UsageProfile m = p;
  m.merge(p);
  CHECK(m.total_tokens == 84);
  CHECK(m.count(ExpertKey{0, 2}) == 14);
}

TEST_CASE("Usage profile reads the published Fiddler statistics as they are") {
  const std::string dir = std::string(MOE_SHARED_DATA) + "/routing/mixtral-8x7b-instruct";
  const std::string path = dir + "/expert_popularity_college_computer_science.json";
  UsageProfile p;
  const CacheStatus st = read_usage_profile(path, &p);
  REQUIRE_MESSAGE(st.ok(), st.message);
  CHECK(p.total_tokens == 5064);
  CHECK(p.n_layer() == 32);
  for (const auto& l : p.counts) CHECK(l.size() == 8);
  CHECK(p.count(ExpertKey{0, 0}) == 1782);
  CHECK(p.count(ExpertKey{1, 3}) == 458);
  // Every file of the set parses.
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    UsageProfile q;
    CHECK_MESSAGE(read_usage_profile(e.path().string(), &q).ok(), e.path().string());
    CHECK(q.n_layer() == 32);
    ++n;
  }
  CHECK(n == 7);
  // And drives the static policy: layer 1's hot set excludes its rare expert 3 (458 uses).
  PolicyParams params;
  params.profile = std::make_shared<UsageProfile>(p);
  params.static_hot_slots = 6;
  auto m = make("static", 7 * 32, 32, 8, Scope::Layer, params);
  for (uint32_t e = 0; e < 8; ++e) access(*m, ExpertKey{1, e});
  // 7 slots: 6 hot + 1 LRU; the last inserted cold expert holds the LRU slot.
  uint32_t resident = 0;
  for (uint32_t e = 0; e < 8; ++e) resident += m->Peek(ExpertKey{1, e}) == EntryState::Resident;
  CHECK(resident == 7);
  CHECK(m->Peek(ExpertKey{1, 3}) == EntryState::Absent);  // cold, evicted by expert 7
}

TEST_CASE("Usage profile: unknown keys are skipped, synonyms accepted") {
  UsageProfile p;
  const std::string text =
      "{\"future\": {\"a\": [1, 2.5e3, -1, true, false, null, \"x\\\"\\u00e9\"]},\n"
      " \"total_input_tokens\": 3, \"expert_popularity\": [[1,2],[3]], \"note\": \"\"}";
  const CacheStatus st = parse(text, &p);
  REQUIRE_MESSAGE(st.ok(), st.message);
  CHECK(p.total_tokens == 3);
  CHECK(p.counts == std::vector<std::vector<uint64_t>>{{1, 2}, {3}});
}

TEST_CASE("Usage profile: malformed input is rejected with position and cause") {
  expect_corrupt("", "expected '{'");
  expect_corrupt("[1, 2]", "expected '{'");
  expect_corrupt("{}", "missing key \"expert_popularity\"");
  expect_corrupt("{\"expert_popularity\": [[1, 2]", "expected ',' or ']' in expert_popularity");
  expect_corrupt("{\"expert_popularity\": [[1, 2}", "expected ',' or ']' in expert_popularity[0]");
  expect_corrupt("{\"expert_popularity\": [[1, -2]]}", "expert_popularity[0][1]: negative count");
  expect_corrupt("{\"expert_popularity\": [[1.5]]}", "counts must be integers");
  expect_corrupt("{\"expert_popularity\": [[18446744073709551616]]}", "does not fit in 64 bits");
  expect_corrupt("{\"expert_popularity\": [[01]]}", "leading zero");
  expect_corrupt("{\"expert_popularity\": [3]}", "expert_popularity[0] must be an array");
  expect_corrupt("{\"expert_popularity\": 3}", "must be an array of per-layer arrays");
  expect_corrupt("{\"expert_popularity\": [], \"expert_popularity\": []}", "duplicate key");
  expect_corrupt("{\"version\": 2, \"expert_popularity\": []}", "unsupported usage profile version 2");
  expect_corrupt("{\"format\": \"gguf\", \"expert_popularity\": []}", "expected \"moe-usage-profile\"");
  expect_corrupt("{\"expert_popularity\": []} x", "unexpected data after");
  expect_corrupt("{\"expert_popularity\": [], \"x\": tru}", "expected a JSON value");
  expect_corrupt("{\"expert_popularity\": [], \"x\": \"abc", "unterminated string");
  expect_corrupt("{\"total_tokens\": \"many\", \"expert_popularity\": []}", "expected a non-negative integer");
  expect_corrupt("{\"expert_popularity\" [[1]]}", "expected ':'");
  // The position is line:column of the offending character.
  UsageProfile p;
  const CacheStatus st = parse("{\"expert_popularity\": [\n  [1, 2],\n  [3, x]]}", &p);
  CHECK(st.code == CacheCode::Corrupt);
  CHECK_MESSAGE(st.message.rfind("p.json:3:7:", 0) == 0, st.message);
  // Deep nesting in skipped values is bounded, not a stack overflow.
  expect_corrupt("{\"x\": " + std::string(1000, '[') + ", \"expert_popularity\": []}", "nested too deeply");
}

TEST_CASE("Usage profile file errors name the path") {
  UsageProfile p;
  const std::string missing = std::string(MOE_TEST_TMP) + "/no/such/profile.json";
  CacheStatus st = read_usage_profile(missing, &p);
  CHECK(st.code == CacheCode::Io);
  CHECK(st.message.find(missing) != std::string::npos);
  st = write_usage_profile(missing, p);
  CHECK(st.code == CacheCode::Io);
  CHECK(st.message.find(missing) != std::string::npos);
}
