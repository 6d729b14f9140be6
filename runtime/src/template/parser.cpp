// template/parser.cpp — builds the AST from tokens with jinja2's grammar and precedence:
//   condexpr: or ('if' or ('else' condexpr)?)*      or: and ('or' and)*      and: not ('and' not)*
//   not: 'not' not | compare                        compare: math1 (cmp math1 | 'in' | 'not in')*
//   math1: concat (('+'|'-') concat)*              concat: math2 ('~' math2)*
//   math2: pow (('*'|'/'|'//'|'%') pow)*           pow: unary ('**' unary)*
//   unary: ('-'|'+') unary-without-filters | primary postfix* (filter | test | call)*
// Statements: if/elif/else, for (targets, 'if' filter, else, recursive is rejected), set (name,
// tuple, namespace attribute, block form with filters), macro, call, filter, raw (lexer), with,
// break/continue, generation; unknown tags are Unsupported errors naming the tag and line.
// Recursion is bounded by RenderLimits::max_parse_depth. Stateless and reentrant.
#include <algorithm>

#include "internal.h"

namespace moe::chat::detail {

[[noreturn]] void throw_at(ErrorCode code, const std::string& name, int line, const std::string& msg) {
  throw Error(code, fmt::format("{}:{}: {}", name, line, msg));
}

namespace {

struct Parser {
  std::vector<Token> toks;
  const std::string& name;
  const RenderLimits& limits;
  size_t i = 0;
  int depth = 0;
  uintptr_t stack_base = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& pp) : p(pp) {
      auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
      if (++p.depth > p.limits.max_parse_depth ||
          (p.stack_base > here && p.stack_base - here > p.limits.max_stack_bytes)) {
        --p.depth;
        p.fail(fmt::format("template nested deeper than {} levels", p.limits.max_parse_depth));
      }
    }
    ~DepthGuard() { --p.depth; }
  };
  // Left-deep chains (a + b + c ..., x|f|g ..., a.b.c ...) nest the AST without recursing here;
  // each link counts as one level so the evaluator's recursion stays bounded too.
  struct ChainGuard {
    Parser& p;
    int n = 0;
    explicit ChainGuard(Parser& pp) : p(pp) {}
    void step() {
      ++n;
      if (++p.depth > p.limits.max_parse_depth)
        p.fail(fmt::format("template nested deeper than {} levels", p.limits.max_parse_depth));
    }
    ~ChainGuard() { p.depth -= n; }
  };

  const Token& cur() const { return toks[i]; }
  const Token& peek(size_t k = 1) const { return toks[std::min(i + k, toks.size() - 1)]; }
  void next() {
    if (i + 1 < toks.size()) ++i;
  }
  [[noreturn]] void fail(const std::string& msg, int line = -1) const {
    throw_at(ErrorCode::Corrupt, name, line < 0 ? cur().line : line, msg);
  }
  [[noreturn]] void unsupported(const std::string& what, int line = -1) const {
    throw_at(ErrorCode::Unsupported, name, line < 0 ? cur().line : line, "unsupported " + what);
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Text: return "template data";
      case Tok::VarBegin: return "'{{'";
      case Tok::VarEnd: return "'}}'";
      case Tok::BlockBegin: return "'{%'";
      case Tok::BlockEnd: return "end of statement block";
      case Tok::Name: return "'" + t.text + "'";
      case Tok::String: return "string";
      case Tok::Int: return "integer";
      case Tok::Float: return "float";
      case Tok::Op: return "'" + t.text + "'";
      case Tok::Eof: return "end of template";
    }
    return "token";
  }

  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::Name && cur().text == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail(fmt::format("expected a name, got {}", describe(cur())));
    std::string n = cur().text;
    next();
    return n;
  }
  void expect(Tok t, const char* what) {
    if (cur().type != t) fail(fmt::format("expected {}, got {}", what, describe(cur())));
    next();
  }

  ExprP make(EK k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }

  // ---- expressions --------------------------------------------------------------------------------
  ExprP expression(bool with_cond = true) { return with_cond ? condexpr() : or_expr(); }

  ExprP condexpr() {
    DepthGuard g(*this);
    ExprP e = or_expr();
    ChainGuard cg(*this);
    while (is_name("if")) {
      cg.step();
      int line = cur().line;
      next();
      ExprP test = or_expr();
      ExprP other;
      if (skip_name("else")) other = condexpr();
      auto c = make(EK::Cond, line);
      c->a = std::move(test);
      c->b = std::move(e);
      c->c = std::move(other);
      e = std::move(c);
    }
    return e;
  }

  ExprP binary(EK k, ExprP l, ExprP r, int line, std::string op = {}) {
    auto e = make(k, line);
    e->a = std::move(l);
    e->b = std::move(r);
    e->name = std::move(op);
    return e;
  }

  ExprP or_expr() {
    ExprP l = and_expr();
    ChainGuard cg(*this);
    while (is_name("or")) {
      cg.step();
      int line = cur().line;
      next();
      l = binary(EK::Or, std::move(l), and_expr(), line);
    }
    return l;
  }
  ExprP and_expr() {
    ExprP l = not_expr();
    ChainGuard cg(*this);
    while (is_name("and")) {
      cg.step();
      int line = cur().line;
      next();
      l = binary(EK::And, std::move(l), not_expr(), line);
    }
    return l;
  }
  ExprP not_expr() {
    if (is_name("not")) {
      DepthGuard g(*this);
      int line = cur().line;
      next();
      auto e = make(EK::Not, line);
      e->a = not_expr();
      return e;
    }
    return compare();
  }
  ExprP compare() {
    int line = cur().line;
    ExprP first = math1();
    ExprP cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::Op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(EK::Compare, line);
        cmp->a = std::move(first);
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprP math1() {
    ExprP l = concat();
    ChainGuard cg(*this);
    while (is_op("+") || is_op("-")) {
      cg.step();
      std::string op = cur().text;
      int line = cur().line;
      next();
      l = binary(EK::Binary, std::move(l), concat(), line, op);
    }
    return l;
  }
  ExprP concat() {
    ExprP l = math2();
    ChainGuard cg(*this);
    while (is_op("~")) {
      cg.step();
      int line = cur().line;
      next();
      l = binary(EK::Binary, std::move(l), math2(), line, "~");
    }
    return l;
  }
  ExprP math2() {
    ExprP l = pow_expr();
    ChainGuard cg(*this);
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      cg.step();
      std::string op = cur().text;
      int line = cur().line;
      next();
      l = binary(EK::Binary, std::move(l), pow_expr(), line, op);
    }
    return l;
  }
  ExprP pow_expr() {
    ExprP l = unary(true);
    ChainGuard cg(*this);
    while (is_op("**")) {
      cg.step();
      int line = cur().line;
      next();
      l = binary(EK::Binary, std::move(l), unary(true), line, "**");
    }
    return l;
  }
  ExprP unary(bool with_filter) {
    DepthGuard g(*this);
    ExprP node;
    int line = cur().line;
    if (is_op("-") || is_op("+")) {
      bool neg = cur().text == "-";
      next();
      node = make(neg ? EK::Neg : EK::Pos, line);
      node->a = unary(false);
    } else {
      node = primary();
    }
    node = postfix(std::move(node));
    if (with_filter) node = filter_expr(std::move(node));
    return node;
  }

  ExprP primary() {
    const Token& t = cur();
    int line = t.line;
    if (t.type == Tok::Name) {
      auto e = make(EK::Const, line);
      if (t.text == "true" || t.text == "True") e->value = Value(true);
      else if (t.text == "false" || t.text == "False") e->value = Value(false);
      else if (t.text == "none" || t.text == "None") e->value = Value::none();
      else {
        e->kind = EK::Name;
        e->name = t.text;
      }
      next();
      return e;
    }
    if (t.type == Tok::String) {
      std::string s;
      while (cur().type == Tok::String) {
        s += cur().text;
        next();
      }
      auto e = make(EK::Const, line);
      e->value = Value(std::move(s));
      return e;
    }
    if (t.type == Tok::Int || t.type == Tok::Float) {
      auto e = make(EK::Const, line);
      e->value = t.type == Tok::Int ? Value(t.ival) : Value(t.fval);
      next();
      return e;
    }
    if (is_op("(")) {
      next();
      ExprP e = tuple(true, true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      next();
      auto e = make(EK::List, line);
      while (!is_op("]")) {
        if (!e->args.empty()) {
          expect_op(",");
          if (is_op("]")) break;
        }
        e->args.push_back(expression());
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      next();
      auto e = make(EK::Dict, line);
      while (!is_op("}")) {
        if (!e->args.empty()) {
          expect_op(",");
          if (is_op("}")) break;
        }
        e->args.push_back(expression());
        expect_op(":");
        e->args.push_back(expression());
      }
      expect_op("}");
      return e;
    }
    fail(fmt::format("unexpected {}", describe(t)));
  }

  // A comma-separated expression list; one element without a comma is returned as is. Tuples are
  // lists at runtime.
  ExprP tuple(bool with_cond, bool explicit_parens, const char* extra_end = nullptr) {
    int line = cur().line;
    std::vector<ExprP> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (tuple_end(extra_end)) break;
      items.push_back(expression(with_cond));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail(fmt::format("expected an expression, got {}", describe(cur())));
    }
    auto e = make(EK::List, line);
    e->args = std::move(items);
    e->tuple = true;
    return e;
  }
  bool tuple_end(const char* extra_end) const {
    if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || cur().type == Tok::Eof) return true;
    if (is_op(")")) return true;
    if (extra_end && is_name(extra_end)) return true;
    return false;
  }

  ExprP postfix(ExprP node) {
    ChainGuard cg(*this);
    while (true) {
      cg.step();
      if (is_op(".") || is_op("[")) node = subscript(std::move(node));
      else if (is_op("(")) node = call(std::move(node));
      else break;
    }
    return node;
  }

  ExprP filter_expr(ExprP node) {
    ChainGuard cg(*this);
    while (true) {
      cg.step();
      if (is_op("|")) node = filter(std::move(node));
      else if (is_name("is")) node = test(std::move(node));
      else if (is_op("(")) node = call(std::move(node));
      else break;
    }
    return node;
  }

  ExprP subscript(ExprP node) {
    DepthGuard g(*this);
    int line = cur().line;
    if (skip_op(".")) {
      if (cur().type == Tok::Name) {
        auto e = make(EK::Attr, line);
        e->a = std::move(node);
        e->name = cur().text;
        next();
        return e;
      }
      if (cur().type != Tok::Int) fail("expected name or number after '.'");
      auto e = make(EK::Item, line);
      e->a = std::move(node);
      e->b = make(EK::Const, line);
      e->b->value = Value(cur().ival);
      next();
      return e;
    }
    expect_op("[");
    std::vector<ExprP> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(subscribed());
    }
    expect_op("]");
    if (args.empty()) fail("expected subscript expression");
    auto e = make(EK::Item, line);
    e->a = std::move(node);
    if (args.size() == 1) {
      if (args[0]->kind == EK::Slice) {
        args[0]->a = std::move(e->a);
        return std::move(args[0]);
      }
      e->b = std::move(args[0]);
    } else {
      unsupported("tuple subscript", line);
    }
    return e;
  }

  ExprP subscribed() {
    int line = cur().line;
    std::vector<ExprP> parts;
    if (is_op(":")) {
      next();
      parts.push_back(nullptr);
    } else {
      ExprP e = expression();
      if (!is_op(":")) return e;
      next();
      parts.push_back(std::move(e));
    }
    if (is_op(":")) parts.push_back(nullptr);
    else if (!is_op("]") && !is_op(",")) parts.push_back(expression());
    else parts.push_back(nullptr);
    if (is_op(":")) {
      next();
      if (!is_op("]") && !is_op(",")) parts.push_back(expression());
      else parts.push_back(nullptr);
    } else {
      parts.push_back(nullptr);
    }
    auto s = make(EK::Slice, line);
    s->b = std::move(parts[0]);
    s->c = std::move(parts[1]);
    s->args.push_back(std::move(parts[2]));
    return s;
  }

  void call_args(Expr& e) {
    expect_op("(");
    bool need_comma = false;
    while (!is_op(")")) {
      if (need_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) unsupported("*args / **kwargs in a call");
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        std::string key = cur().text;
        next();
        next();
        e.kwargs.emplace_back(key, expression());
      } else {
        if (!e.kwargs.empty()) fail("positional argument follows keyword argument");
        e.args.push_back(expression());
      }
      need_comma = true;
    }
    expect_op(")");
  }

  ExprP call(ExprP node) {
    DepthGuard g(*this);
    auto e = make(EK::Call, cur().line);
    e->a = std::move(node);
    call_args(*e);
    return e;
  }

  std::string dotted_name() {
    std::string n = expect_name();
    while (is_op(".")) {
      next();
      n += "." + expect_name();
    }
    return n;
  }

  ExprP filter(ExprP node, bool start_inline = false) {
    while (is_op("|") || start_inline) {
      DepthGuard g(*this);
      if (!start_inline) next();
      start_inline = false;
      int line = cur().line;
      std::string fname = dotted_name();
      if (!is_known_filter(fname)) unsupported(fmt::format("filter '{}'", fname), line);
      auto e = make(EK::Filter, line);
      e->a = std::move(node);
      e->name = fname;
      if (is_op("(")) call_args(*e);
      node = std::move(e);
    }
    return node;
  }

  ExprP test(ExprP node) {
    DepthGuard g(*this);
    int line = cur().line;
    next();  // 'is'
    bool negated = skip_name("not");
    std::string tname = dotted_name();
    if (!is_known_test(tname)) unsupported(fmt::format("test '{}'", tname), line);
    auto e = make(EK::Test, line);
    e->a = std::move(node);
    e->name = tname;
    if (is_op("(")) {
      call_args(*e);
    } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                cur().type == Tok::Float || is_op("(") || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail("you cannot chain multiple tests with 'is'");
      e->args.push_back(postfix(primary()));
    }
    if (!negated) return e;
    auto n = make(EK::Not, line);
    n->a = std::move(e);
    return n;
  }

  // ---- statements ---------------------------------------------------------------------------------
  // Parses statements until a block tag whose name is in `ends`; leaves the stream at that name.
  Body subparse(std::initializer_list<const char*> ends, const char* opener, int open_line) {
    DepthGuard g(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::Eof) {
        if (ends.size() == 0) return body;
        std::string want;
        for (const char* e : ends) want += (want.empty() ? "'" : " or '") + std::string(e) + "'";
        fail(fmt::format("unexpected end of template: '{}' opened at line {} needs {}", opener, open_line, want));
      }
      if (t.type == Tok::Text) {
        auto s = std::make_unique<Stmt>();
        s->kind = SK::Text;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        next();
        continue;
      }
      if (t.type == Tok::VarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = SK::Output;
        s->line = t.line;
        next();
        s->expr = tuple(true, false);
        expect(Tok::VarEnd, "'}}'");
        body.push_back(std::move(s));
        continue;
      }
      if (t.type == Tok::BlockBegin) {
        next();
        if (cur().type == Tok::Name)
          for (const char* e : ends)
            if (cur().text == e) return body;
        if (StmtP s = statement()) body.push_back(std::move(s));
        continue;
      }
      fail(fmt::format("unexpected {}", describe(t)));
    }
  }

  StmtP make_stmt(SK k, int line) {
    auto s = std::make_unique<Stmt>();
    s->kind = k;
    s->line = line;
    return s;
  }

  void end_block() { expect(Tok::BlockEnd, "end of statement block ('%}')"); }

  // Body up to `end` ("endfor"...), consuming the end tag.
  Body block_body(const char* end, const char* opener, int line) {
    end_block();
    Body b = subparse({end}, opener, line);
    next();  // end name
    end_block();
    return b;
  }

  std::vector<std::string> assign_targets(const char* extra_end) {
    std::vector<std::string> names;
    bool parens = skip_op("(");
    while (true) {
      names.push_back(expect_name());
      if (!is_op(",")) break;
      next();
      if ((extra_end && is_name(extra_end)) || is_op(")") || is_op("=") || cur().type == Tok::BlockEnd) break;
    }
    if (parens) expect_op(")");
    return names;
  }

  StmtP statement() {
    const Token& t = cur();
    int line = t.line;
    if (t.type != Tok::Name) fail("tag name expected");
    std::string tag = t.text;
    next();
    if (tag == "if") {
      auto s = make_stmt(SK::If, line);
      ExprP cond = tuple(false, false);
      while (true) {
        end_block();
        Body b = subparse({"elif", "else", "endif"}, "if", line);
        s->branches.emplace_back(std::move(cond), std::move(b));
        std::string which = cur().text;
        next();
        if (which == "elif") {
          cond = tuple(false, false);
          continue;
        }
        if (which == "else") s->else_body = block_body("endif", "if", line);
        else end_block();
        break;
      }
      return s;
    }
    if (tag == "for") {
      auto s = make_stmt(SK::For, line);
      s->targets = assign_targets("in");
      if (!skip_name("in")) fail(fmt::format("expected 'in', got {}", describe(cur())));
      s->expr = tuple(false, false, "recursive");
      if (skip_name("if")) s->cond = expression();
      if (is_name("recursive")) unsupported("recursive for loop", line);
      end_block();
      s->body = subparse({"endfor", "else"}, "for", line);
      std::string which = cur().text;
      next();
      if (which == "else") s->else_body = block_body("endfor", "for", line);
      else end_block();
      return s;
    }
    if (tag == "set") {
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == ".") {
        auto s = make_stmt(SK::SetNs, line);
        s->targets.push_back(expect_name());
        next();
        s->text = expect_name();
        expect_op("=");
        s->expr = tuple(true, false);
        end_block();
        return s;
      }
      auto targets = assign_targets(nullptr);
      if (skip_op("=")) {
        auto s = make_stmt(SK::Set, line);
        s->targets = std::move(targets);
        s->expr = tuple(true, false);
        end_block();
        return s;
      }
      auto s = make_stmt(SK::SetBlock, line);
      if (targets.size() != 1) fail("a block set takes one name");
      s->targets = std::move(targets);
      if (is_op("|")) s->filters.push_back(filter(make(EK::Input, line)));
      s->body = block_body("endset", "set", line);
      return s;
    }
    if (tag == "macro" || tag == "call") {
      auto s = make_stmt(tag == "macro" ? SK::Macro : SK::CallBlock, line);
      if (tag == "macro") s->text = expect_name();
      if (tag == "macro" || is_op("(")) {
        expect_op("(");
        while (!is_op(")")) {
          if (!s->params.empty()) expect_op(",");
          s->params.push_back(expect_name());
          if (skip_op("=")) s->defaults.push_back(expression());
          else if (!s->defaults.empty()) fail("non-default argument follows default argument");
        }
        expect_op(")");
      }
      if (tag == "call") {
        s->expr = expression();
        if (s->expr->kind != EK::Call) fail("expected a call after {% call %}", line);
      }
      s->body = block_body(tag == "macro" ? "endmacro" : "endcall", tag.c_str(), line);
      return s;
    }
    if (tag == "filter") {
      auto s = make_stmt(SK::FilterBlock, line);
      s->filters.push_back(filter(make(EK::Input, line), true));
      s->body = block_body("endfilter", "filter", line);
      return s;
    }
    if (tag == "with") {
      auto s = make_stmt(SK::With, line);
      while (cur().type != Tok::BlockEnd) {
        if (!s->with_vars.empty()) expect_op(",");
        std::string n = expect_name();
        expect_op("=");
        s->with_vars.emplace_back(n, expression());
      }
      s->body = block_body("endwith", "with", line);
      return s;
    }
    if (tag == "print") {
      auto s = make_stmt(SK::Output, line);
      s->expr = tuple(true, false);
      end_block();
      return s;
    }
    if (tag == "break" || tag == "continue") {
      auto s = make_stmt(tag == "break" ? SK::Break : SK::Continue, line);
      end_block();
      return s;
    }
    if (tag == "generation") {  // HF's assistant-mask tag: renders its body unchanged
      auto s = make_stmt(SK::Body, line);
      s->body = block_body("endgeneration", "generation", line);
      return s;
    }
    static const char* const known_end[] = {"endif", "endfor", "endmacro", "endset", "endcall", "endfilter",
                                            "endwith", "elif", "else", "endgeneration", "endraw"};
    for (const char* e : known_end)
      if (tag == e) fail(fmt::format("unexpected '{}'", tag), line);
    unsupported(fmt::format("tag '{}'", tag), line);
  }
};

}  // namespace

std::shared_ptr<Program> parse(std::vector<Token> tokens, const std::string& name, const RenderLimits& limits) {
  Parser p{std::move(tokens), name, limits};
  auto prog = std::make_shared<Program>();
  prog->name = name;
  prog->limits = limits;
  prog->body = p.subparse({}, "template", 1);
  return prog;
}

}  // namespace moe::chat::detail
