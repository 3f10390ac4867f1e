"""The op schema: declared with each engine op, exported through the C ABI
(te_op_schema), checked on every call, and the single source of the op reference
(docs/engine-ops.md) and of the op and attribute names the Python backend uses.
"""

import ast
import importlib.util
import pathlib

import numpy as np
import pytest

C = pytest.importorskip("_swiftkeras")

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = C.op_schemas()


def _t(a):
    return C.from_buffer(a, a.dtype.name)


def _x(*shape, dtype="float32"):
    return _t(np.arange(np.prod(shape, dtype=int), dtype=dtype).reshape(shape))


# ---------------------------------------------------------------------------
# The schema itself
# ---------------------------------------------------------------------------


def test_every_registered_op_has_a_schema():
    names = C.op_names()
    assert len(names) == len(set(names))
    assert list(SCHEMAS) == names
    for name, s in SCHEMAS.items():
        assert s["doc"], name
        assert s["outputs"], name
        assert s["grad"] in ("yes", "no", "zero", "missing") or (
            isinstance(s["grad"], list) and set(s["grad"]) <= {i["name"] for i in s["inputs"]}
        ), name
        for a in s["attrs"]:
            assert a["type"] in ("int", "float", "bool", "string", "ints", "floats", "dtype"), (name, a)
            assert a["required"] == ("default" not in a and "absent" not in a), (name, a)
            if "choices" in a and "default" in a:
                assert a["default"] in a["choices"], (name, a)
        assert len({a["name"] for a in s["attrs"]}) == len(s["attrs"]), name
        # Only the last input may be variadic; optional inputs only trail.
        kinds = [(i["variadic"], i["optional"]) for i in s["inputs"]]
        assert all(not v for v, _ in kinds[:-1]), name
        seen_optional = False
        for _, opt in kinds:
            assert opt or not seen_optional, name
            seen_optional |= opt


def test_complex_flag_matches_input_dtypes():
    for name, s in SCHEMAS.items():
        takes = any({"complex64", "complex128"} & set(i["dtypes"]) for i in s["inputs"])
        assert s["complex"] == takes or not s["inputs"], name


def test_engine_ops_doc_is_generated_and_fresh():
    spec = importlib.util.spec_from_file_location("gen_doc", ROOT / "scripts" / "gen_engine_ops_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    doc = (ROOT / "docs" / "engine-ops.md").read_text(encoding="utf-8")
    assert doc == gen.render(), "docs/engine-ops.md is stale: run python scripts/gen_engine_ops_doc.py"
    for name in SCHEMAS:
        assert f"| `{name}` |" in doc


# ---------------------------------------------------------------------------
# Python call sites name ops and attributes the schema declares
# ---------------------------------------------------------------------------


def _call_sites():
    """(file, line, op name, attribute names or None) for every engine call in the
    backend whose op name is a string literal."""
    sites = []
    for path in sorted((ROOT / "python" / "keras_swift").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if fname in ("op", "_random"):
                # op(name, *inputs, **attrs) (_C.op, the backend's op, or random's
                # _random over it): keyword names are attributes.
                attrs = [k.arg for k in node.keywords if k.arg is not None]
                sites.append((where, first.value, attrs))
            elif fname == "engine_op":
                # engine_op(name, constant_time=..., param="attribute").
                attrs = [k.value.value for k in node.keywords
                         if k.arg not in (None, "constant_time") and isinstance(k.value, ast.Constant)]
                sites.append((where, first.value, attrs))
    return sites


def test_python_call_sites_match_the_schema():
    sites = _call_sites()
    assert len(sites) > 100  # the scan sees the backend's calls
    bad = []
    for where, name, attrs in sites:
        if name not in SCHEMAS:
            bad.append(f"{where}: unknown op {name!r}")
            continue
        declared = {a["name"] for a in SCHEMAS[name]["attrs"]}
        for a in attrs or ():
            if a not in declared:
                bad.append(f"{where}: {name} has no attribute {a!r}")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------
# Every call is checked against the schema
# ---------------------------------------------------------------------------


def test_unknown_attribute_is_rejected_naming_the_op():
    with pytest.raises(ValueError, match=r"sum has no attribute 'axis' \(its attributes: axes, keepdims\)"):
        C.op("sum", _x(2, 3), axis=0)


def test_attribute_of_the_wrong_type_is_a_type_error():
    # A string where an int list is expected used to be ignored (sum of everything).
    with pytest.raises(TypeError, match="sum: attribute 'axes' must be ints, got string"):
        C.op("sum", _x(2, 3), axes="zero")
    with pytest.raises(TypeError, match="attribute 'num_classes' must be int, got float"):
        C.op("one_hot", _x(3, dtype="int32"), num_classes=2.5)
    with pytest.raises(TypeError, match="unknown dtype 'float33'"):
        C.op("cast", _x(2), dtype="float33")


def test_string_attributes_are_checked_against_their_choices():
    with pytest.raises(ValueError, match="padding' must be one of valid, same, got 'full'"):
        C.op("max_pool", _x(1, 4, 4, 1), pool_size=[2, 2], padding="full")


def test_missing_required_attribute():
    with pytest.raises(ValueError, match="reshape needs attribute"):
        C.op("reshape", _x(2, 3))


def test_input_count_is_checked():
    with pytest.raises(ValueError, match=r"add takes 2 input\(s\) \(a, b\), got 1"):
        C.op("add", _x(2))
    with pytest.raises(ValueError, match="lstm takes 5 to 6 input"):
        C.op("lstm", *[_x(1, 2, 3)] * 4)
    with pytest.raises(ValueError, match="concatenate takes at least 1 input"):
        C.op("concatenate", axis=0)


def test_input_dtypes_are_checked():
    z = _t(np.ones(3, np.complex64))
    with pytest.raises(TypeError, match="tanh does not support complex inputs"):
        C.op("tanh", z)
    with pytest.raises(TypeError, match="bitwise_and: input 'a' does not support float32"):
        C.op("bitwise_and", _x(3), _x(3, dtype="int32"))


def test_defaults_come_from_the_schema():
    x = _t(np.array([-1.0, 2.0], np.float32))
    d = {a["name"]: a.get("default") for a in SCHEMAS["leaky_relu"]["attrs"]}
    np.testing.assert_allclose(np.asarray(C.op("leaky_relu", x)), [-d["negative_slope"], 2.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(C.op("sum", _x(2, 3))), np.float32(15))
