// template/eval.cpp — the tree-walking evaluator and the public Template entry points.
// Scoping follows Jinja: the template's top level is one frame (shadowing the context); every for-loop
// iteration, macro call, call block and with block gets a child frame, and {% set %} writes to the
// innermost frame, so assignments inside a loop do not leak out (namespace() objects are how templates
// carry state across iterations). Macros see their arguments, then the top-level frame, then the
// context and the globals. One Renderer per render() call: no shared mutable state, so a Template can
// render on several threads at once.
#include <algorithm>
#include <cmath>
#include <set>

#include "internal.h"

namespace moe::chat {
namespace detail {
namespace {

struct Frame {
  std::vector<std::pair<std::string, Value>> vars;
  Frame* parent = nullptr;

  Value* find(const std::string& n) {
    for (Frame* f = this; f; f = f->parent)
      for (auto& kv : f->vars)
        if (kv.first == n) return &kv.second;
    return nullptr;
  }
  void set(const std::string& n, Value v) {
    for (auto& kv : vars)
      if (kv.first == n) {
        kv.second = std::move(v);
        return;
      }
    vars.emplace_back(n, std::move(v));
  }
};

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  Renderer(const Program& prog, const Value& context, const RenderOptions& opts) : context_(context) {
    c_.prog = &prog;
    c_.opts = opts;
  }

  std::string run() {
    stack_base_ = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    std::string out;
    exec(c_.prog->body, root_, out, false);
    return out;
  }

 private:
  Ctx c_;
  const Value& context_;
  Frame root_;
  int depth_ = 0;
  int call_depth_ = 0;
  uintptr_t stack_base_ = 0;
  Value input_;  // the value piped into a block filter chain
  std::set<const FunctionData*> live_callers_;

  struct Depth {
    Renderer& r;
    explicit Depth(Renderer& rr) : r(rr) {
      // Bounds C++ recursion: AST depth is bounded by the parser, macro calls multiply it, so the
      // stack actually used is measured too (frame sizes differ between builds and sanitizers).
      ++r.depth_;
      auto here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
      if (r.depth_ > r.c_.opts.limits.max_parse_depth * 4 + 64 ||
          (r.stack_base_ > here && r.stack_base_ - here > r.c_.opts.limits.max_stack_bytes)) {
        --r.depth_;
        r.c_.fail(ErrorCode::InvalidArgument, "template evaluation nested too deeply");
      }
    }
    ~Depth() { --r.depth_; }
  };

  void emit(std::string& out, std::string_view s) {
    if (out.size() + s.size() > c_.opts.limits.max_output_bytes)
      c_.fail(ErrorCode::InvalidArgument,
              fmt::format("output exceeds the limit of {} bytes", c_.opts.limits.max_output_bytes));
    out += s;
  }

  // ---- statements ---------------------------------------------------------------------------------
  Flow exec(const Body& body, Frame& f, std::string& out, bool in_loop) {
    Depth d(*this);
    for (const StmtP& s : body) {
      Flow fl = exec_stmt(*s, f, out, in_loop);
      if (fl != Flow::Normal) return fl;
    }
    return Flow::Normal;
  }

  void assign_targets(Frame& f, const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) {
      f.set(targets[0], v);
      return;
    }
    std::vector<Value> items = iterate(c_, v);
    if (items.size() != targets.size())
      c_.type_error(fmt::format("cannot unpack {} values into {} names", items.size(), targets.size()));
    for (size_t i = 0; i < targets.size(); ++i) f.set(targets[i], items[i]);
  }

  std::string capture(const Body& body, Frame& f) {
    std::string s;
    exec(body, f, s, false);
    return s;
  }

  Value apply_chain(const std::vector<ExprP>& filters, Value v, Frame& f) {
    for (const ExprP& flt : filters) {
      Value saved = std::move(input_);
      input_ = std::move(v);
      v = eval(*flt, f);
      input_ = std::move(saved);
    }
    return v;
  }

  Flow exec_stmt(const Stmt& s, Frame& f, std::string& out, bool in_loop) {
    c_.line = s.line;
    c_.step();
    switch (s.kind) {
      case SK::Text: emit(out, s.text); return Flow::Normal;
      case SK::Output: {
        Value v = eval(*s.expr, f);
        if (v.is_string()) emit(out, v.as_string());
        else emit(out, v.str());
        return Flow::Normal;
      }
      case SK::If:
        for (const auto& [cond, body] : s.branches) {
          if (eval(*cond, f).truthy()) return exec(body, f, out, in_loop);
          c_.line = s.line;
        }
        return exec(s.else_body, f, out, in_loop);
      case SK::For: return exec_for(s, f, out);
      case SK::Set: assign_targets(f, s.targets, eval(*s.expr, f)); return Flow::Normal;
      case SK::SetNs: {
        Value* ns = f.find(s.targets[0]);
        if (!ns || !ns->is_namespace()) {
          if (!ns && context_.is_dict()) {
            const Value* cv = context_.find(std::string_view(s.targets[0]));
            if (cv && cv->is_namespace()) ns = const_cast<Value*>(cv);
          }
          if (!ns || !ns->is_namespace())
            c_.type_error(fmt::format("cannot assign attribute '{}' on '{}': not a namespace", s.text, s.targets[0]));
        }
        Value v = eval(*s.expr, f);
        auto& attrs = ns->namespace_data()->attrs;
        for (auto& kv : attrs)
          if (kv.first == s.text) {
            kv.second = std::move(v);
            return Flow::Normal;
          }
        attrs.emplace_back(s.text, std::move(v));
        return Flow::Normal;
      }
      case SK::SetBlock: {
        std::string body = capture(s.body, f);
        c_.charge(body.size());
        f.set(s.targets[0], apply_chain(s.filters, Value(std::move(body)), f));
        return Flow::Normal;
      }
      case SK::Macro: {
        auto fn = std::make_shared<FunctionData>();
        fn->kind = FnKind::Macro;
        fn->name = s.text;
        fn->node = &s;
        f.set(s.text, Value::from_function(std::move(fn)));
        return Flow::Normal;
      }
      case SK::CallBlock: {
        auto caller = std::make_shared<FunctionData>();
        caller->kind = FnKind::Caller;
        caller->name = "caller";
        caller->node = &s;
        caller->frame = &f;
        live_callers_.insert(caller.get());
        struct Unregister {
          Renderer& r;
          const FunctionData* p;
          ~Unregister() { r.live_callers_.erase(p); }
        } unreg{*this, caller.get()};
        const Expr& call = *s.expr;
        Value callee = eval(*call.a, f);
        Args args = eval_args(call, f);
        Value r = call_value(callee, args, Value::from_function(caller));
        emit(out, r.str());
        return Flow::Normal;
      }
      case SK::FilterBlock: {
        std::string body = capture(s.body, f);
        c_.charge(body.size());
        Value v = apply_chain(s.filters, Value(std::move(body)), f);
        emit(out, v.str());
        return Flow::Normal;
      }
      case SK::With: {
        Frame child;
        child.parent = &f;
        for (const auto& [n, e] : s.with_vars) child.set(n, eval(*e, f));
        return exec(s.body, child, out, in_loop);
      }
      case SK::Body: return exec(s.body, f, out, in_loop);
      case SK::Break:
      case SK::Continue:
        if (!in_loop) c_.fail(ErrorCode::Corrupt, fmt::format("'{}' outside a for loop", s.kind == SK::Break ? "break" : "continue"));
        return s.kind == SK::Break ? Flow::Break : Flow::Continue;
    }
    return Flow::Normal;
  }

  Flow exec_for(const Stmt& s, Frame& f, std::string& out) {
    Value seq = eval(*s.expr, f);
    std::vector<Value> items = iterate(c_, seq);
    if (s.cond) {
      std::vector<Value> kept;
      for (Value& it : items) {
        c_.step();
        Frame tf;
        tf.parent = &f;
        assign_targets(tf, s.targets, it);
        if (eval(*s.cond, tf).truthy()) kept.push_back(std::move(it));
      }
      items = std::move(kept);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      c_.step();
      c_.charge(16 * sizeof(Value));
      Frame lf;
      lf.parent = &f;
      assign_targets(lf, s.targets, items[static_cast<size_t>(i)]);
      Value loop = Value::dict();
      loop.set(Value("index"), Value(i + 1));
      loop.set(Value("index0"), Value(i));
      loop.set(Value("revindex"), Value(n - i));
      loop.set(Value("revindex0"), Value(n - i - 1));
      loop.set(Value("first"), Value(i == 0));
      loop.set(Value("last"), Value(i == n - 1));
      loop.set(Value("length"), Value(n));
      loop.set(Value("depth"), Value(int64_t{1}));
      loop.set(Value("depth0"), Value(int64_t{0}));
      if (i > 0) loop.set(Value("previtem"), items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.set(Value("nextitem"), items[static_cast<size_t>(i + 1)]);
      auto cyc = std::make_shared<FunctionData>();
      cyc->kind = FnKind::LoopCycle;
      cyc->name = "loop.cycle";
      cyc->self = Value(i);
      loop.set(Value("cycle"), Value::from_function(std::move(cyc)));
      lf.set("loop", std::move(loop));
      Flow fl = exec(s.body, lf, out, true);
      if (fl == Flow::Break) break;
    }
    if (n == 0 && !s.else_body.empty()) {
      Frame ef;
      ef.parent = &f;
      return exec(s.else_body, ef, out, false) == Flow::Normal ? Flow::Normal : Flow::Normal;
    }
    return Flow::Normal;
  }

  // ---- calls --------------------------------------------------------------------------------------
  Args eval_args(const Expr& e, Frame& f) {
    Args a;
    for (const ExprP& x : e.args) a.pos.push_back(eval(*x, f));
    for (const auto& [k, x] : e.kwargs) a.kw.emplace_back(k, eval(*x, f));
    return a;
  }

  Value call_value(const Value& callee, const Args& args, const Value& caller = Value()) {
    if (callee.is_undefined()) c_.type_error(undefined_message(callee));
    if (!callee.is_function()) c_.type_error(fmt::format("'{}' object is not callable", callee.repr()));
    const FunctionData& fn = *callee.function();
    switch (fn.kind) {
      case FnKind::Builtin: return call_global(c_, fn.name, args);
      case FnKind::Method: return call_method(c_, fn, args);
      case FnKind::LoopCycle: {
        if (args.pos.empty()) c_.type_error("no items for cycling given");
        return args.pos[static_cast<size_t>(fn.self.as_int()) % args.pos.size()];
      }
      case FnKind::Macro: return call_macro(*fn.node, args, caller, root_);
      case FnKind::Caller: {
        if (!live_callers_.count(&fn)) c_.type_error("'caller' called after its call block ended");
        return call_macro(*fn.node, args, Value(), *static_cast<Frame*>(fn.frame));
      }
    }
    return Value();
  }

  Value call_macro(const Stmt& m, const Args& args, const Value& caller, Frame& parent) {
    if (++call_depth_ > c_.opts.limits.max_call_depth) {
      --call_depth_;
      c_.fail(ErrorCode::InvalidArgument, fmt::format("macro calls nested deeper than {}", c_.opts.limits.max_call_depth));
    }
    struct Dec {
      int& d;
      ~Dec() { --d; }
    } dec{call_depth_};
    int saved_line = c_.line;
    Frame mf;
    mf.parent = &parent;
    const size_t np = m.params.size();
    const size_t first_default = np - m.defaults.size();
    std::vector<bool> bound(np, false);
    std::vector<Value> varargs;
    for (size_t i = 0; i < args.pos.size(); ++i) {
      if (i < np) {
        mf.set(m.params[i], args.pos[i]);
        bound[i] = true;
      } else {
        varargs.push_back(args.pos[i]);
      }
    }
    Value kwargs = Value::dict();
    for (const auto& [k, v] : args.kw) {
      auto it = std::find(m.params.begin(), m.params.end(), k);
      if (it == m.params.end()) {
        kwargs.set(Value(k), v);
        continue;
      }
      size_t idx = static_cast<size_t>(it - m.params.begin());
      if (bound[idx]) c_.type_error(fmt::format("macro '{}' got multiple values for argument '{}'", m.text, k));
      mf.set(k, v);
      bound[idx] = true;
    }
    for (size_t i = 0; i < np; ++i) {
      if (bound[i]) continue;
      if (i >= first_default) mf.set(m.params[i], eval(*m.defaults[i - first_default], mf));
      else mf.set(m.params[i], Value::undefined(fmt::format("'{}' is undefined", m.params[i])));
    }
    mf.set("varargs", c_.make_tuple(std::move(varargs)));
    mf.set("kwargs", kwargs);
    if (!caller.is_undefined()) mf.set("caller", caller);
    std::string out;
    exec(m.body, mf, out, false);
    c_.line = saved_line;
    c_.charge(out.size());
    return Value(std::move(out));
  }

  // ---- expressions --------------------------------------------------------------------------------
  Value lookup(const std::string& name, Frame& f) {
    if (Value* v = f.find(name)) return *v;
    if (context_.is_dict())
      if (const Value* v = context_.find(std::string_view(name))) return *v;
    if (is_global(name)) {
      auto fn = std::make_shared<FunctionData>();
      fn->kind = FnKind::Builtin;
      fn->name = name;
      return Value::from_function(std::move(fn));
    }
    return Value::undefined(fmt::format("'{}' is undefined", name));
  }

  [[noreturn]] void bad_operands(const std::string& op, const Value& a, const Value& b) {
    if (a.is_undefined()) c_.type_error(undefined_message(a));
    if (b.is_undefined()) c_.type_error(undefined_message(b));
    c_.type_error(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.repr().substr(0, 40),
                              b.repr().substr(0, 40)));
  }

  static bool intlike(const Value& v) { return v.is_int() || v.is_bool(); }
  static int64_t ival(const Value& v) { return v.is_bool() ? (v.as_bool() ? 1 : 0) : v.as_int(); }

  Value repeat(const Value& seq, int64_t n) {
    if (n <= 0) return seq.is_string() ? Value("") : c_.make_list({});
    if (seq.is_string()) {
      const std::string& s = seq.as_string();
      if (!s.empty() && static_cast<uint64_t>(n) > c_.opts.limits.max_output_bytes / s.size()) c_.check_size(SIZE_MAX);
      std::string r;
      r.reserve(s.size() * static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) r += s;
      c_.charge(r.size());
      return Value(std::move(r));
    }
    const auto& items = seq.items();
    if (!items.empty() && static_cast<uint64_t>(n) > c_.opts.limits.max_output_bytes / (items.size() * sizeof(Value)))
      c_.check_size(SIZE_MAX);
    std::vector<Value> r;
    for (int64_t i = 0; i < n; ++i) r.insert(r.end(), items.begin(), items.end());
    return seq.is_tuple() ? c_.make_tuple(std::move(r)) : c_.make_list(std::move(r));
  }

  Value binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "~") {
      std::string r = a.str();
      r += b.str();
      c_.charge(r.size());
      return Value(std::move(r));
    }
    const bool nums = a.is_number() && b.is_number();
    const bool ints = intlike(a) && intlike(b);
    if (op == "+") {
      if (ints) {
        int64_t r;
        if (__builtin_add_overflow(ival(a), ival(b), &r)) c_.type_error("integer overflow");
        return Value(r);
      }
      if (nums) return Value(a.to_double() + b.to_double());
      if (a.is_string() && b.is_string()) {
        c_.charge(a.as_string().size() + b.as_string().size());
        return Value(a.as_string() + b.as_string());
      }
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
        std::vector<Value> r = a.items();
        r.insert(r.end(), b.items().begin(), b.items().end());
        return a.is_tuple() ? c_.make_tuple(std::move(r)) : c_.make_list(std::move(r));
      }
      bad_operands(op, a, b);
    }
    if (op == "-") {
      if (ints) {
        int64_t r;
        if (__builtin_sub_overflow(ival(a), ival(b), &r)) c_.type_error("integer overflow");
        return Value(r);
      }
      if (nums) return Value(a.to_double() - b.to_double());
      bad_operands(op, a, b);
    }
    if (op == "*") {
      if (ints) {
        int64_t r;
        if (__builtin_mul_overflow(ival(a), ival(b), &r)) c_.type_error("integer overflow");
        return Value(r);
      }
      if (nums) return Value(a.to_double() * b.to_double());
      if ((a.is_string() || a.is_list()) && intlike(b)) return repeat(a, ival(b));
      if ((b.is_string() || b.is_list()) && intlike(a)) return repeat(b, ival(a));
      bad_operands(op, a, b);
    }
    if (op == "/") {
      if (!nums) bad_operands(op, a, b);
      if (b.to_double() == 0) c_.type_error("division by zero");
      return Value(a.to_double() / b.to_double());
    }
    if (op == "//" || op == "%") {
      if (op == "%" && a.is_string()) {
        Args fa;
        if (b.is_list()) fa.pos = b.items();
        else fa.pos.push_back(b);
        return apply_filter(c_, "format", a, fa);
      }
      if (!nums) bad_operands(op, a, b);
      if (ints) {
        int64_t x = ival(a), y = ival(b);
        if (y == 0) c_.type_error("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) {
          if (op == "%") return Value(int64_t{0});
          c_.type_error("integer overflow");
        }
        int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) {
          --q;
          r += y;
        }
        return Value(op == "//" ? q : r);
      }
      double x = a.to_double(), y = b.to_double();
      if (y == 0) c_.type_error("float division by zero");
      if (op == "//") return Value(std::floor(x / y));
      double r = std::fmod(x, y);
      if (r != 0 && ((r < 0) != (y < 0))) r += y;
      return Value(r);
    }
    if (op == "**") {
      if (!nums) bad_operands(op, a, b);
      if (ints && ival(b) >= 0) {
        int64_t base = ival(a), e = ival(b), r = 1;
        while (e > 0) {
          if (e & 1)
            if (__builtin_mul_overflow(r, base, &r)) c_.type_error("integer overflow");
          e >>= 1;
          if (e > 0 && __builtin_mul_overflow(base, base, &base)) c_.type_error("integer overflow");
        }
        return Value(r);
      }
      return Value(std::pow(a.to_double(), b.to_double()));
    }
    c_.fail(ErrorCode::Unsupported, fmt::format("unsupported operator '{}'", op));
  }

  bool compare_op(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return a == b;
    if (op == "!=") return !(a == b);
    if (op == "in") return contains(c_, b, a);
    if (op == "notin") return !contains(c_, b, a);
    int r = compare(c_, a, b);
    if (op == "<") return r < 0;
    if (op == "<=") return r <= 0;
    if (op == ">") return r > 0;
    return r >= 0;
  }

  Value eval(const Expr& e, Frame& f) {
    Depth d(*this);
    c_.line = e.line;
    c_.step();
    switch (e.kind) {
      case EK::Const: return e.value;
      case EK::Name: return lookup(e.name, f);
      case EK::Input: return input_;
      case EK::Attr: {
        Value obj = eval(*e.a, f);
        c_.line = e.line;
        return get_attr(c_, obj, e.name);
      }
      case EK::Item: {
        Value obj = eval(*e.a, f);
        Value key = eval(*e.b, f);
        c_.line = e.line;
        return get_item(c_, obj, key);
      }
      case EK::Slice: {
        Value obj = eval(*e.a, f);
        Value a = e.b ? eval(*e.b, f) : Value();
        Value b = e.c ? eval(*e.c, f) : Value();
        Value s = e.args[0] ? eval(*e.args[0], f) : Value();
        c_.line = e.line;
        return slice(c_, obj, a, b, s);
      }
      case EK::Call: {
        Value callee = eval(*e.a, f);
        Args args = eval_args(e, f);
        c_.line = e.line;
        return call_value(callee, args);
      }
      case EK::Filter: {
        Value in = e.a ? eval(*e.a, f) : input_;
        Args args = eval_args(e, f);
        c_.line = e.line;
        return apply_filter(c_, e.name, in, args);
      }
      case EK::Test: {
        Value in = eval(*e.a, f);
        Args args = eval_args(e, f);
        c_.line = e.line;
        return Value(apply_test(c_, e.name, in, args));
      }
      case EK::Neg:
      case EK::Pos: {
        Value v = eval(*e.a, f);
        c_.line = e.line;
        if (v.is_undefined()) c_.type_error(undefined_message(v));
        if (!v.is_number()) c_.type_error(fmt::format("bad operand type for unary {}: '{}'", e.kind == EK::Neg ? '-' : '+', v.repr().substr(0, 40)));
        if (e.kind == EK::Pos) return v.is_bool() ? Value(ival(v)) : v;
        if (v.is_float()) return Value(-v.as_float());
        if (ival(v) == INT64_MIN) c_.type_error("integer overflow");
        return Value(-ival(v));
      }
      case EK::Not: return Value(!eval(*e.a, f).truthy());
      case EK::And: {
        Value a = eval(*e.a, f);
        return a.truthy() ? eval(*e.b, f) : a;
      }
      case EK::Or: {
        Value a = eval(*e.a, f);
        return a.truthy() ? a : eval(*e.b, f);
      }
      case EK::Binary: {
        Value a = eval(*e.a, f);
        Value b = eval(*e.b, f);
        c_.line = e.line;
        return binary(e.name, a, b);
      }
      case EK::Compare: {
        Value left = eval(*e.a, f);
        for (size_t i = 0; i < e.args.size(); ++i) {
          Value right = eval(*e.args[i], f);
          c_.line = e.line;
          if (!compare_op(e.ops[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case EK::Cond: {
        if (eval(*e.a, f).truthy()) return eval(*e.b, f);
        return e.c ? eval(*e.c, f) : Value::undefined("the conditional expression had no else branch");
      }
      case EK::List: {
        std::vector<Value> items;
        items.reserve(e.args.size());
        for (const ExprP& x : e.args) items.push_back(eval(*x, f));
        return e.tuple ? c_.make_tuple(std::move(items)) : c_.make_list(std::move(items));
      }
      case EK::Dict: {
        Value d = Value::dict();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = eval(*e.args[i], f);
          Value v = eval(*e.args[i + 1], f);
          if (k.is_list() || k.is_dict()) c_.type_error("unhashable type used as a dict key");
          d.set(std::move(k), std::move(v));
        }
        c_.charge(d.size() * 2 * sizeof(Value));
        if (d.depth() > c_.opts.limits.max_value_depth)
          c_.type_error(fmt::format("lists and dicts nested deeper than {}", c_.opts.limits.max_value_depth));
        return d;
      }
    }
    return Value();
  }
};

}  // namespace
}  // namespace detail

Template Template::compile(std::string_view source, std::string_view name, const RenderLimits& limits) {
  std::string n(name);
  Template t;
  t.prog_ = detail::parse(detail::lex(source, n), n, limits);
  return t;
}

std::string Template::render(const Value& context, const RenderOptions& options) const {
  if (!context.is_dict()) throw Error(ErrorCode::InvalidArgument, prog_->name + ": the render context must be a dict");
  detail::Renderer r(*prog_, context, options);
  return r.run();
}

const std::string& Template::name() const { return prog_->name; }

std::string render(std::string_view template_source, const Value& context, const RenderOptions& options) {
  return Template::compile(template_source, "chat template", options.limits).render(context, options);
}

}  // namespace moe::chat
