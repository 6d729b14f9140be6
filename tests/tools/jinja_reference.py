#!/usr/bin/env python3
"""Reference renderer for chat templates: Python jinja2 configured the way Hugging Face transformers'
apply_chat_template configures it (ImmutableSandboxedEnvironment, trim_blocks=True,
lstrip_blocks=True, the loopcontrols extension, tojson as json.dumps(ensure_ascii=False, indent,
separators, sort_keys), and the raise_exception / strftime_now globals).

Usage: jinja_reference.py CASES.json OUT.json
CASES.json is a list of {"template": path, "context": {...}, "now": epoch seconds (optional)}.
OUT.json receives a list of {"ok": true, "text": rendered} or {"ok": false, "error": message},
one per case. Exit status 3 when jinja2 is not installed, 0 otherwise.
"""
import json
import sys
from datetime import datetime

try:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:  # pragma: no cover
    sys.stderr.write("jinja2 is not installed\n")
    sys.exit(3)


def make_env(now):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        t = datetime.fromtimestamp(now) if now is not None else datetime.now()
        return t.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    cache = {}
    for case in cases:
        try:
            if "source" in case:
                source = case["source"]
            else:
                if case["template"] not in cache:
                    with open(case["template"], encoding="utf-8") as tf:
                        cache[case["template"]] = tf.read()
                source = cache[case["template"]]
            env = make_env(case.get("now"))
            text = env.from_string(source).render(**case["context"])
            results.append({"ok": True, "text": text})
        except Exception as e:  # noqa: BLE001 - every failure is reported to the caller
            results.append({"ok": False, "error": f"{type(e).__name__}: {e}"})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
