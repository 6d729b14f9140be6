// Unit tests of the chat-template engine itself (no Python needed): expressions, filters, tests,
// whitespace control with HF's trim_blocks/lstrip_blocks, scoping, values, JSON, the context
// builder, error messages that name the construct and line, and the resource bounds.
#include <doctest/doctest.h>

#include <string>

#include "moe/chat_template.h"
#include "moe/error.h"

using moe::chat::Value;

namespace {

Value ctx_json(const char* json) { return Value::parse_json(json, "test"); }

std::string R(const std::string& src, const Value& ctx = Value::dict()) {
  moe::chat::RenderOptions o;
  o.now_epoch_s = 0;
  return moe::chat::render(src, ctx, o);
}

// The error message render() throws for `src`, or "" when it renders.
std::string E(const std::string& src, const Value& ctx = Value::dict(), moe::chat::RenderOptions o = {}) {
  try {
    moe::chat::render(src, ctx, o);
  } catch (const moe::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

}  // namespace

TEST_CASE("expressions follow Python semantics") {
  CHECK(R("{{ 1 + 2 * 3 }}") == "7");
  CHECK(R("{{ (1 + 2) * 3 }}") == "9");
  CHECK(R("{{ 7 // 2 }},{{ -7 // 2 }},{{ -7 % 3 }},{{ 7 / 2 }}") == "3,-4,2,3.5");
  CHECK(R("{{ 2 ** 10 }}") == "1024");
  CHECK(R("{{ 'a' ~ 1 ~ none }}") == "a1None");
  CHECK(R("{{ 'ab' * 2 }}{{ [1] + [2] }}") == "abab[1, 2]");
  CHECK(R("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}") == "True False");
  CHECK(R("{{ 'b' in 'abc' }} {{ 4 not in [1, 2] }}") == "True True");
  CHECK(R("{{ none or 0 or 'x' }} {{ 1 and 'y' }}") == "x y");
  CHECK(R("{{ 'yes' if 0 else 'no' }}[{{ 'only' if false }}]") == "no[]");
  CHECK(R("{{ 'hello'[1:3] }}{{ 'hello'[-1] }}{{ [1,2,3][::-1] }}") == "elo[3, 2, 1]");
  CHECK(R("{{ 'héllo'|length }} {{ 'héllo'[1] }}") == "5 é");
  CHECK(R("{{ \"a\\tb\\n\" }}|{{ '\\u00e9\\x41' }}") == "a\tb\n|éA");
  CHECK(R("{{ {'k': [1, 2.5, none, true, 'x']} }}") == "{'k': [1, 2.5, None, True, 'x']}");
  CHECK(R("{{ 1 == 1.0 }} {{ true == 1 }} {{ [1] == [1.0] }}") == "True True True");
  CHECK(R("{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 2.0 }}") == "0.30000000000000004 1e+16 1e-05 2.0");
}

TEST_CASE("whitespace control matches HF's trim_blocks and lstrip_blocks") {
  CHECK(R("a\n  {% if true %}\n  b\n  {% endif %}\nc") == "a\n  b\nc");
  CHECK(R("x {%- if 1 -%} y {%- endif -%} z") == "xyz");
  CHECK(R("  {%+ if true %}k{% endif %}") == "  k");
  CHECK(R("{{ 1 }}\n{{ 2 }}") == "1\n2");                        // no trimming after }}
  CHECK(R("a {# c #}\nb") == "a b");                              // comment end trims its newline
  CHECK(R("line\n") == "line");                                   // trailing newline dropped
  CHECK(R("a\r\nb") == "a\nb");
  CHECK(R("{% raw %}{{ x }}{% endraw %}") == "{{ x }}");
}

TEST_CASE("scoping: loops isolate set, namespaces carry state, macros see the top level") {
  CHECK(R("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}") == "1");
  CHECK(R("{% set ns = namespace(n=0) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}") == "6");
  CHECK(R("{% set g = 'G' %}{% macro m(a, b=2) %}{{ a }}{{ b }}{{ g }}{% endmacro %}{{ m(1) }}{{ m(1, b=3) }}") == "12G13G");
  CHECK(R("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}") == "37");
  CHECK(R("{% for x in [1,2,3] %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}") ==
        "1TrueFalse3 2FalseFalse3 3FalseTrue3 ");
  CHECK(R("{% for x in range(5) if x is even %}{{ x }}{% else %}none{% endfor %}") == "024");
  CHECK(R("{% for x in [] %}x{% else %}empty{% endfor %}") == "empty");
  CHECK(R("{% for x in range(9) %}{% if x > 2 %}{% break %}{% endif %}{{ x }}{% endfor %}") == "012");
  CHECK(R("{% set a, b = 'xy' %}{{ b }}{{ a }}") == "yx");
}

TEST_CASE("filters and tests") {
  Value c = ctx_json(R"({"users": [{"n": "a", "on": true}, {"n": "b", "on": false}], "d": {"z": 1, "a": [1, "é"]}})");
  CHECK(R("{{ users|selectattr('on')|map(attribute='n')|join(',') }}", c) == "a");
  CHECK(R("{{ users|rejectattr('on')|map(attribute='n')|list }}", c) == "['b']");
  CHECK(R("{{ d|tojson }}", c) == "{\"z\": 1, \"a\": [1, \"é\"]}");
  CHECK(R("{{ d|tojson(indent=2) }}", c) == "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    \"é\"\n  ]\n}");
  CHECK(R("{{ d|tojson(ensure_ascii=true, sort_keys=true) }}", c) == "{\"a\": [1, \"\\u00e9\"], \"z\": 1}");
  CHECK(R("{{ d|items|list }}", c) == "[('z', 1), ('a', [1, 'é'])]");
  CHECK(R("{{ '  x  '|trim }}|{{ 'AbC'|lower }}|{{ 'abc'|upper }}|{{ 'a-b'|replace('-', '+') }}") == "x|abc|ABC|a+b");
  CHECK(R("{{ [3,1,2]|sort|first }}{{ [3,1,2]|last }}{{ [1,2,2]|unique|list|length }}") == "122");
  CHECK(R("{{ missing|default('d') }}{{ ''|default('e', true) }}{{ 'x'|default('f') }}") == "dex");
  CHECK(R("{{ '12'|int + 1 }}{{ 'x'|int }}{{ '1.5'|float }}{{ 3|string|length }}") == "1301.51");
  CHECK(R("{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}") ==
        "FalseTrueTrueTrueTrue");
  CHECK(R("{{ 4 is divisibleby 2 }}{{ 3 is odd }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}") ==
        "TrueTrueTrueTrueTrue");
  CHECK(R("{{ ' a b '.split() }}{{ 'a,b'.split(',') }}{{ 'xax'.strip('x') }}{{ 'ab'.startswith('a') }}") ==
        "['a', 'b']['a', 'b']aTrue");
  CHECK(R("{{ {'a': 1}.get('b', 2) }}{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}") == "2a1");
  CHECK(R("{{ ['b', 'a']|reject('equalto', 'a')|join }}") == "b");
  CHECK(R("{{ strftime_now('%Y-%m-%d') }}").size() == 10);
}

TEST_CASE("the context builder produces HF-shaped messages") {
  moe::chat::Conversation conv;
  conv.messages.push_back({"system", Value("sys"), {}, {}, {}, {}});
  conv.messages.push_back({"user", Value("hi"), {}, {}, {}, {}});
  moe::chat::ChatMessage a{"assistant", Value(""), std::string("thought"), {}, {}, {}};
  Value args = Value::dict();
  args.set("city", Value("Oslo"));
  a.tool_calls.push_back({"call1", "weather", args});
  conv.messages.push_back(a);
  conv.messages.push_back({"tool", Value("sunny"), {}, {}, std::string("call1"), std::string("weather")});
  conv.add_generation_prompt = true;
  conv.bos_token = "<s>";
  conv.extra = Value::dict();
  conv.extra.set("enable_thinking", Value(false));
  Value ctx = moe::chat::make_context(conv);
  const char* tpl =
      "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}"
      "{% if m.reasoning_content is defined %}({{ m.reasoning_content }}){% endif %}"
      "{% if m.tool_calls %}{{ m.tool_calls[0].function.name }}{{ m.tool_calls[0].function.arguments|tojson }}{% endif %}"
      "{% if 'tool_call_id' in m %}#{{ m.tool_call_id }}{% endif %};{% endfor %}"
      "{{ add_generation_prompt }}{{ enable_thinking }}{{ tools is defined }}";
  CHECK(R(tpl, ctx) ==
        "<s>system:sys;user:hi;assistant:(thought)weather{\"city\": \"Oslo\"};tool:sunny#call1;TrueFalseFalse");
}

TEST_CASE("JSON round trip") {
  Value v = Value::parse_json(R"({"a": [1, -2.5, true, null, "x\u00e9\ud83d\ude00"], "b": {}})");
  CHECK(v.to_json() == "{\"a\": [1, -2.5, true, null, \"xé😀\"], \"b\": {}}");
  CHECK(v.to_json(-1, true) == "{\"a\": [1, -2.5, true, null, \"x\\u00e9\\ud83d\\ude00\"], \"b\": {}}");
  CHECK_THROWS_AS(Value::parse_json("{\"a\": }"), moe::Error);
  CHECK_THROWS_AS(Value::parse_json("[1, 2"), moe::Error);
}

TEST_CASE("errors name the construct and the line") {
  std::string e = E("line1\n{{ x|groupby('a') }}");
  CHECK(contains(e, "unsupported filter 'groupby'"));
  CHECK(contains(e, ":2:"));
  e = E("a\nb\n{% include 'x.html' %}");
  CHECK(contains(e, "unsupported tag 'include'"));
  CHECK(contains(e, ":3:"));
  CHECK(contains(E("{{ x is frobnicated }}"), "unsupported test 'frobnicated'"));
  CHECK(contains(E("{% if x %}never closed"), "'if' opened at line 1"));
  CHECK(contains(E("{{ raise_exception('bad role') }}"), "bad role"));
  CHECK(contains(E("{{ x.y }}"), "'x' is undefined"));
  CHECK(contains(E("{{ 'a' + 1 }}"), "unsupported operand"));
  CHECK(contains(E("{{ [].append(1) }}"), "unsafe"));
  CHECK(contains(E("{{ 'x'.nomethod() }}"), "no attribute 'nomethod'"));
  CHECK(contains(E("{% for x in 5 %}{% endfor %}"), "not iterable"));
  CHECK(contains(E("{{ 1 +* 2 }}"), "unexpected"));
  try {
    moe::chat::render("{% include 'x' %}", Value::dict());
    FAIL("expected an error");
  } catch (const moe::Error& err) {
    CHECK(err.code() == moe::ErrorCode::Unsupported);
  }
}

TEST_CASE("hostile templates end in errors, not crashes") {
  moe::chat::RenderOptions o;
  o.limits.max_output_bytes = 1 << 20;
  o.limits.max_steps = 200000;
  CHECK(contains(E("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", Value::dict(), o), "nested"));
  CHECK(contains(E("{{ 'x' * 100000000 }}", Value::dict(), o), "exceeds"));
  CHECK(contains(E("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", Value::dict(), o),
                 "steps"));
  CHECK(contains(E("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}", Value::dict(), o), "nested"));
  CHECK(contains(E("{{ " + std::string(3000, '[') + std::string(3000, ']') + " }}", Value::dict(), o), "nested"));
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  CHECK(contains(E(chain + " }}", Value::dict(), o), "nested"));
  CHECK(contains(E("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                   Value::dict(), o),
                 "exceeds"));
  CHECK(contains(E("{% set ns = namespace(l=[]) %}{% for i in range(2000) %}{% set ns.l = [ns.l] %}{% endfor %}",
                   Value::dict(), o),
                 "nested deeper"));
  CHECK(contains(E("{{ range(1000000)|length }}"), "Range too big"));
}
