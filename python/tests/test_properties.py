"""Property-based tests driven by the op schema (issue 20, item 5).

Every op that ``_swiftkeras.op_schemas()`` declares is covered without listing it here:

1. ``test_schema_sweep``: random inputs (ranks 0-4, dims 0-3, accepted and rejected
   dtypes, edge values) and random attributes of the declared types (and wrong types,
   huge and negative ints, empty lists, strings outside the choices) through the C ABI.
   The call returns tensors or raises ValueError/TypeError/IndexError/
   NotImplementedError; a crash kills pytest and so fails the run.
2. ``test_unary_numerics`` / ``test_binary_numerics`` / ``test_reduction_numerics``:
   elementwise ops and reductions with a numpy twin against numpy, edge values
   included (``NO_NUMPY_TWIN`` lists the elementwise ops left out and why).
3. ``test_gradient_matches_finite_differences``: every op whose schema gradient is
   "yes" or a list of inputs, float64, central differences; ``missing`` ops raise.

Profiles: ``ci`` (default: few examples, derandomized, no deadline) and ``long``
(``KERAS_SWIFT_HYPOTHESIS_PROFILE=long``). The number of cases run per test is
counted in ``CASES`` and reported at the end of the session by conftest.py.
"""

import collections
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

C = pytest.importorskip("_swiftkeras")
hypothesis = pytest.importorskip("hypothesis")
ml_dtypes = pytest.importorskip("ml_dtypes")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras_swift.src.dtypes import BITS_DTYPES  # noqa: E402
from keras_swift.src.dtypes import NUMPY_DTYPES  # noqa: E402

_COMMON = dict(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
settings.register_profile("ci", max_examples=6, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=400, **_COMMON)
settings.load_profile(os.environ.get("KERAS_SWIFT_HYPOTHESIS_PROFILE", "ci"))

SCHEMAS = C.op_schemas()
DTYPES = list(C.DTYPES)
ENGINE_ERRORS = (ValueError, TypeError, IndexError, NotImplementedError)


def outputs(name, inputs, attrs=None):
    """Every output of an op, as a tuple (op() returns a one-output op's Tensor)."""
    out = C.op(name, *inputs, **(attrs or {}))
    return out if isinstance(out, tuple) else (out,)

# Cases run, by test; conftest.py prints the totals (and writes them to
# $KERAS_SWIFT_HYPOTHESIS_COUNTS as JSON when set).
CASES = collections.Counter()

# The dtypes numpy knows only through ml_dtypes (raw bits across the buffer protocol).
BITS = BITS_DTYPES
INTS = [d for d in DTYPES if d.startswith(("int", "uint"))]
FLOATS = [d for d in DTYPES if NUMPY_DTYPES[d].kind == "f" or d in BITS]
COMPLEX = [d for d in DTYPES if NUMPY_DTYPES[d].kind == "c"]


def np_dtype(name):
    return NUMPY_DTYPES[name] if name in NUMPY_DTYPES else np.dtype(name)


def to_engine(a, dtype=None):
    a = np.array(a, order="C")  # ascontiguousarray would make a 0-d array 1-d
    return C.from_buffer(a, dtype or a.dtype.name)


def to_numpy(t):
    want = np_dtype(t.dtype)
    if t.dtype in BITS:
        a = np.frombuffer(t, dtype=want)
    else:
        a = np.asarray(memoryview(t))
    return np.array(a.reshape(t.shape))


def edge_values(dtype):
    """Values that break numerics: limits, zeros of both signs, nan, inf, tiny."""
    dt = np_dtype(dtype)
    if dtype == "bool":
        return [False, True]
    if dtype in INTS:
        info = np.iinfo(dt)
        return sorted({int(info.min), int(info.max), 0, 1, 2, 7, int(info.min) + 1, int(info.max) - 1}
                      | ({-1, -2, -7} if info.min < 0 else set()))
    info = ml_dtypes.finfo(dt) if dtype in BITS else np.finfo(dt)
    real = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, math.pi, math.nan, math.inf, -math.inf,
            float(info.max), -float(info.max), float(info.tiny), -float(info.tiny),
            float(info.smallest_subnormal), float(info.max) / 2]
    if dtype in COMPLEX:
        return [complex(r, i) for r in real[:10] for i in (0.0, -1.5, math.nan, math.inf)]
    return real


def array_of(draw, dtype, shape, values):
    n = int(np.prod(shape, dtype=np.int64))
    vals = draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
    with np.errstate(all="ignore"):
        return np.array(vals, dtype=object).astype(np_dtype(dtype)).reshape(shape)


shapes = st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple)


# ---------------------------------------------------------------------------
# 1. The sweep: every op, random inputs and attributes, never a crash
# ---------------------------------------------------------------------------

HUGE = [2**62, -(2**62), 2**63 - 1, -(2**63), 2**40, 2**64, -(2**64)]
SMALL_INT = st.integers(-3, 4)
WRONG = st.sampled_from(["zero", 1.5, None, [1, "a"], [[1]], b"x", (), {"a": 1}, True, object()])
FLOAT_VALS = st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 2.0, 3.0, -2.5, 1e-3,
                              math.nan, math.inf, -math.inf, 1e300, -1e300, 1e-300])


def attr_value(spec):
    t = spec["type"]
    if t == "int":
        good = SMALL_INT
        odd = st.one_of(st.sampled_from(HUGE), WRONG, FLOAT_VALS)
    elif t == "ints":
        good = st.one_of(st.lists(SMALL_INT, max_size=4), SMALL_INT)
        odd = st.one_of(st.lists(st.one_of(SMALL_INT, st.sampled_from(HUGE)), max_size=4),
                        st.sampled_from(HUGE), WRONG, st.just([]))
    elif t == "float":
        good = FLOAT_VALS
        odd = st.one_of(WRONG, st.sampled_from(HUGE))
    elif t == "floats":
        good = st.lists(FLOAT_VALS, max_size=4)
        odd = st.one_of(WRONG, FLOAT_VALS, st.lists(st.sampled_from(HUGE), max_size=3))
    elif t == "bool":
        good = st.booleans()
        odd = st.one_of(WRONG, st.sampled_from([0, 1, 2, -1]))
    elif t == "dtype":
        good = st.sampled_from(DTYPES)
        odd = st.one_of(st.sampled_from(["float128", "int4", "", "Float32", "object"]), WRONG)
    elif t == "string":
        good = st.sampled_from(spec["choices"]) if spec.get("choices") else st.text(max_size=6)
        odd = st.one_of(st.text(max_size=6), WRONG, st.sampled_from(["", "SAME", "valid ", "\x00"]))
    else:  # a new attribute type: anything goes
        good = odd = WRONG
    return st.one_of(good, good, good, odd)


@st.composite
def op_call(draw, schema):
    """(inputs, attrs) for one call of the op `schema` describes."""
    base = draw(shapes)
    inputs = []
    for spec in schema["inputs"]:
        if spec["optional"] and draw(st.booleans()):
            break  # optional inputs only trail: leaving one out leaves out the rest
        count = draw(st.integers(0, 3)) if spec["variadic"] else 1
        for _ in range(count):
            accepted = spec["dtypes"] or DTYPES
            dtype = draw(st.one_of(st.sampled_from(accepted), st.sampled_from(accepted),
                                   st.sampled_from(accepted), st.sampled_from(DTYPES)))
            kind = draw(st.integers(0, 4))
            shape = base if kind <= 2 else base[draw(st.integers(0, len(base))):] if kind == 3 else draw(shapes)
            small = [v for v in edge_values(dtype) if not isinstance(v, float) or abs(v) < 8] or [0]
            values = draw(st.sampled_from([small, small, edge_values(dtype)]))
            inputs.append(array_of(draw, dtype, shape, values))
    attrs = {}
    for spec in schema["attrs"]:
        if draw(st.integers(0, 9)) < (9 if spec["required"] else 5):
            attrs[spec["name"]] = draw(attr_value(spec))
    if draw(st.integers(0, 19)) == 0:
        attrs["no_such_attribute"] = draw(st.one_of(SMALL_INT, WRONG))
    return inputs, attrs


# Ops that trapped on a rank-0 input with axis 0 (axis -1 and 1 raised as they should).
SCALAR_AXIS0_CRASH = ("sum", "mean", "prod", "max", "min", "any", "all", "moments", "argmax", "argmin",
                      "unique", "resize", "scale_and_translate", "separable_filter", "gaussian_blur")
_SCALAR_AXIS0_ATTRS = {
    "resize": {"sizes": [2], "method": "nearest"},
    "scale_and_translate": {"sizes": [2], "scales": [1.0], "translations": [0.0], "method": "linear"},
    "separable_filter": {"sizes": [1], "taps": [1.0]},
    "gaussian_blur": {"sizes": [1], "sigmas": [1.0]},
}


def _sweep_call(name, inputs, attrs):
    log = os.environ.get("KERAS_SWIFT_SWEEP_LOG")
    if log:  # the last line names the call that crashed the process
        with open(log, "a") as f:
            f.write(f"{name} {[(a.dtype.name, a.shape, a.ravel().tolist()) for a in inputs]} {attrs!r}\n")
    ts = [to_engine(a) for a in inputs]
    try:
        outs = outputs(name, ts, attrs)
    except ENGINE_ERRORS:
        return None
    assert isinstance(outs, tuple) and outs, name
    for o in outs:
        assert isinstance(o, C.Tensor)
        a = to_numpy(o)  # shape, dtype and storage agree
        assert a.shape == tuple(o.shape) and a.size == o.size
    return outs


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_schema_sweep(name):
    @given(op_call(SCHEMAS[name]))
    def run(call):
        CASES["sweep"] += 1
        _sweep_call(name, *call)

    run()


def test_sweep_reaches_the_kernels():
    # The sweep must not only exercise argument checks: a plain valid call of the
    # most common op kinds succeeds through the same helper.
    x = np.arange(6, dtype="float32").reshape(2, 3)
    assert _sweep_call("add", [x, x], {}) is not None
    assert _sweep_call("sum", [x], {"axes": [1]}) is not None
    assert _sweep_call("reshape", [x], {"shape": [3, 2]}) is not None


# ---------------------------------------------------------------------------
# 2. Numerics against numpy at the edges
# ---------------------------------------------------------------------------

def _rsqrt(x):
    return 1 / np.sqrt(x)


def _special(fn):
    special = pytest.importorskip("scipy.special")
    return lambda x: getattr(special, fn)(x)


UNARY = {
    "negative": np.negative, "abs": np.abs, "sign": np.sign, "square": np.square,
    "floor": np.floor, "ceil": np.ceil, "round": np.round, "exp": np.exp, "expm1": np.expm1,
    "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "rsqrt": _rsqrt,
    "reciprocal": np.reciprocal, "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh,
    "sinh": np.sinh, "cosh": np.cosh, "arcsin": np.arcsin, "arccos": np.arccos,
    "arctan": np.arctan, "logical_not": np.logical_not, "isnan": np.isnan, "isinf": np.isinf,
    "isfinite": np.isfinite, "real": np.real, "imag": np.imag, "conj": np.conj,
    "angle": np.angle, "bitwise_invert": np.invert, "i0": np.i0,
    "erf": _special("erf"), "erfinv": _special("erfinv"), "i1": _special("i1"),
    "sigmoid": _special("expit"),
}
def _divide(a, b):
    """a / b, and for integers the engine's rule: truncated towards zero, wrapping,
    0 where b is 0 (the Keras backend casts integers to float before dividing)."""
    if a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        return np.true_divide(a, b)
    a, b = np.broadcast_arrays(a, b)
    safe = np.where(b == 0, 1, b).astype(b.dtype)
    q = np.floor_divide(a, safe)
    r = a - q * safe
    q = np.where((r != 0) & ((a < 0) != (safe < 0)), q + 1, q).astype(q.dtype)
    return np.where(b == 0, 0, q).astype(q.dtype)


BINARY = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": _divide,
    "power": np.power, "maximum": np.maximum, "minimum": np.minimum,
    "floor_divide": np.floor_divide, "mod": np.mod, "arctan2": np.arctan2,
    "nextafter": np.nextafter, "equal": np.equal, "not_equal": np.not_equal, "less": np.less,
    "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or, "logical_xor": np.logical_xor,
    "bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor,
    "left_shift": np.left_shift, "right_shift": np.right_shift, "gcd": np.gcd, "lcm": np.lcm,
}
REDUCTIONS = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min,
              "any": np.any, "all": np.all}
# Elementwise ops of the schema without a numpy twin (activations whose definition
# is Keras's, not numpy's; cast/stop_gradient are identity-like plumbing).
NO_NUMPY_TWIN = {"relu", "relu6", "softplus", "softsign", "silu", "selu", "gelu", "elu",
                 "leaky_relu", "cast", "stop_gradient", "clip", "where", "complex", "bitcast"}

TOL = {"float64": 1e-12, "float32": 4e-6, "float16": 2e-3, "bfloat16": 1.6e-2,
       "float8_e4m3fn": 0.13, "float8_e5m2": 0.26, "complex64": 4e-6, "complex128": 1e-12}


def _elementwise(schema):
    ins = schema["inputs"]
    return not schema["attrs"] and len(schema["outputs"]) == 1 and all(
        not i["variadic"] and not i["optional"] for i in ins)


def test_every_elementwise_op_has_a_twin_or_is_listed():
    # New unary/binary ops without attributes must be mapped to numpy or listed.
    for name, s in SCHEMAS.items():
        if _elementwise(s) and len(s["inputs"]) in (1, 2) and s["doc"] and name not in (
                "matmul", "inv", "det", "cholesky", "solve", "nonzero", "eig", "eigh", "gather_nd",
                "fft", "lu_factor", "slogdet"):
            assert name in UNARY or name in BINARY or name in NO_NUMPY_TWIN, name


def _reference(fn, arrays, out_dtype):
    """numpy's value for the engine's output dtype: computed in the input dtype when
    both are integer/bool (wrapping), else in float64/complex128 and rounded."""
    out = np_dtype(out_dtype)
    # nextafter steps in its own dtype: a wider one takes a smaller step.
    exact = (all(a.dtype.kind in "biu" for a in arrays) and out.kind in "biu") or (
        fn is np.nextafter and all(a.dtype == out for a in arrays))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "mean of empty slice"
        if not exact:
            # The engine computes integer inputs of a float op in the output dtype
            # (sin(int32) is sin of the float32 nearest it).
            arrays = [a.astype(out) if a.dtype.kind in "biu" and out.kind == "f" and out_dtype not in BITS
                      else a for a in arrays]
            wide = np.complex128 if any(a.dtype.kind == "c" for a in arrays) else np.float64
            arrays = [a.astype(wide) for a in arrays]
        r = np.asarray(fn(*arrays))
        if out.kind in "fV" or out_dtype in BITS:
            r = r.real if r.dtype.kind == "c" else r
        return r.astype(out)


def _known_wrong(name, arrays, attrs=None):
    """Draws on which the engine disagrees with numpy by choice (the reason at each);
    the properties step around them."""
    x = arrays[0]
    if name == "power" and x.dtype.kind == "f":
        with np.errstate(all="ignore"):
            b = np.broadcast_to(arrays[1], np.broadcast_shapes(x.shape, arrays[1].shape))
            xb = np.broadcast_to(x, b.shape)
            if ((xb == -np.inf) & (b.astype(np.float64) % 1 != 0)).any():
                return True  # numpy: nan in float32/64, inf in float16; C99 and the engine: inf
    return False


def _assert_matches(got, want, dtype, context):
    assert got.shape == want.shape, context
    if got.dtype.kind in "biu" or dtype == "bool":
        np.testing.assert_array_equal(got, want, err_msg=str(context))
        return
    wide = np.complex128 if got.dtype.kind == "c" else np.float64
    g, w = got.astype(wide), want.astype(wide)
    rtol = TOL.get(dtype, 1e-6)
    base = dtype if dtype not in COMPLEX else ("float32" if dtype == "complex64" else "float64")
    info = ml_dtypes.finfo(np_dtype(base)) if base in BITS else np.finfo(np_dtype(base))
    # Subnormal results may flush to zero.
    np.testing.assert_allclose(g, w, rtol=rtol, atol=float(info.tiny), equal_nan=True,
                               err_msg=str(context))


@st.composite
def broadcast_pair(draw):
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    other = list(shape[draw(st.integers(0, len(shape))):])
    other = [1 if draw(st.booleans()) else d for d in other]
    if draw(st.booleans()):
        shape, other = other, shape
    return tuple(shape), tuple(other)


# numpy defines no bool arithmetic for these; the engine's bool result (a bool for
# divide) is Keras's business and is checked in test_ops_numpy.
NO_BOOL = {"negative", "sign", "subtract", "gcd", "lcm", "divide"}


def _numeric_dtypes(name):
    return [d for d in SCHEMAS[name]["inputs"][0]["dtypes"] if d != "bool" or name not in NO_BOOL]


@pytest.mark.parametrize("name", sorted(n for n in UNARY if n in SCHEMAS))
def test_unary_numerics(name):
    fn = UNARY[name]

    @given(st.data())
    def run(data):
        CASES["numerics"] += 1
        dtype = data.draw(st.sampled_from(_numeric_dtypes(name)))
        shape = data.draw(st.lists(st.integers(0, 3), max_size=3).map(tuple))
        x = array_of(data.draw, dtype, shape, edge_values(dtype))
        hypothesis.assume(not _known_wrong(name, [x]))
        try:
            got = outputs(name, [to_engine(x)])[0]
        except ENGINE_ERRORS as e:
            pytest.fail(f"{name}({dtype}) raised {e!r} on accepted input")
        _assert_matches(to_numpy(got), _reference(fn, [x], got.dtype), got.dtype, (name, x))

    run()


@pytest.mark.parametrize("name", sorted(n for n in BINARY if n in SCHEMAS))
def test_binary_numerics(name):
    fn = BINARY[name]

    @given(st.data())
    def run(data):
        CASES["numerics"] += 1
        # One dtype for both: promotion is Keras's lattice, not numpy's.
        dtype = data.draw(st.sampled_from(_numeric_dtypes(name)))
        sa, sb = data.draw(broadcast_pair())
        a = array_of(data.draw, dtype, sa, edge_values(dtype))
        b = array_of(data.draw, dtype, sb, edge_values(dtype))
        if name == "power" and dtype in INTS and (b < 0).any():
            return  # numpy refuses integers to negative integer powers
        if name in ("left_shift", "right_shift"):
            b = b % (8 * b.dtype.itemsize)  # numpy's shift past the width is platform-defined
        hypothesis.assume(not _known_wrong(name, [a, b]))
        try:
            got = outputs(name, [to_engine(a), to_engine(b)])[0]
        except ENGINE_ERRORS as e:
            pytest.fail(f"{name}({dtype}) raised {e!r} on accepted input")
        _assert_matches(to_numpy(got), _reference(fn, [a, b], got.dtype), got.dtype, (name, a, b))

    run()


@pytest.mark.parametrize("name", sorted(n for n in REDUCTIONS if n in SCHEMAS))
def test_reduction_numerics(name):
    fn = REDUCTIONS[name]

    @given(st.data())
    def run(data):
        CASES["numerics"] += 1
        dtype = data.draw(st.sampled_from(_numeric_dtypes(name)))
        shape = data.draw(st.lists(st.integers(0, 3), max_size=3).map(tuple))
        # Limits are left out of sums and products: their overflow depends on the
        # summation order, which neither side promises.
        vals = edge_values(dtype)
        if name in ("sum", "mean", "prod") and dtype not in ("bool",):
            vals = [v for v in vals if not isinstance(v, (int, float, complex)) or abs(v) <= 8
                    or (isinstance(v, float) and not math.isfinite(v))]
        x = array_of(data.draw, dtype, shape, vals)
        axes = data.draw(st.one_of(st.none(), st.lists(st.integers(0, max(len(shape) - 1, 0)),
                                                        unique=True, max_size=len(shape))))
        keepdims = data.draw(st.booleans())
        if name in ("max", "min") and x.size and axes is None and 0 in shape:
            return
        attrs = {"keepdims": keepdims}
        if axes is not None:
            attrs["axes"] = axes
        ax = None if axes is None else tuple(axes)
        empty = x.size == 0 if ax is None else any(shape[i] == 0 for i in ax)
        hypothesis.assume(not _known_wrong(name, [x], attrs))
        try:
            got = outputs(name, [to_engine(x)], attrs)[0]
        except ENGINE_ERRORS as e:
            if name in ("max", "min") and empty:
                return  # numpy raises too: a reduction with no identity over nothing
            pytest.fail(f"{name}({dtype}, {attrs}) raised {e!r}")
        assert not (name in ("max", "min") and empty), f"{name} over an empty axis returned"
        want = _reference(lambda a: fn(a, axis=ax, keepdims=keepdims), [x], got.dtype)
        _assert_matches(to_numpy(got), want, got.dtype, (name, x, attrs))

    run()


# ---------------------------------------------------------------------------
# 3. Gradients against central finite differences
# ---------------------------------------------------------------------------

def _i(*rows):
    return np.array(rows, dtype="int32")


# Inputs for ops the default (every input a float64 (2, 3)) does not fit: a shape is
# a float64 input drawn in [0.2, 0.8] (inside every op's domain, away from kinks),
# an array is a fixed input. "outputs" picks the outputs whose gradient is checked
# (eigenvectors and singular vectors are defined up to sign); "sym" symmetrises the
# float input and adds 3 I before the op (cholesky, eigh read one triangle).
GRAD_CASES = {
    "cast": dict(attrs={"dtype": "float64"}),
    # exp(x * y) + x, returning it and x * y.
    "fused_elementwise": dict(inputs=[(2, 3), (2, 3)], attrs={
        "ops": "multiply,exp,add", "operands": [0, 1, 2, -1, 3, 0], "results": [2, 0]}),
    "where": dict(inputs=[np.array([[True, False, True], [False, True, True]]), (2, 3), (2, 3)]),
    "clip": dict(attrs={"min": 0.3, "max": 0.7}),
    "reshape": dict(attrs={"shape": [3, 2]}),
    "transpose": dict(attrs={"perm": [1, 0]}),
    "broadcast_to": dict(inputs=[(3,)], attrs={"shape": [2, 3]}),
    "concatenate": dict(inputs=[(2, 3), (1, 3)], attrs={"axis": 0}),
    "stack": dict(inputs=[(2, 3), (2, 3)], attrs={"axis": 1}),
    "strided_slice": dict(inputs=[(4, 3)], attrs={"begin": [0, 1], "end": [4, 3], "strides": [2, 1]}),
    "take": dict(inputs=[(3, 4), _i(2, 0, 2)], attrs={"axis": 1}),
    "take_along_axis": dict(inputs=[(2, 3), _i([2, 0], [1, 1])], attrs={"axis": 1}),
    "max_pool": dict(inputs=[(1, 4, 4, 2)], attrs={"pool_size": [2, 2], "strides": [2, 2]}),
    "avg_pool": dict(inputs=[(1, 4, 4, 2)], attrs={"pool_size": [2, 2], "strides": [1, 1]}),
    "max_pool2d": dict(inputs=[(1, 4, 4, 2)], attrs={"pool_size": [2, 2], "strides": [2, 2]}),
    "avg_pool2d": dict(inputs=[(1, 4, 4, 2)], attrs={"pool_size": [2, 2], "strides": [1, 1]}),
    "dropout": dict(inputs=[(2, 3)], attrs={"rate": 0.5, "seed": [1, 2]}),
    "pad": dict(attrs={"pads": [1, 0, 0, 2], "mode": "reflect"}),
    "gather_nd": dict(inputs=[(3, 4), _i([0, 1], [2, 3])]),
    "scatter_nd": dict(inputs=[(4, 3), _i([0], [2]), (2, 3)]),
    "slice_update": dict(inputs=[(3, 4), (2, 2)], attrs={"start": [1, 1]}),
    "repeat": dict(attrs={"repeats": [2], "axis": 1}),
    "segment_reduce": dict(inputs=[(4, 3), _i(0, 0, 1, 1)], attrs={"num_segments": 2, "reduction": "add"}),
    "triangle": dict(inputs=[(3, 3)], attrs={"upper": True}),
    "top_k": dict(inputs=[(2, 5)], attrs={"k": 2}, outputs=[0]),
    "matmul": dict(inputs=[(2, 3), (3, 4)]),
    "conv": dict(inputs=[(1, 5, 5, 2), (3, 3, 2, 3)], attrs={"padding": "same"}),
    "dot_product_attention": dict(inputs=[(1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 3)],
                                  attrs={"scale": 0.5, "causal": True}),
    "conv2d": dict(inputs=[(1, 5, 5, 2), (3, 3, 2, 3)], attrs={"strides": [2, 2]}),
    "inv": dict(inputs=[(3, 3)], shift=2.0),
    "det": dict(inputs=[(3, 3)], shift=2.0),
    "slogdet": dict(inputs=[(3, 3)], shift=2.0),
    "solve": dict(inputs=[(3, 3), (3, 2)], shift=2.0),
    "solve_triangular": dict(inputs=[(3, 3), (3, 2)], attrs={"lower": True}, shift=2.0),
    "cholesky": dict(inputs=[(3, 3)], sym=True),
    "eigh": dict(inputs=[(3, 3)], sym=True, outputs=[0]),
    "svd": dict(inputs=[(4, 3)], outputs=[1]),
    "qr": dict(inputs=[(4, 3)]),
    "fft": dict(inputs=[(4,), (4,)]),
    "correlate": dict(inputs=[(5,), (3,)], attrs={"mode": "full"}),
    "frame": dict(inputs=[(8,)], attrs={"length": 4, "stride": 2}),
    "overlap_add": dict(inputs=[(3, 4)], attrs={"stride": 2}),
    "unfold": dict(inputs=[(1, 2, 4, 4)], attrs={"kernel_size": [2, 2]}),
    "fold": dict(inputs=[(1, 8, 9)], attrs={"output_size": [4, 4], "kernel_size": [2, 2]}),
    "adaptive_max_pool": dict(inputs=[(1, 4, 4, 2)], attrs={"output_size": [2, 2]}),
    "adaptive_avg_pool": dict(inputs=[(1, 4, 4, 2)], attrs={"output_size": [2, 3]}),
    "ctc_loss": dict(inputs=[_i([1, 2]), (1, 5, 4), _i(2), _i(5)], attrs={"mask_index": 0}),
    "lstm": dict(inputs=[(1, 3, 2), (1, 4), (1, 4), (2, 16), (4, 16), (16,)]),
    "gru": dict(inputs=[(1, 3, 2), (1, 4), (2, 12), (4, 12), (2, 12)]),
    "resize": dict(inputs=[(1, 3, 3, 1)], attrs={"axes": [1, 2], "sizes": [5, 4], "method": "linear"}),
    "scale_and_translate": dict(inputs=[(1, 3, 3, 1)], attrs={
        "axes": [1, 2], "sizes": [4, 4], "scales": [1.3, 1.3], "translations": [0.1, 0.0],
        "method": "cubic"}),
    "separable_filter": dict(inputs=[(1, 4, 4, 1)], attrs={"axes": [1, 2], "sizes": [3, 3],
                                                           "taps": [0.25, 0.5, 0.25, 0.2, 0.6, 0.2]}),
    "gaussian_blur": dict(inputs=[(1, 4, 4, 1)], attrs={"axes": [1, 2], "sizes": [3, 3], "sigmas": [1.0, 0.7]}),
    "conv_transpose": dict(inputs=[(1, 3, 3, 2), (3, 3, 4, 2)], attrs={
        "strides": [2, 2], "pads_before": [1, 1], "output_size": [6, 6]}),
    "grid_sample": dict(inputs=[(1, 3, 4, 2), np.array([[[[0.4, 1.3], [1.6, 2.2]]]])], attrs={"order": 1}),
    "map_coordinates": dict(inputs=[(3, 4), np.array([[0.4, 1.3, 2.1], [1.6, 2.2, 0.3]])], attrs={"order": 1}),
}


def _grad_ops():
    return sorted(n for n, s in SCHEMAS.items() if s["grad"] == "yes" or isinstance(s["grad"], list))


def _grad_inputs(name, rng):
    case = GRAD_CASES.get(name, {})
    specs = case.get("inputs", [(2, 3)] * len([i for i in SCHEMAS[name]["inputs"] if not i["optional"]]))
    xs = []
    for spec in specs:
        if isinstance(spec, tuple):
            x = rng.uniform(0.2, 0.8, spec)
            if case.get("shift") and len(spec) == 2 and spec[0] == spec[1]:
                x = x + case["shift"] * np.eye(spec[0])
            xs.append(x)
        else:
            xs.append(np.array(spec))
    return xs, case


def _differentiated(name, xs):
    grad = SCHEMAS[name]["grad"]
    names = [i["name"] for i in SCHEMAS[name]["inputs"]]
    return [k for k, x in enumerate(xs) if x.dtype == np.float64
            and (grad == "yes" or (k < len(names) and names[k] in grad))]


def _forward(name, xs, case, watch=()):
    ts = [to_engine(x) for x in xs]
    for k in watch:
        ts[k].requires_grad = True
    ins = list(ts)
    if case.get("sym"):
        a = ins[0]
        half = C.op("multiply", C.op("add", a, C.op("transpose", a, perm=[1, 0])), to_engine(np.float64(0.5)))
        ins[0] = C.op("add", half, to_engine(3.0 * np.eye(a.shape[0])))
    outs = outputs(name, ins, dict(case.get("attrs", {})))
    return ts, [outs[k] for k in case.get("outputs", range(len(outs))) if outs[k].dtype == "float64"]


def _loss_np(name, xs, case, weights):
    _, outs = _forward(name, xs, case)
    return sum(float(np.sum(to_numpy(o) * w)) for o, w in zip(outs, weights))


@pytest.mark.parametrize("name", _grad_ops())
def test_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(0)
    xs, case = _grad_inputs(name, rng)
    try:
        _, outs = _forward(name, xs, case)
    except ENGINE_ERRORS as e:
        pytest.fail(f"the gradient case for {name} is not accepted ({e}); add one to GRAD_CASES")
    assert outs, f"{name}: no float64 output to differentiate"
    wrt = _differentiated(name, xs)
    assert wrt, name

    @given(st.integers(0, 2**32 - 1))
    def run(seed):
        CASES["gradients"] += 1
        r = np.random.default_rng(seed)
        xs_, _ = _grad_inputs(name, r)
        weights = [r.uniform(-1, 1, o.shape) for o in outs]
        C.tape_push()
        try:
            ts, outs_ = _forward(name, xs_, case, watch=wrt)
            loss = None
            for o, w in zip(outs_, weights):
                term = C.op("sum", C.op("multiply", o, to_engine(w)))
                loss = term if loss is None else C.op("add", loss, term)
            grads = C.gradient(loss, [ts[k] for k in wrt])
        finally:
            C.tape_pop()
        h = 1e-6
        for k, g in zip(wrt, grads):
            assert g is not None, f"{name}: no gradient for input {k}"
            got = to_numpy(g)
            want = np.zeros_like(xs_[k])
            for idx in np.ndindex(xs_[k].shape):
                plus = [x.copy() for x in xs_]
                minus = [x.copy() for x in xs_]
                plus[k][idx] += h
                minus[k][idx] -= h
                want[idx] = (_loss_np(name, plus, case, weights) - _loss_np(name, minus, case, weights)) / (2 * h)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=f"{name} input {k}")

    run()


@pytest.mark.parametrize("name", sorted(n for n, s in SCHEMAS.items() if s["grad"] == "missing"))
def test_missing_gradient_raises(name):
    cases = {"lu_factor": [np.eye(3) * 2 + 0.1], "lstsq": [np.eye(3) * 2 + 0.1, np.ones((3, 2))]}
    if name not in cases:
        pytest.fail(f"add an input for {name}, whose gradient the schema declares missing")
    C.tape_push()
    try:
        ts = [to_engine(x) for x in cases[name]]
        for t in ts:
            t.requires_grad = True
        with pytest.raises(NotImplementedError):
            outs = outputs(name, ts)
            loss = C.op("sum", outs[0])
            C.gradient(loss, ts)
    finally:
        C.tape_pop()


# ---------------------------------------------------------------------------
# Regressions found by the properties above (minimised)
# ---------------------------------------------------------------------------

def _survives(code, timeout=120):
    """Run `code` in a fresh interpreter: a crash there must not take pytest with it."""
    prelude = "import numpy as np, _swiftkeras as C\n"
    r = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-500:]}"
    return r.stdout


def _raises_or_returns(call):
    return (f"try:\n    r = {call}\n    print('returned', r)\n"
            f"except (ValueError, TypeError, IndexError, NotImplementedError) as e:\n    print('raised', e)\n")


@pytest.mark.parametrize("attrs", ["stop=-1e19", "start=1e19, stop=0.0, step=0.5", "stop=1.0, step=-1e-300"])
def test_arange_of_a_hugely_negative_count_is_empty(attrs):
    out = _survives(_raises_or_returns(f"C.op('arange', {attrs})"))
    assert "shape=(0,)" in out


def _engine(name, *xs, **attrs):
    return to_numpy(outputs(name, [to_engine(np.asarray(x)) for x in xs], attrs)[0])


@pytest.mark.parametrize("name", SCALAR_AXIS0_CRASH)
def test_reduction_of_a_scalar_over_axis_0_raises(name):
    attrs = {"axis": 0} if name.startswith("arg") or name == "unique" else {"axes": [0]}
    attrs.update(_SCALAR_AXIS0_ATTRS.get(name, {}))
    out = _survives(_raises_or_returns(f"C.op({name!r}, C.from_buffer(np.array(1.0), 'float64'), **{attrs!r})"))
    assert out.startswith("raised") and "out of bounds" in out


@pytest.mark.parametrize("attrs, want", [
    ("n=2**62, m=0", "raised"),  # numpy's rule: the byte size of 2**62 empty float32 rows overflows
    ("n=2**40, m=0", "shape=(1099511627776, 0)"),
    ("n=2**40, m=0, k=-2**40 + 1", "shape=(1099511627776, 0)"),
    ("n=0, m=2**40, k=2**40 - 1", "shape=(0, 1099511627776)"),
])
def test_eye_with_an_empty_huge_side_returns(attrs, want):
    # It looped over every row; a hang fails with TimeoutExpired.
    out = _survives(_raises_or_returns(f"C.op('eye', {attrs})"), timeout=20)
    assert out.startswith(want) if want == "raised" else want in out


def test_scatter_nd_into_a_scalar_with_no_indices():
    # Index tuples of length 0 in a batch of shape (): one update of the base's shape ().
    out = _survives(_raises_or_returns(
        "C.op('scatter_nd', C.from_buffer(np.array(0.0, 'float32'), 'float32'), "
        "C.from_buffer(np.zeros(0, 'int32'), 'int32'), C.from_buffer(np.zeros(0, 'float32'), 'float32'))"))
    assert out.startswith("raised") and "updates of shape [0]" in out
    got = _engine("scatter_nd", np.array(1.0), np.zeros(0, "int32"), np.array(2.0), reduction="add")
    assert got.shape == () and got == 3.0


def test_gather_and_scatter_nd_with_empty_index_tuples_take_the_whole_tensor_per_position():
    # One tuple per batch position even when the tuples are empty (only the first was read).
    x = np.arange(3.0)
    np.testing.assert_array_equal(_engine("gather_nd", x, np.zeros((2, 0), "int32")), [x, x])
    got = _engine("scatter_nd", x, np.zeros((2, 0), "int32"), np.array([[1.0, 2, 3], [10, 20, 30]]))
    np.testing.assert_array_equal(got, x + [11, 22, 33])


@pytest.mark.parametrize("base, indices, updates", [
    ((1, 1, 2, 3), (2, 3), (0, 0, 2, 2)),  # traps
    ((2, 3), (1, 1), (5,)),  # accepted
])
def test_scatter_nd_checks_the_updates_shape(base, indices, updates):
    out = _survives(_raises_or_returns(
        f"C.op('scatter_nd', C.from_buffer(np.zeros({base}, 'float32'), 'float32'), "
        f"C.from_buffer(np.zeros({indices}, 'int32'), 'int32'), "
        f"C.from_buffer(np.zeros({updates}, 'float32'), 'float32'))"))
    assert out.startswith("raised")


@pytest.mark.parametrize("call, shape", [
    ("C.op('argsort', C.from_buffer(np.zeros((0, 2**31), 'uint16'), 'uint16'), axis=-2)", "(0, 2147483648)"),
    ("C.op('cumsum', C.from_buffer(np.zeros((0, 2**40), 'float32'), 'float32'), axis=0)", "(0, 1099511627776)"),
    ("C.op('cumprod', C.from_buffer(np.zeros((2**40, 0), 'int8'), 'int8'), axis=1)", "(1099511627776, 0)"),
])
def test_axis_ops_on_an_empty_tensor_with_a_huge_side_return(call, shape):
    # Found by scripts/fuzz.py: they looped over every position of the long axis, sorting
    # or summing nothing (a hang fails with TimeoutExpired).
    out = _survives(_raises_or_returns(call), timeout=20)
    assert out.startswith("returned") and f"shape={shape}" in out


def test_histogram_of_a_range_below_float64_spacing_raises():
    # Found by scripts/fuzz.py: int64 values within float64's spacing of each other gave
    # lo == hi even after widening by 0.5, and the bin index of 0 / 0 trapped (SIGILL).
    out = _survives(_raises_or_returns(
        "C.op('histogram', C.from_buffer(np.array([2**62 + 87, 2**62], 'int64'), 'int64'))"))
    assert out.startswith("raised") and "Too many bins" in out  # numpy's error


@pytest.mark.parametrize("name, params", [("random_uniform", 0), ("random_normal", 0),
                                          ("random_truncated_normal", 0), ("random_gamma", 1),
                                          ("random_beta", 2)])
def test_random_ops_with_a_huge_seed(name, params):
    p = "C.from_buffer(np.array([2.0], 'float32'), 'float32'), "
    out = _survives(_raises_or_returns(
        f"C.op({name!r}, {p * params}C.from_buffer(np.array([2**63 - 2, 2], 'int64'), 'int64'), "
        "shape=[2])"))
    assert "returned" in out or "seed" in out


def test_keras_sum_of_a_scalar_over_axis_0_raises():
    code = ("import os; os.environ['KERAS_BACKEND'] = 'swift'\nfrom keras import ops\n"
            + _raises_or_returns("ops.sum(np.float32(1.0), axis=0)"))
    assert _survives(code).startswith("raised")


@pytest.mark.parametrize("name, want", [("sum", 0), ("prod", 1), ("mean", np.nan)])
@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_reduction_over_split_empty_axes(name, want, dtype):
    got = _engine(name, np.zeros((0, 3, 0), dtype), axes=[0, 2], keepdims=True)
    np.testing.assert_array_equal(got, np.full((1, 3, 1), want).astype(got.dtype))


@pytest.mark.parametrize("name, want", [("any", False), ("all", True)])
def test_any_all_of_empty(name, want):
    assert _engine(name, np.zeros((0,), "bool")).item() is want
    np.testing.assert_array_equal(_engine(name, np.zeros((2, 0), "float32"), axes=[1]), [want, want])


def test_abs_of_complex64_nan():
    assert np.isnan(_engine("abs", np.array([complex(0, np.nan)], "complex64"))[0])


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_sign_of_complex_nan(dtype):
    assert np.isnan(_engine("sign", np.array([complex(0, np.nan)], dtype))[0])


def test_sqrt_of_complex_infinite_imaginary():
    got = _engine("sqrt", np.array([complex(0, np.inf), complex(1, np.inf)]))
    np.testing.assert_array_equal(got, [complex(np.inf, np.inf)] * 2)


def test_complex_power_of_infinity():
    got = _engine("power", np.array([complex(0, np.inf)]), np.array([-2.5 + 0j]))
    np.testing.assert_allclose(got, [0j])


@pytest.mark.parametrize("name", ["i0", "i1"])
def test_bessel_of_huge_float64(name):
    assert _engine(name, np.array([1e308]))[0] == np.inf


def test_sign_of_complex_infinity():
    got = _engine("sign", np.array([complex(np.inf, 0), complex(1, np.inf)]))
    np.testing.assert_array_equal(got, [1 + 0j, 1j])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_nextafter_of_half_precision_steps_in_its_dtype(dtype):
    dt = np_dtype(dtype)
    got = _engine("nextafter", np.array([1.0, np.inf], dt), np.array([2.0, 0.0], dt))
    want = np.array([1.0 + float(ml_dtypes.finfo(dt).eps), float(ml_dtypes.finfo(dt).max)])
    np.testing.assert_array_equal(got.astype(np.float64), want)


@pytest.mark.parametrize("dtype, a, b", [("float32", -1e-38, 1e38), ("float64", -1e-300, 1e300)])
def test_floor_divide_of_an_underflowing_quotient(dtype, a, b):
    assert _engine("floor_divide", np.array([a], dtype), np.array([b], dtype))[0] == -1.0


def test_frame_longer_than_the_signal():
    with pytest.raises(ValueError):
        C.op("frame", to_engine(np.zeros((2, 3), "float32")), length=2**62, stride=1)
