// JSON parser/writer: round trips, escapes, errors with line and column, depth bound.
#include <doctest/doctest.h>

#include <string>

#include "moe/error.h"
#include "moe/json.h"

using namespace moe;

TEST_CASE("parse and dump round trip") {
  auto v = json::parse(R"({"a": [1, 2.5, -3e2, true, false, null], "b": {"c": "x\"y\\n\u00e9\ud83d\ude00"}})", "t");
  REQUIRE(v.is_object());
  const json::Value* a = v.get("a");
  REQUIRE(a);
  CHECK(a->size() == 6);
  CHECK((*a)[1].as_number() == 2.5);
  CHECK((*a)[2].as_number() == -300);
  CHECK((*a)[3].as_bool());
  CHECK((*a)[5].is_null());
  CHECK(v.get("b")->get("c")->as_string() == "x\"y\\n\xc3\xa9\xf0\x9f\x98\x80");
  auto again = json::parse(v.dump(), "t2");
  CHECK(again.dump() == v.dump());
  CHECK(json::parse(v.dump(2), "t3").dump() == v.dump());
  CHECK(json::Value(int64_t{1} << 40).dump() == "1099511627776");
}

TEST_CASE("errors name the source, line and column") {
  for (const char* bad : {"{", "[1,]", "{\"a\" 1}", "tru", "\"abc", "01", "[1] x", "\"\\ud800\"", "{1:2}"}) {
    try {
      json::parse(bad, "in.json");
      FAIL("accepted: " << bad);
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("in.json:1:") == 0);
      CHECK(e.code() == ErrorCode::Corrupt);
    }
  }
  try {
    json::parse("[1,\n 2,\n x]", "m.json");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("m.json:3:2") == 0);
  }
  std::string deep(100000, '[');
  CHECK_THROWS_AS(json::parse(deep, "deep"), Error);
  CHECK_THROWS_AS(json::parse_file("/nonexistent.json"), Error);
}
