"""Writes docs/engine-ops.md from the engine's op schema (te_op_schema).

    python scripts/gen_engine_ops_doc.py          # rewrite the file
    python scripts/gen_engine_ops_doc.py --check  # exit 1 when the file is stale

The schema is declared with each op in Sources/TensorEngine/Ops/ and checked on every
call, so this page cannot drift from what the engine accepts: the Python tests run
the check (python/tests/test_schema.py).
"""

import argparse
import os
import sys

import _swiftkeras

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "engine-ops.md")

HEADER = """\
# Engine op registry

Generated from the op schema by `python scripts/gen_engine_ops_doc.py`; do not edit.
Each op is declared once in `Sources/TensorEngine/Ops/` (its schema, forward, shape and
dtype rule and VJP side by side) and callable by name from Swift (`OpRegistry`), from C
(`te_op_lookup` + `te_op_call`; `te_op_schema` gives the schema below as JSON) and from
Python (`_swiftkeras.op(name, *inputs, **attrs)`: the output, or the tuple of an op with
several; `_swiftkeras.op_schemas()`).

Every call is checked against the schema before the kernel runs: the number of inputs
and their dtypes, and each attribute's name, type, value (where it lists choices) and
presence. A mistake is a `ValueError` or `TypeError` that names the op, never a
silently coerced value.

Conventions:

- Binary ops broadcast numpy-style. Inputs of different dtypes are promoted with Keras's
  lattice (`DType.result(_:_:)`, the same rule as `keras.backend.result_type` for concrete
  dtypes). Comparison and logical ops return `bool`. Integer arithmetic wraps; integer
  division or modulo by zero gives 0.
- float16 / bfloat16 / float8 (`float8_e4m3fn`, `float8_e5m2`) inputs are computed in
  float32 and rounded back.
- Axes may be negative. An out-of-range axis is a ValueError, an out-of-range index an
  IndexError.
- Attributes: `name: type` is required; `= v` is the default; `(absent: ...)` says what
  leaving it out does; `a|b` lists the allowed strings. An int list also takes one int.
- Input dtypes: *real* is every dtype but complex64/complex128; *all* includes them.
- Gradient: *yes* (every float input), the inputs it flows to, *zero* (piecewise constant),
  – (not differentiable) or *not yet*: a gradient requested through it raises
  `NotImplementedError` (so does one through an output that records no VJP).
- Random ops are pure functions of `seed` (Philox-4x32-10 keyed by `seed[0]`, counter
  `seed[1]`): the same seed gives the same numbers on every platform.

| op | inputs | attributes | outputs | gradient | what it computes |
|---|---|---|---|---|---|
"""

ALL = list(_swiftkeras.DTYPES)
COMPLEX = {"complex64", "complex128"}
NAMED = {
    frozenset(ALL): "all",
    frozenset(ALL) - COMPLEX: "real",
    frozenset(ALL) - COMPLEX - {"bool"}: "numeric",
    frozenset(d for d in ALL if d.startswith("int") or d.startswith("uint")) | {"bool"}: "int, bool",
    frozenset(d for d in ALL if d.startswith("int") or d.startswith("uint")): "int",
}


def dtypes(names):
    return NAMED.get(frozenset(names)) or ", ".join(names)


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    return str(v)


def attr(a):
    t = "|".join(a["choices"]) if "choices" in a else a["type"]
    s = f"`{a['name']}: {t}"
    if "default" in a:
        s += f" = {value(a['default'])}`"
    elif "absent" in a:
        s += f"` (absent: {a['absent']})"
    else:
        s += "`"
    return s


def inputs(schema):
    if not schema["inputs"]:
        return "–"
    parts = []
    for i in schema["inputs"]:
        name = i["name"] + ("…" if i["variadic"] else "?" if i["optional"] else "")
        parts.append(f"{name} ({dtypes(i['dtypes'])})")
    return ", ".join(parts)


def grad(g):
    if isinstance(g, list):
        return ", ".join(g)
    return {"yes": "yes", "no": "–", "zero": "zero", "missing": "not yet (raises)"}[g]


def render():
    rows = []
    for s in _swiftkeras.op_schemas().values():
        cells = [
            f"`{s['name']}`",
            inputs(s),
            ", ".join(attr(a) for a in s["attrs"]) or "–",
            ", ".join(s["outputs"]),
            grad(s["grad"]),
            s["doc"].replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |\n")
    return HEADER + "".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/engine-ops.md is stale")
    args = ap.parse_args()
    text = render()
    if args.check:
        with open(DOC, encoding="utf-8") as f:
            if f.read() != text:
                print("docs/engine-ops.md is stale: run python scripts/gen_engine_ops_doc.py", file=sys.stderr)
                return 1
        return 0
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
