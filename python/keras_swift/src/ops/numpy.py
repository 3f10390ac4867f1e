"""``keras.ops.numpy`` on the Swift engine.

Each function shapes its arguments, applies Keras's dtype rules (the same as
the numpy/jax backends, via ``keras.backend.result_type``) and calls one engine
op, or composes a few. Signatures equal ``keras.ops``'s.
"""

import builtins
import math as pymath

import numpy as np

from keras.src import tree
from keras.src.backend.common.backend_utils import canonicalize_axis
from keras.src.backend.common.backend_utils import vectorize_impl
from keras.src.backend.common.variables import standardize_dtype
from keras.src.backend.config import floatx
from keras_swift.src import sparse
from keras_swift.src.core import _static_ints
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import dtype_of
from keras_swift.src.core import is_float_dtype
from keras_swift.src.core import is_int_dtype
from keras_swift.src.core import is_tensor
from keras_swift.src.core import matmul_dtype as _matmul_dtype
from keras_swift.src.core import not_implemented
from keras_swift.src.core import result_type
from keras_swift.src.core import sum_dtype as _sum_dtype
from keras_swift.src.engine import _C
from keras_swift.src.engine import engine_op
from keras_swift.src.engine import op

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _axes(axis):
    """``axis`` (None, int or sequence) as the engine's ``axes`` attribute."""
    if axis is None:
        return None
    if isinstance(axis, (int, np.integer)):
        return [int(axis)]
    return [int(a) for a in axis]


def _canonical_axes(axis, ndim):
    if axis is None:
        return list(range(ndim))
    return [canonicalize_axis(a, ndim) for a in _axes(axis)]


def _promote(*xs, extra=()):
    """Convert operands to tensors of their Keras result dtype.

    Python scalars take part in promotion as weak types (as in the jax and
    numpy backends) and become tensors of the promoted dtype.
    """
    xs = [
        x if isinstance(x, (int, float, complex)) else convert_to_tensor(x)
        for x in xs
    ]
    dtype = result_type(*[dtype_of(x) for x in xs], *extra)
    return [convert_to_tensor(x, dtype) for x in xs]


# result_type maps 64-bit dtypes to 32 bits even when both sides agree
_WIDE_DTYPES = frozenset(("int64", "uint64", "float64", "complex128"))


def _binary(name, x1, x2, extra=()):
    # Two tensors of one narrow dtype are already promoted; the checks are
    # inline because this runs on every add, multiply and comparison.
    if not extra and isinstance(x1, _C.Tensor) and isinstance(x2, _C.Tensor):
        dtype = x1.dtype
        if dtype == x2.dtype and dtype not in _WIDE_DTYPES:
            return op(name, x1, x2)
    x1, x2 = _promote(x1, x2, extra=extra)
    return op(name, x1, x2)


def _float_dtype(dtype):
    """Result dtype of a float-valued unary op (jax: int64 -> floatx)."""
    if dtype == "int64":
        return floatx()
    return result_type(dtype, float)


def _unary_float(name, x):
    x = convert_to_tensor(x)
    return op(name, cast(x, _float_dtype(x.dtype)))


def _unary_exp_like(name, x):
    x = convert_to_tensor(x)
    if is_int_dtype(x.dtype) or x.dtype == "bool":
        x = cast(x, floatx())
    return op(name, x)


def _reduce(name, x, axis, keepdims):
    return op(name, x, axes=_axes(axis), keepdims=bool(keepdims))


def _scalar(value, dtype):
    return convert_to_tensor(value, dtype)


def _move_to_end(x, axes):
    rest = [i for i in range(x.ndim) if i not in axes]
    return op("transpose", x, perm=rest + list(axes))


def _slice_axis(x, axis, start=None, stop=None, step=None):
    idx = [builtins.slice(None)] * x.ndim
    idx[axis] = builtins.slice(start, stop, step)
    return x[tuple(idx)]


# ---------------------------------------------------------------------------
# elementwise arithmetic
# ---------------------------------------------------------------------------


@sparse.elementwise_binary_union(linear=True)
def add(x1, x2):
    return _binary("add", x1, x2)


@sparse.elementwise_binary_union(linear=True)
def subtract(x1, x2):
    return _binary("subtract", x1, x2)


@sparse.elementwise_binary_intersection
def multiply(x1, x2):
    return _binary("multiply", x1, x2)


@sparse.elementwise_division
def divide(x1, x2):
    return _binary("divide", x1, x2, extra=(float,))


@sparse.elementwise_division
def true_divide(x1, x2):
    return divide(x1, x2)


def divide_no_nan(x1, x2):
    x1, x2 = _promote(x1, x2, extra=(float,))
    zero = _scalar(0, x2.dtype)
    is_zero = op("equal", x2, zero)
    # Double where: the gradient never sees x / 0.
    safe = op("where", is_zero, _scalar(1, x2.dtype), x2)
    return op("where", is_zero, zero, op("divide", x1, safe))


def floor_divide(x1, x2):
    return _binary("floor_divide", x1, x2)


def mod(x1, x2):
    x1, x2 = _promote(x1, x2)
    if x1.dtype == "bool":
        x1, x2 = cast(x1, "int32"), cast(x2, "int32")
    return op("mod", x1, x2)


def fmod(x1, x2):
    x1, x2 = _promote(x1, x2)
    if x1.dtype == "bool":
        x1, x2 = cast(x1, "int32"), cast(x2, "int32")
    # C fmod: the result takes the sign of x1.
    r = op("mod", x1, x2)
    fix = op(
        "logical_and",
        op("not_equal", r, _scalar(0, r.dtype)),
        op("not_equal", op("less", x1, _scalar(0, x1.dtype)),
           op("less", x2, _scalar(0, x2.dtype))),
    )
    return op("where", fix, op("subtract", r, x2), r)


def power(x1, x2):
    return _binary("power", x1, x2)


@sparse.elementwise_binary_union(linear=False)
def maximum(x1, x2):
    return _binary("maximum", x1, x2)


@sparse.elementwise_binary_union(linear=False)
def minimum(x1, x2):
    return _binary("minimum", x1, x2)


def fmax(x1, x2):
    x1, x2 = _promote(x1, x2)
    out = op("maximum", x1, x2)
    if is_float_dtype(x1.dtype):
        out = op("where", op("isnan", x1), x2, out)
        out = op("where", op("isnan", x2), x1, out)
    return out


def fmin(x1, x2):
    x1, x2 = _promote(x1, x2)
    out = op("minimum", x1, x2)
    if is_float_dtype(x1.dtype):
        out = op("where", op("isnan", x1), x2, out)
        out = op("where", op("isnan", x2), x1, out)
    return out


def arctan2(x1, x2):
    return _binary("arctan2", x1, x2, extra=(float,))


def hypot(x1, x2):
    x1, x2 = _promote(x1, x2)
    dtype = x1.dtype
    if dtype in ("bool", "int8", "int16", "int32", "uint8", "uint16", "uint32"):
        dtype = floatx()
    elif dtype == "int64":
        dtype = "float64"
    x1, x2 = cast(x1, dtype), cast(x2, dtype)
    # Scaled by the larger magnitude, so that squares cannot overflow; an
    # infinite side gives inf even against nan (C99 and numpy).
    a, b = op("abs", x1), op("abs", x2)
    big, small = op("maximum", a, b), op("minimum", a, b)
    zero, one = _scalar(0, dtype), _scalar(1, dtype)
    ratio = op("divide", small, op("where", op("equal", big, zero), one, big))
    out = op("multiply", big, op("sqrt", op("add", one, op("square", ratio))))
    inf = op("logical_or", op("isinf", x1), op("isinf", x2))
    return op("where", inf, _scalar(np.inf, dtype), out)


def logaddexp(x1, x2):
    x1, x2 = _promote(x1, x2, extra=(float,))
    big = op("maximum", x1, x2)
    small = op("minimum", x1, x2)
    out = op("add", big, op("log1p", op("exp", op("subtract", small, big))))
    # inf - inf would be nan; both -inf (or both +inf) give big.
    return op("where", op("equal", x1, x2), op("add", x1, op("log", _scalar(2, x1.dtype))), out)


def logaddexp2(x1, x2):
    x1, x2 = _promote(x1, x2, extra=(float,))
    ln2 = _scalar(np.log(2.0), x1.dtype)
    return divide(logaddexp(multiply(x1, ln2), multiply(x2, ln2)), ln2)


def ldexp(x1, x2):
    x1 = convert_to_tensor(x1)
    x2 = convert_to_tensor(x2)
    dtype = result_type(x1.dtype, x2.dtype, float)
    if x2.dtype not in ("uint8", "uint16", "uint32", "uint64", "int8",
                        "int16", "int32", "int64"):
        raise TypeError(
            f"ldexp exponent must be an integer type. "
            f"Received: x2 dtype={x2.dtype}"
        )
    x1, x2 = cast(x1, dtype), cast(x2, dtype)
    return op("multiply", x1, op("power", _scalar(2, dtype), x2))


def heaviside(x1, x2):
    x1, x2 = _promote(x1, x2)
    dtype = x1.dtype
    if dtype in ("int8", "int16", "int32", "uint8", "uint16", "uint32"):
        dtype = floatx()
    elif dtype == "int64":
        dtype = "float64"
    x1, x2 = cast(x1, dtype), cast(x2, dtype)
    zero = _scalar(0, dtype)
    out = op("where", op("greater", x1, zero), _scalar(1, dtype), zero)
    out = op("where", op("equal", x1, zero), x2, out)
    return op("where", op("isnan", x1), x1, out)  # numpy: heaviside(nan, x) is nan


@sparse.elementwise_unary(linear=True)
def negative(x):
    return op("negative", convert_to_tensor(x))


@sparse.elementwise_unary(linear=False)
def absolute(x):
    x = convert_to_tensor(x)
    if x.dtype == "bool" or x.dtype.startswith("uint"):
        return x
    return op("abs", x)


@sparse.elementwise_unary(linear=False)
def abs(x):
    return absolute(x)


def fabs(x):
    x = convert_to_tensor(x)
    if is_int_dtype(x.dtype) or x.dtype == "bool":
        x = cast(x, floatx())
    return op("abs", x)


@sparse.elementwise_unary(linear=False)
def sign(x):
    x = convert_to_tensor(x)
    if x.dtype == "bool":
        return x
    return op("sign", x)


@sparse.elementwise_unary(linear=False)
def signbit(x):
    x = convert_to_tensor(x)
    if x.dtype == "bool" or x.dtype.startswith("uint"):
        return op("not_equal", x, x)  # all False, keeps the shape
    zero = _scalar(0, x.dtype)
    neg = op("less", x, zero)
    if is_float_dtype(x.dtype):
        # -0.0 and -nan: 1 / -0.0 == -inf
        neg_zero = op(
            "logical_and",
            op("equal", x, zero),
            op("less", op("reciprocal", x), zero),
        )
        neg = op("logical_or", neg, neg_zero)
    return neg


@sparse.elementwise_unary(linear=False)
def square(x):
    x = convert_to_tensor(x)
    if x.dtype == "bool":
        x = cast(x, "int32")
    return op("square", x)


@sparse.elementwise_unary(linear=False)
def sqrt(x):
    return _unary_float("sqrt", x)


def cbrt(x):
    x = convert_to_tensor(x)
    dtype = x.dtype
    if dtype in ("bool", "int8", "int16", "int32", "uint8", "uint16", "uint32"):
        dtype = floatx()
    elif dtype == "int64":
        dtype = "float64"
    x = cast(x, dtype)
    mag = op("power", op("abs", x), _scalar(1.0 / 3.0, dtype))
    return op("multiply", op("sign", x), mag)


@sparse.densifying_unary
def reciprocal(x):
    x = convert_to_tensor(x)
    return op("reciprocal", x)


@sparse.densifying_unary
def exp(x):
    return _unary_exp_like("exp", x)


@sparse.densifying_unary
def exp2(x):
    x = convert_to_tensor(x)
    if is_int_dtype(x.dtype) or x.dtype == "bool":
        x = cast(x, floatx())
    return op("exp", op("multiply", x, _scalar(np.log(2.0), x.dtype)))


@sparse.elementwise_unary(linear=False)
def expm1(x):
    return _unary_exp_like("expm1", x)


@sparse.densifying_unary
def log(x):
    return _unary_float("log", x)


@sparse.elementwise_unary(linear=False)
def log1p(x):
    return _unary_float("log1p", x)


@sparse.densifying_unary
def log2(x):
    x = convert_to_tensor(x)
    x = cast(x, _float_dtype(x.dtype))
    return op("divide", op("log", x), _scalar(np.log(2.0), x.dtype))


@sparse.densifying_unary
def log10(x):
    x = convert_to_tensor(x)
    x = cast(x, _float_dtype(x.dtype))
    return op("divide", op("log", x), _scalar(np.log(10.0), x.dtype))


@sparse.elementwise_unary(linear=False)
def sin(x):
    return _unary_float("sin", x)


@sparse.densifying_unary
def cos(x):
    return _unary_float("cos", x)


@sparse.elementwise_unary(linear=False)
def tan(x):
    return _unary_float("tan", x)


@sparse.elementwise_unary(linear=False)
def arcsin(x):
    return _unary_float("arcsin", x)


@sparse.densifying_unary
def arccos(x):
    return _unary_float("arccos", x)


@sparse.elementwise_unary(linear=False)
def arctan(x):
    return _unary_float("arctan", x)


@sparse.elementwise_unary(linear=False)
def sinh(x):
    return _unary_float("sinh", x)


@sparse.densifying_unary
def cosh(x):
    return _unary_float("cosh", x)


@sparse.elementwise_unary(linear=False)
def tanh(x):
    return _unary_float("tanh", x)


def _is_complex(x):
    return x.dtype in ("complex64", "complex128")


def _huge(dtype):
    """Above this magnitude x^2 + 1 == x^2 in `dtype`, and x^2 may overflow."""
    return _scalar(1.0 / np.sqrt(np.finfo(dtype).eps), dtype)


@sparse.elementwise_unary(linear=False)
def arcsinh(x):
    x = convert_to_tensor(x)
    x = cast(x, _float_dtype(x.dtype))
    one = _scalar(1, x.dtype)
    if _is_complex(x):
        # log(z + sqrt(z^2 + 1)) on the half plane where it does not cancel;
        # the other half by odd symmetry, which keeps numpy's branch cuts.
        re, im = op("real", x), op("imag", x)
        zero = _scalar(0, re.dtype)
        flip = op("logical_or", op("less", re, zero),
                  op("logical_and", op("equal", re, zero), op("less", im, zero)))
        z = op("where", flip, op("negative", x), x)
        r = op("log", op("add", z, op("sqrt", op("add", op("square", z), one))))
        return op("where", flip, op("negative", r), r)
    # asinh(|x|) = log1p(|x| + x^2 / (1 + sqrt(x^2 + 1))), exact near 0; above
    # `huge`, log(2|x|), so that x^2 cannot overflow.
    a = op("abs", x)
    huge = _huge(x.dtype)
    small = op("minimum", a, huge)
    sq = op("square", small)
    near = op("log1p", op("add", small, op("divide", sq, op("add", one, op("sqrt", op("add", sq, one))))))
    far = op("add", op("log", a), _scalar(np.log(2.0), x.dtype))
    r = op("where", op("greater", a, huge), far, near)
    return op("multiply", op("sign", x), r)


@sparse.densifying_unary
def arccosh(x):
    x = convert_to_tensor(x)
    x = cast(x, _float_dtype(x.dtype))
    one = _scalar(1, x.dtype)
    if _is_complex(x):
        # log(z + sqrt(z + 1) sqrt(z - 1)): numpy's principal branch (not
        # sqrt(z^2 - 1), whose cut differs in the left half plane).
        root = op("multiply", op("sqrt", op("add", x, one)), op("sqrt", op("subtract", x, one)))
        return op("log", op("add", x, root))
    # acosh(x) = log1p(t + sqrt(t (t + 2))) with t = x - 1, exact near 1;
    # above `huge`, log(2x), so that x^2 cannot overflow; nan below 1.
    huge = _huge(x.dtype)
    t = op("subtract", op("minimum", x, huge), one)
    near = op("log1p", op("add", t, op("sqrt", op("multiply", t, op("add", t, _scalar(2, x.dtype))))))
    far = op("add", op("log", op("maximum", x, one)), _scalar(np.log(2.0), x.dtype))
    r = op("where", op("greater", x, huge), far, near)
    return op("where", op("less", x, one), _scalar(np.nan, x.dtype), r)


@sparse.elementwise_unary(linear=False)
def arctanh(x):
    x = convert_to_tensor(x)
    x = cast(x, _float_dtype(x.dtype))
    one = _scalar(1, x.dtype)
    half = _scalar(0.5, x.dtype)
    ratio = op("divide", op("add", one, x), op("subtract", one, x))
    return op("multiply", half, op("log", ratio))


def sinc(x):
    x = convert_to_tensor(x)
    x = cast(x, _float_dtype(x.dtype))
    zero = _scalar(0, x.dtype)
    is_zero = op("equal", x, zero)
    safe = op("where", is_zero, _scalar(1, x.dtype), x)
    pix = op("multiply", safe, _scalar(np.pi, x.dtype))
    return op("where", is_zero, _scalar(1, x.dtype), op("divide", op("sin", pix), pix))


def deg2rad(x):
    x = convert_to_tensor(x)
    if x.dtype in ("int64", "float64"):
        dtype = "float64"
    elif x.dtype in ("bfloat16", "float16"):
        dtype = x.dtype
    else:
        dtype = floatx()
    x = cast(x, dtype)
    return op("multiply", x, _scalar(np.pi / 180.0, dtype))


def rad2deg(x):
    x = convert_to_tensor(x)
    if x.dtype in ("int64", "float64"):
        dtype = "float64"
    elif x.dtype in ("bfloat16", "float16"):
        dtype = x.dtype
    else:
        dtype = floatx()
    x = cast(x, dtype)
    return op("multiply", x, _scalar(180.0 / np.pi, dtype))


@sparse.elementwise_unary(linear=False)
def floor(x):
    return _unary_float("floor", x)


@sparse.elementwise_unary(linear=False)
def ceil(x):
    return _unary_float("ceil", x)


def trunc(x):
    x = convert_to_tensor(x)
    if is_int_dtype(x.dtype) or x.dtype == "bool":
        return x
    return op("multiply", op("sign", x), op("floor", op("abs", x)))


@sparse.elementwise_unary(linear=False)
def round(x, decimals=0):
    x = convert_to_tensor(x)
    if decimals == 0:
        if is_int_dtype(x.dtype) or x.dtype == "bool":
            return x
        return op("round", x)
    if is_int_dtype(x.dtype) or x.dtype == "bool":
        if decimals > 0:
            return x
        factor = _scalar(10 ** (-decimals), "float32")
        y = op("multiply", op("round", op("divide", cast(x, "float32"), factor)), factor)
        return cast(y, x.dtype)
    factor = _scalar(10.0**decimals, x.dtype)
    return op("divide", op("round", op("multiply", x, factor)), factor)


def clip(x, x_min, x_max):
    x = convert_to_tensor(x)
    if x.dtype == "bool":
        x = cast(x, "int32")
    if is_tensor(x_min) or is_tensor(x_max) or np.ndim(x_min) or np.ndim(x_max):
        if x_min is not None:
            x = op("maximum", x, convert_to_tensor(x_min, x.dtype))
        if x_max is not None:
            x = op("minimum", x, convert_to_tensor(x_max, x.dtype))
        return x
    return op(
        "clip",
        x,
        min=float(x_min) if x_min is not None else float("-inf"),
        max=float(x_max) if x_max is not None else float("inf"),
    )


def nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return x
    info = np.finfo(np.float32 if x.dtype == "bfloat16" else x.dtype)
    posinf = float(info.max) if posinf is None else posinf
    neginf = float(info.min) if neginf is None else neginf
    x = op("where", op("isnan", x), _scalar(nan, x.dtype), x)
    inf = op("isinf", x)
    positive = op("greater", x, _scalar(0, x.dtype))
    x = op("where", op("logical_and", inf, positive), _scalar(posinf, x.dtype), x)
    negative = op("logical_and", inf, op("logical_not", positive))
    return op("where", negative, _scalar(neginf, x.dtype), x)


# ---------------------------------------------------------------------------
# comparisons and logic
# ---------------------------------------------------------------------------


def equal(x1, x2):
    return _binary("equal", x1, x2)


def not_equal(x1, x2):
    return _binary("not_equal", x1, x2)


def less(x1, x2):
    return _binary("less", x1, x2)


def less_equal(x1, x2):
    return _binary("less_equal", x1, x2)


def greater(x1, x2):
    return _binary("greater", x1, x2)


def greater_equal(x1, x2):
    return _binary("greater_equal", x1, x2)


def _logical(name, x1, x2):
    return op(name, cast(x1, "bool"), cast(x2, "bool"))


def logical_and(x1, x2):
    return _logical("logical_and", x1, x2)


def logical_or(x1, x2):
    return _logical("logical_or", x1, x2)


def logical_xor(x1, x2):
    return _logical("logical_xor", x1, x2)


def logical_not(x):
    return op("logical_not", cast(x, "bool"))


@sparse.elementwise_unary(linear=False)
def isnan(x):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return op("not_equal", x, x)
    return op("isnan", x)


@sparse.elementwise_unary(linear=False)
def isinf(x):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return op("not_equal", x, x)
    return op("isinf", x)


@sparse.densifying_unary
def isfinite(x):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return op("equal", x, x)
    return op("isfinite", x)


def isneginf(x):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return op("not_equal", x, x)
    return op("logical_and", op("isinf", x), op("less", x, _scalar(0, x.dtype)))


def isposinf(x):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return op("not_equal", x, x)
    return op("logical_and", op("isinf", x), op("greater", x, _scalar(0, x.dtype)))


def isreal(x):
    x = convert_to_tensor(x)
    return op("equal", op("imag", x), _scalar(0, "float32"))


def isclose(x1, x2, rtol=1e-5, atol=1e-8, equal_nan=False):
    x1, x2 = _promote(x1, x2)
    if not is_float_dtype(x1.dtype):
        return op("equal", x1, x2)
    diff = op("abs", op("subtract", x1, x2))
    tol = op(
        "add",
        _scalar(atol, x1.dtype),
        op("multiply", _scalar(rtol, x1.dtype), op("abs", x2)),
    )
    close = op("logical_or", op("equal", x1, x2), op("less_equal", diff, tol))
    if equal_nan:
        both_nan = op("logical_and", op("isnan", x1), op("isnan", x2))
        close = op("logical_or", close, both_nan)
    return close


def allclose(x1, x2, rtol=1e-5, atol=1e-8, equal_nan=False):
    return all(isclose(x1, x2, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isin(x1, x2, assume_unique=False, invert=False):
    x1, x2 = _promote(x1, x2)
    flat = op("reshape", x2, shape=[-1])
    expanded = op("reshape", x1, shape=[*x1.shape, 1])
    found = op("any", op("equal", expanded, flat), axes=[-1], keepdims=False)
    return op("logical_not", found) if invert else found


# ---------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------


@sparse.on_first_arg(sparse.sum)
def sum(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    return _reduce("sum", cast(x, _sum_dtype(x.dtype)), axis, keepdims)


def prod(x, axis=None, keepdims=False, dtype=None):
    x = convert_to_tensor(x)
    dtype = standardize_dtype(dtype) if dtype is not None else _sum_dtype(x.dtype)
    return _reduce("prod", cast(x, dtype), axis, keepdims)


@sparse.on_first_arg(sparse.mean)
def mean(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    if is_int_dtype(x.dtype) or x.dtype == "bool":
        x = cast(x, result_type(x.dtype, "float32"))
    return _reduce("mean", x, axis, keepdims)


def _reduced_shape(shape, axis, keepdims):
    axes = set(_canonical_axes(axis, len(shape)))
    if keepdims:
        return [1 if i in axes else d for i, d in enumerate(shape)]
    return [d for i, d in enumerate(shape) if i not in axes]


def max(x, axis=None, keepdims=False, initial=None):
    x = convert_to_tensor(x)
    if x.size == 0 and initial is not None:
        return full(_reduced_shape(x.shape, axis, keepdims), initial, x.dtype)
    if x.dtype == "bool":
        out = _reduce("any", x, axis, keepdims)
    else:
        out = _reduce("max", x, axis, keepdims)
    if initial is not None:
        out = op("maximum", out, _scalar(initial, out.dtype))
    return out


def min(x, axis=None, keepdims=False, initial=None):
    x = convert_to_tensor(x)
    if x.size == 0 and initial is not None:
        return full(_reduced_shape(x.shape, axis, keepdims), initial, x.dtype)
    if x.dtype == "bool":
        out = _reduce("all", x, axis, keepdims)
    else:
        out = _reduce("min", x, axis, keepdims)
    if initial is not None:
        out = op("minimum", out, _scalar(initial, out.dtype))
    return out


def amax(x, axis=None, keepdims=False):
    return max(x, axis=axis, keepdims=keepdims)


def amin(x, axis=None, keepdims=False):
    return min(x, axis=axis, keepdims=keepdims)


def ptp(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    return op("subtract", max(x, axis, keepdims), min(x, axis, keepdims))


def all(x, axis=None, keepdims=False):
    return _reduce("all", convert_to_tensor(x), axis, keepdims)


def any(x, axis=None, keepdims=False):
    return _reduce("any", convert_to_tensor(x), axis, keepdims)


def count_nonzero(x, axis=None):
    x = convert_to_tensor(x)
    nonzero = op("not_equal", x, _scalar(0, x.dtype))
    return _reduce("sum", cast(nonzero, "int32"), axis, False)


def _abs_square(x):
    """|x|^2, real; for complex x as numpy's var takes it (not x * x)."""
    if x.dtype in ("complex64", "complex128"):
        re, im = op("real", x), op("imag", x)
        return op("add", op("square", re), op("square", im))
    return op("square", x)


def _var(x, axis, keepdims):
    x = convert_to_tensor(x)
    compute_dtype = result_type(x.dtype, "float32")
    result_dtype = result_type(x.dtype, float)
    if result_dtype in ("complex64", "complex128"):
        # numpy and JAX: the variance of complex values is real.
        result_dtype = "float32" if result_dtype == "complex64" else "float64"
    x = cast(x, compute_dtype)
    centered = op("subtract", x, _reduce("mean", x, axis, True))
    var = _reduce("mean", _abs_square(centered), axis, keepdims)
    return var, result_dtype


def var(x, axis=None, keepdims=False):
    v, result_dtype = _var(x, axis, keepdims)
    return cast(v, result_dtype)


def std(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    if is_int_dtype(x.dtype) or x.dtype == "bool":
        x = cast(x, floatx())
    centered = op("subtract", x, _reduce("mean", x, axis, True))
    return op("sqrt", _reduce("mean", _abs_square(centered), axis, keepdims))


def average(x, axis=None, weights=None):
    x = convert_to_tensor(x)
    dtypes_to_resolve = [x.dtype, float]
    if weights is not None:
        weights = convert_to_tensor(weights)
        dtypes_to_resolve.append(weights.dtype)
    dtype = result_type(*dtypes_to_resolve)
    x = cast(x, dtype)
    if weights is None:
        return _reduce("mean", x, axis, False)
    weights = cast(weights, dtype)
    if weights.ndim == 1 and x.ndim > 1 and axis is not None:
        shape = [1] * x.ndim
        shape[canonicalize_axis(axis, x.ndim)] = weights.shape[0]
        weights = op("reshape", weights, shape=shape)
    num = _reduce("sum", op("multiply", x, weights), axis, False)
    den = _reduce(
        "sum", op("broadcast_to", weights, shape=list(x.shape)), axis, False
    )
    return op("divide", num, den)


def argmax(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    if x.dtype == "bool":
        x = cast(x, "int32")
    if axis is None and keepdims:
        out = op("argmax", x)
        return op("reshape", out, shape=[1] * x.ndim)
    return op("argmax", x, axis=axis, keepdims=bool(keepdims))


def argmin(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    if x.dtype == "bool":
        x = cast(x, "int32")
    if axis is None and keepdims:
        out = op("argmin", x)
        return op("reshape", out, shape=[1] * x.ndim)
    return op("argmin", x, axis=axis, keepdims=bool(keepdims))


def _nan_filled(x, fill):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return x
    return op("where", op("isnan", x), _scalar(fill, x.dtype), x)


def nansum(x, axis=None, keepdims=False):
    return sum(_nan_filled(x, 0), axis=axis, keepdims=keepdims)


def nanprod(x, axis=None, keepdims=False):
    return prod(_nan_filled(x, 1), axis=axis, keepdims=keepdims)


def nanmax(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return max(x, axis, keepdims)
    m = max(_nan_filled(x, -np.inf), axis, keepdims)
    all_nan = _reduce("all", op("isnan", x), axis, keepdims)
    return op("where", all_nan, _scalar(np.nan, x.dtype), m)


def nanmin(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return min(x, axis, keepdims)
    m = min(_nan_filled(x, np.inf), axis, keepdims)
    all_nan = _reduce("all", op("isnan", x), axis, keepdims)
    return op("where", all_nan, _scalar(np.nan, x.dtype), m)


def nanmean(x, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    dtype = result_type(x.dtype, float)
    x = cast(x, dtype)
    valid = op("logical_not", op("isnan", x))
    total = _reduce("sum", op("where", valid, x, _scalar(0, dtype)), axis, keepdims)
    count = _reduce("sum", cast(valid, dtype), axis, keepdims)
    return op("divide", total, count)


def _nanvar(x, axis, keepdims):
    x = convert_to_tensor(x)
    compute_dtype = result_type(x.dtype, "float32")
    result_dtype = result_type(x.dtype, float)
    x = cast(x, compute_dtype)
    m = nanmean(x, axis=axis, keepdims=True)
    valid = op("logical_not", op("isnan", x))
    sq = op("where", valid, op("square", op("subtract", x, m)), _scalar(0, compute_dtype))
    count = _reduce("sum", cast(valid, compute_dtype), axis, keepdims)
    return op("divide", _reduce("sum", sq, axis, keepdims), count), result_dtype


def nanvar(x, axis=None, keepdims=False):
    v, dtype = _nanvar(x, axis, keepdims)
    return cast(v, dtype)


def nanstd(x, axis=None, keepdims=False):
    v, dtype = _nanvar(x, axis, keepdims)
    return cast(op("sqrt", v), dtype)


def _nanarg(name, fill, x, axis, keepdims):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        return (argmax if name == "argmax" else argmin)(x, axis, keepdims)
    filled = op("where", op("isnan", x), _scalar(fill, x.dtype), x)
    idx = (argmax if name == "argmax" else argmin)(filled, axis, keepdims)
    all_nan = _reduce("all", op("isnan", x), axis, keepdims)
    if axis is None and keepdims:
        all_nan = op("reshape", all_nan, shape=list(idx.shape))
    return op("where", all_nan, _scalar(-1, idx.dtype), idx)


def nanargmax(x, axis=None, keepdims=False):
    return _nanarg("argmax", -np.inf, x, axis, keepdims)


def nanargmin(x, axis=None, keepdims=False):
    return _nanarg("argmin", np.inf, x, axis, keepdims)


# ---------------------------------------------------------------------------
# linear algebra
# ---------------------------------------------------------------------------


@sparse.on_either_arg(sparse.matmul)
def matmul(x1, x2):
    x1 = convert_to_tensor(x1)
    x2 = convert_to_tensor(x2)
    dtype = _matmul_dtype(x1, x2)
    return op("matmul", cast(x1, dtype), cast(x2, dtype))


def _tensordot(x1, x2, axes1, axes2):
    free1 = [i for i in range(x1.ndim) if i not in axes1]
    free2 = [i for i in range(x2.ndim) if i not in axes2]
    k = pymath.prod(x1.shape[i] for i in axes1)
    a = op("transpose", x1, perm=free1 + axes1)
    a = op("reshape", a, shape=[pymath.prod(x1.shape[i] for i in free1), k])
    b = op("transpose", x2, perm=axes2 + free2)
    b = op("reshape", b, shape=[k, pymath.prod(x2.shape[i] for i in free2)])
    out = op("matmul", a, b)
    return op(
        "reshape",
        out,
        shape=[x1.shape[i] for i in free1] + [x2.shape[i] for i in free2],
    )


def tensordot(x1, x2, axes=2):
    x1, x2 = _promote(x1, x2)
    if isinstance(axes, int):
        axes1 = list(range(x1.ndim - axes, x1.ndim))
        axes2 = list(range(axes))
    else:
        a1, a2 = axes
        a1 = [a1] if isinstance(a1, int) else list(a1)
        a2 = [a2] if isinstance(a2, int) else list(a2)
        axes1 = [canonicalize_axis(a, x1.ndim) for a in a1]
        axes2 = [canonicalize_axis(a, x2.ndim) for a in a2]
    if len(axes1) != len(axes2) or builtins.any(
        x1.shape[i] != x2.shape[j] for i, j in zip(axes1, axes2)
    ):
        raise ValueError(
            f"tensordot: shape mismatch between x1.shape={x1.shape} and "
            f"x2.shape={x2.shape} for axes={axes}"
        )
    return _tensordot(x1, x2, axes1, axes2)


@sparse.on_either_arg(sparse.dot)
def dot(x1, x2):
    x1, x2 = _promote(x1, x2)
    if x1.ndim == 0 or x2.ndim == 0:
        return op("multiply", x1, x2)
    if x2.ndim <= 2:
        return op("matmul", x1, x2)
    return tensordot(x1, x2, axes=([x1.ndim - 1], [x2.ndim - 2]))


def inner(x1, x2):
    x1, x2 = _promote(x1, x2)
    if x1.ndim == 0 or x2.ndim == 0:
        return op("multiply", x1, x2)
    return tensordot(x1, x2, axes=([x1.ndim - 1], [x2.ndim - 1]))


def outer(x1, x2):
    x1, x2 = _promote(x1, x2)
    a = op("reshape", x1, shape=[-1, 1])
    b = op("reshape", x2, shape=[1, -1])
    return op("multiply", a, b)


def vdot(x1, x2):
    x1, x2 = _promote(x1, x2)
    a = op("reshape", x1, shape=[-1])
    b = op("reshape", x2, shape=[-1])
    if a.dtype in ("complex64", "complex128"):
        a = op("conj", a)  # numpy.vdot conjugates its first argument
    return op("sum", op("multiply", a, b))


def kron(x1, x2):
    x1, x2 = _promote(x1, x2)
    nd = builtins.max(x1.ndim, x2.ndim)
    s1 = (1,) * (nd - x1.ndim) + x1.shape
    s2 = (1,) * (nd - x2.ndim) + x2.shape
    a = op("reshape", x1, shape=[d for s in s1 for d in (s, 1)])
    b = op("reshape", x2, shape=[d for s in s2 for d in (1, s)])
    out = op("multiply", a, b)
    return op("reshape", out, shape=[p * q for p, q in zip(s1, s2)])


def _einsum_parse(subscripts, operands):
    subscripts = subscripts.replace(" ", "")
    if "->" in subscripts:
        inputs, output = subscripts.split("->")
    else:
        inputs, output = subscripts, None
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        raise ValueError(
            f"einsum: {len(inputs)} input subscripts for "
            f"{len(operands)} operands"
        )
    # Ellipsis dims get private labels, aligned from the right.
    max_ell = 0
    labels = []
    for spec, x in zip(inputs, operands):
        if "..." in spec:
            n_ell = x.ndim - (len(spec) - 3)
            max_ell = builtins.max(max_ell, n_ell)
            ell = "".join(chr(0x2460 + max_ell - n_ell + i) for i in range(n_ell))
            spec = spec.replace("...", ell)
        if len(spec) != x.ndim:
            raise ValueError(
                f"einsum: subscript '{spec}' does not match an operand of "
                f"rank {x.ndim}"
            )
        labels.append(spec)
    ell_all = "".join(chr(0x2460 + i) for i in range(max_ell))
    if output is None:
        counts = {}
        for spec in labels:
            for c in spec:
                counts[c] = counts.get(c, 0) + 1
        singles = sorted(
            c for c, n in counts.items() if n == 1 and c not in ell_all
        )
        output = ell_all + "".join(singles)
    else:
        output = output.replace("...", ell_all)
    return labels, output


def einsum(subscripts, *operands, **kwargs):
    operands = [convert_to_tensor(x) for x in operands]
    dtypes_to_resolve = list(set(x.dtype for x in operands))
    if len(dtypes_to_resolve) == 1 and dtypes_to_resolve[0] == "int8":
        dtype = "int32"
    else:
        dtype = result_type(*dtypes_to_resolve)
    operands = [cast(x, dtype) for x in operands]
    labels, output = _einsum_parse(subscripts, operands)

    sizes = {}
    for spec, x in zip(labels, operands):
        if len(set(spec)) != len(spec):
            raise not_implemented(
                "numpy.einsum with a repeated index in one operand"
            )
        for c, d in zip(spec, x.shape):
            if sizes.get(c, 1) != 1 and d not in (1, sizes[c]):
                raise ValueError(
                    f"einsum: size mismatch for index '{c}': "
                    f"{sizes[c]} vs {d}"
                )
            sizes[c] = builtins.max(sizes.get(c, 1), d)

    def reduce_unused(x, spec, keep):
        drop = [i for i, c in enumerate(spec) if c not in keep]
        if drop:
            x = op("sum", x, axes=drop, keepdims=False)
            spec = "".join(c for c in spec if c in keep)
        return x, spec

    def expand(x, spec, target_labels):
        # broadcast size-1 dims of shared labels up to the common size
        target = [sizes[c] for c in spec]
        if list(x.shape) != target:
            x = op("broadcast_to", x, shape=target)
        return x

    x, spec = operands[0], labels[0]
    for i in range(1, len(operands) + 1):
        rest = "".join(labels[i:]) + output
        x, spec = reduce_unused(x, spec, rest)
        if i == len(operands):
            break
        y, yspec = operands[i], labels[i]
        y, yspec = reduce_unused(y, yspec, spec + "".join(labels[i + 1:]) + output)
        keep = "".join(labels[i + 1:]) + output
        x = expand(x, spec, None)
        y = expand(y, yspec, None)
        batch = [c for c in spec if c in yspec and c in keep]
        contract = [c for c in spec if c in yspec and c not in keep]
        free_x = [c for c in spec if c not in yspec]
        free_y = [c for c in yspec if c not in spec]
        xt = op("transpose", x, perm=[spec.index(c) for c in batch + free_x + contract])
        yt = op("transpose", y, perm=[yspec.index(c) for c in batch + contract + free_y])
        nb = pymath.prod(sizes[c] for c in batch)
        nfx = pymath.prod(sizes[c] for c in free_x)
        nfy = pymath.prod(sizes[c] for c in free_y)
        nk = pymath.prod(sizes[c] for c in contract)
        xt = op("reshape", xt, shape=[nb, nfx, nk])
        yt = op("reshape", yt, shape=[nb, nk, nfy])
        x = op("matmul", xt, yt)
        spec = "".join(batch + free_x + free_y)
        x = op("reshape", x, shape=[sizes[c] for c in spec])
    x = expand(x, spec, None)
    if spec != output:
        x = op("transpose", x, perm=[spec.index(c) for c in output])
    return x


def trace(x, offset=0, axis1=0, axis2=1):
    x = convert_to_tensor(x)
    x = cast(x, _sum_dtype(x.dtype))
    return op("sum", diagonal(x, offset, axis1, axis2), axes=[-1], keepdims=False)


def diagonal(x, offset=0, axis1=0, axis2=1):
    x = convert_to_tensor(x)
    a1 = canonicalize_axis(axis1, x.ndim)
    a2 = canonicalize_axis(axis2, x.ndim)
    x = _move_to_end(x, [a1, a2])
    n, m = x.shape[-2], x.shape[-1]
    if offset >= 0:
        length = builtins.max(0, builtins.min(n, m - offset))
        idx = [i * m + i + offset for i in range(length)]
    else:
        length = builtins.max(0, builtins.min(n + offset, m))
        idx = [(i - offset) * m + i for i in range(length)]
    flat = op("reshape", x, shape=[*x.shape[:-2], n * m])
    return op("take", flat, convert_to_tensor(idx, "int32"), axis=-1)


def diag(x, k=0):
    x = convert_to_tensor(x)
    if x.ndim == 2:
        return diagonal(x, offset=k)
    if x.ndim != 1:
        raise ValueError(f"diag: input must be 1-D or 2-D, got {x.ndim}-D")
    n = x.shape[0] + builtins.abs(k)
    rows = op("reshape", op("arange", start=0.0, stop=float(n), step=1.0, dtype="int32"), shape=[n, 1])
    cols = op("reshape", rows, shape=[1, n])
    mask = op("equal", op("subtract", cols, rows), _scalar(k, "int32"))
    padded = pad(x, [(0, builtins.abs(k))])
    values = op("reshape", padded, shape=[n, 1] if k >= 0 else [1, n])
    values = op("broadcast_to", values, shape=[n, n])
    return op("where", mask, values, _scalar(0, x.dtype))


def diagflat(x, k=0):
    return diag(op("reshape", convert_to_tensor(x), shape=[-1]), k)


# ---------------------------------------------------------------------------
# creation
# ---------------------------------------------------------------------------


def _shape_list(shape):
    if isinstance(shape, (int, np.integer)):
        return [int(shape)]
    return [int(d) for d in shape]


def full(shape, fill_value, dtype=None):
    if is_tensor(fill_value) or np.ndim(fill_value) > 0:
        fill_value = convert_to_tensor(fill_value)
        dtype = standardize_dtype(dtype or fill_value.dtype)
        return op("broadcast_to", cast(fill_value, dtype), shape=_shape_list(shape))
    dtype = standardize_dtype(dtype or floatx())
    if isinstance(fill_value, (int, np.integer)) and builtins.abs(int(fill_value)) >= 2**53:
        value = convert_to_tensor(fill_value, dtype)
        return op("broadcast_to", value, shape=_shape_list(shape))
    return op("full", shape=_shape_list(shape), dtype=dtype, value=float(fill_value))


def full_like(x, fill_value, dtype=None):
    x = convert_to_tensor(x)
    return full(x.shape, fill_value, dtype=dtype or x.dtype)


def zeros(shape, dtype=None):
    return op("full", shape=_shape_list(shape), dtype=standardize_dtype(dtype or floatx()), value=0.0)


def ones(shape, dtype=None):
    return op("full", shape=_shape_list(shape), dtype=standardize_dtype(dtype or floatx()), value=1.0)


def empty(shape, dtype=None):
    return zeros(shape, dtype)


def zeros_like(x, dtype=None):
    x = convert_to_tensor(x)
    return zeros(x.shape, dtype or x.dtype)


def ones_like(x, dtype=None):
    x = convert_to_tensor(x)
    return ones(x.shape, dtype or x.dtype)


def empty_like(x, dtype=None):
    return zeros_like(x, dtype)


def array(x, dtype=None):
    return convert_to_tensor(x, dtype=dtype)


@sparse.elementwise_unary(linear=True)
def copy(x):
    return convert_to_tensor(x)  # tensors are immutable


def arange(start, stop=None, step=None, dtype=None):
    if dtype is None:
        dtypes_to_resolve = [dtype_of(start)]
        if stop is not None:
            dtypes_to_resolve.append(dtype_of(stop))
        if step is not None:
            dtypes_to_resolve.append(dtype_of(step))
        dtype = result_type(*dtypes_to_resolve)
    dtype = standardize_dtype(dtype)
    if stop is None:
        start, stop = 0, start
    if step is None:
        step = 1
    start, stop, step = float(start), float(stop), float(step)
    if step == 0:
        raise ValueError("arange: `step` must not be zero")
    return op("arange", start=start, stop=stop, step=step, dtype=dtype)


def _index_grid(n, m, k):
    """(n, m) int32 tensor of ``col - row - k``."""
    rows = op("reshape", op("arange", start=0.0, stop=float(n), step=1.0, dtype="int32"), shape=[n, 1])
    cols = op("reshape", op("arange", start=0.0, stop=float(m), step=1.0, dtype="int32"), shape=[1, m])
    return op("subtract", op("subtract", cols, rows), _scalar(k, "int32"))


def eye(N, M=None, k=0, dtype=None):
    dtype = standardize_dtype(dtype or floatx())
    M = N if M is None else M
    return op("eye", n=int(N), m=int(M), k=int(k), dtype=dtype)

def identity(n, dtype=None):
    return eye(n, dtype=dtype)


def tri(N, M=None, k=0, dtype=None):
    dtype = standardize_dtype(dtype or floatx())
    M = N if M is None else M
    grid = _index_grid(int(N), int(M), int(k))
    return cast(op("less_equal", grid, _scalar(0, "int32")), dtype)


def tril(x, k=0):
    return op("triangle", convert_to_tensor(x), k=int(k), upper=False)


def triu(x, k=0):
    return op("triangle", convert_to_tensor(x), k=int(k), upper=True)

def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    if dtype is None:
        dtype = result_type(dtype_of(start), dtype_of(stop), float)
    dtype = standardize_dtype(dtype)
    compute = "float64" if dtype == "float64" else "float32"
    start = convert_to_tensor(start, compute)
    stop = convert_to_tensor(stop, compute)
    num = int(num)
    if num < 0:
        raise ValueError(f"Number of samples, {num}, must be non-negative.")
    div = (num - 1) if endpoint else num
    step = op("divide", op("subtract", stop, start), _scalar(builtins.max(div, 1), compute))
    bshape = np.broadcast_shapes(start.shape, stop.shape)
    t = op("arange", start=0.0, stop=float(num), step=1.0, dtype=compute)
    t = op("reshape", t, shape=[num] + [1] * len(bshape))
    out = op("add", start, op("multiply", t, step))
    if endpoint and num > 1:
        last = op("equal", t, _scalar(num - 1, compute))
        out = op("where", last, op("broadcast_to", stop, shape=list(out.shape)), out)
    out = op("broadcast_to", out, shape=[num, *bshape])
    if axis != 0:
        out = moveaxis(out, 0, axis)
    if is_int_dtype(dtype):
        out = op("floor", out)
    out = cast(out, dtype)
    if retstep:
        return out, cast(step, dtype)
    return out


def logspace(start, stop, num=50, endpoint=True, base=10, dtype=None, axis=0):
    if dtype is None:
        dtype = result_type(dtype_of(start), dtype_of(stop), float)
    dtype = standardize_dtype(dtype)
    compute = "float64" if dtype == "float64" else "float32"
    exps = linspace(start, stop, num=num, endpoint=endpoint, dtype=compute, axis=axis)
    return cast(op("power", _scalar(base, compute), exps), dtype)


def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    dtype = standardize_dtype(dtype or floatx())
    compute = "float64" if dtype == "float64" else "float32"
    start = convert_to_tensor(start, compute)
    stop = convert_to_tensor(stop, compute)
    sgn = op("sign", start)
    exps = linspace(
        op("log", op("abs", start)), op("log", op("abs", stop)),
        num=num, endpoint=endpoint, dtype=compute, axis=axis,
    )
    return cast(op("multiply", sgn, op("exp", exps)), dtype)


def meshgrid(*x, indexing="xy"):
    if indexing not in ("xy", "ij"):
        raise ValueError(
            f"Valid values for `indexing` are 'xy' and 'ij'. Received: {indexing}"
        )
    xs = [op("reshape", convert_to_tensor(a), shape=[-1]) for a in x]
    shape = [a.shape[0] for a in xs]
    grids = []
    for i, a in enumerate(xs):
        s = [1] * len(xs)
        s[i] = shape[i]
        grids.append(op("broadcast_to", op("reshape", a, shape=s), shape=shape))
    if indexing == "xy" and len(xs) >= 2:  # 'xy' swaps the first two axes
        grids = [swapaxes(g, 0, 1) for g in grids]
    return grids

def _window(x, fn):
    n = int(convert_to_numpy(x)) if is_tensor(x) else int(x)
    if n <= 0:
        return zeros((0,), floatx())
    if n == 1:
        return ones((1,), floatx())
    k = op("arange", start=0.0, stop=float(n), step=1.0, dtype="float32")
    return cast(fn(k, n), floatx())


def _cos_window(*coefficients):
    def fn(k, n):
        out = _scalar(0.0, "float32")
        for j, c in enumerate(coefficients):
            arg = op("multiply", k, _scalar(2.0 * np.pi * j / (n - 1), "float32"))
            out = op("add", out, op("multiply", op("cos", arg), _scalar(c, "float32")))
        return out

    return fn


def hanning(x):
    return _window(x, _cos_window(0.5, -0.5))


def hamming(x):
    return _window(x, _cos_window(0.54, -0.46))


def blackman(x):
    return _window(x, _cos_window(0.42, -0.5, 0.08))


def bartlett(x):
    def fn(k, n):
        half = (n - 1) / 2.0
        d = op("abs", op("subtract", k, _scalar(half, "float32")))
        return op("subtract", _scalar(1.0, "float32"), op("divide", d, _scalar(half, "float32")))

    return _window(x, fn)


def vander(x, N=None, increasing=False):
    x = convert_to_tensor(x)
    result_dtype = result_type(x.dtype)
    compute_dtype = result_type(x.dtype, floatx())
    n = x.shape[0] if N is None else int(N)
    powers = op("arange", start=0.0, stop=float(n), step=1.0, dtype=compute_dtype)
    if not increasing:
        powers = flip(powers)
    base = op("reshape", cast(x, compute_dtype), shape=[-1, 1])
    out = op("power", base, op("reshape", powers, shape=[1, n]))
    return cast(out, result_dtype)


# ---------------------------------------------------------------------------
# shape manipulation
# ---------------------------------------------------------------------------


def ndim(x):
    return convert_to_tensor(x).ndim


def size(x):
    return convert_to_tensor(x).size


@sparse.on_first_arg(sparse.reshape)
def reshape(x, newshape):
    x = convert_to_tensor(x)
    return op("reshape", x, shape=_shape_list(newshape))


def ravel(x):
    return op("reshape", convert_to_tensor(x), shape=[-1])


@sparse.on_first_arg(sparse.expand_dims)
def expand_dims(x, axis):
    x = convert_to_tensor(x)
    axes = _axes(axis)
    out_ndim = x.ndim + len(axes)
    axes = sorted(canonicalize_axis(a, out_ndim) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in `axis`: {axis}")
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return op("reshape", x, shape=shape)


@sparse.on_first_arg(sparse.squeeze)
def squeeze(x, axis=None):
    x = convert_to_tensor(x)
    if axis is None:
        shape = [d for d in x.shape if d != 1]
    else:
        axes = {canonicalize_axis(a, x.ndim) for a in _axes(axis)}
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(
                    f"Cannot select an axis to squeeze out which has size not "
                    f"equal to one: axis={a}, shape={x.shape}"
                )
        shape = [d for i, d in enumerate(x.shape) if i not in axes]
    return op("reshape", x, shape=shape)


@engine_op("transpose", constant_time=True, axes="perm")
@sparse.on_first_arg(sparse.transpose)
def transpose(x, axes=None):
    # O(1) in the engine (a deferred copy; a small input, under 16K elements,
    # is copied at once), so the call is the op's whole cost: bound in C for
    # tensors. perm=None omits the attribute (reverse the axes); the engine
    # normalises negative axes and rejects bad permutations.
    return op("transpose", convert_to_tensor(x), perm=axes)


def moveaxis(x, source, destination):
    x = convert_to_tensor(x)
    src = [canonicalize_axis(a, x.ndim) for a in _axes(source)]
    dst = [canonicalize_axis(a, x.ndim) for a in _axes(destination)]
    if len(src) != len(dst):
        raise ValueError(
            "`source` and `destination` arguments must have the same number "
            f"of elements, got {source} and {destination}"
        )
    order = [i for i in range(x.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return op("transpose", x, perm=order)


def swapaxes(x, axis1, axis2):
    x = convert_to_tensor(x)
    perm = list(range(x.ndim))
    a1 = canonicalize_axis(axis1, x.ndim)
    a2 = canonicalize_axis(axis2, x.ndim)
    perm[a1], perm[a2] = perm[a2], perm[a1]
    return op("transpose", x, perm=perm)


def broadcast_to(x, shape):
    return op("broadcast_to", convert_to_tensor(x), shape=_shape_list(shape))


@sparse.on_listed_args(sparse.concatenate)
def concatenate(xs, axis=0):
    xs = _promote(*xs) if len(xs) > 1 else [convert_to_tensor(xs[0])]
    if axis is None:
        xs = [op("reshape", x, shape=[-1]) for x in xs]
        axis = 0
    return op("concatenate", *xs, axis=int(axis))


def append(x1, x2, axis=None):
    x1, x2 = _promote(x1, x2)
    return concatenate([x1, x2], axis=axis)


def stack(x, axis=0):
    xs = _promote(*x) if len(x) > 1 else [convert_to_tensor(x[0])]
    return op("stack", *xs, axis=int(axis))

def hstack(xs):
    xs = _promote(*xs) if len(xs) > 1 else [convert_to_tensor(xs[0])]
    xs = [op("reshape", x, shape=[1]) if x.ndim == 0 else x for x in xs]
    return concatenate(xs, axis=0 if xs[0].ndim == 1 else 1)


def vstack(xs):
    xs = _promote(*xs) if len(xs) > 1 else [convert_to_tensor(xs[0])]
    xs = [op("reshape", x, shape=[1, -1]) if x.ndim < 2 else x for x in xs]
    return concatenate(xs, axis=0)


def dstack(xs):
    xs = _promote(*xs) if len(xs) > 1 else [convert_to_tensor(xs[0])]
    out = []
    for x in xs:
        if x.ndim == 0:
            x = op("reshape", x, shape=[1, 1, 1])
        elif x.ndim == 1:
            x = op("reshape", x, shape=[1, -1, 1])
        elif x.ndim == 2:
            x = op("reshape", x, shape=[*x.shape, 1])
        out.append(x)
    return concatenate(out, axis=2)


def _split_points(n, indices_or_sections, even):
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise ValueError("number sections must be larger than 0.")
        if even and n % sections:
            raise ValueError("array split does not result in an equal division")
        base, extra = divmod(n, sections)
        sizes = [base + 1] * extra + [base] * (sections - extra)
        points, acc = [], 0
        for s in sizes[:-1]:
            acc += s
            points.append(acc)
        return points
    return _static_ints(indices_or_sections, "indices_or_sections")


def _split(x, indices_or_sections, axis, even):
    x = convert_to_tensor(x)
    axis = canonicalize_axis(axis, x.ndim)
    n = x.shape[axis]
    points = _split_points(n, indices_or_sections, even)
    bounds = [0] + points + [n]
    out = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        start = builtins.min(builtins.max(start if start >= 0 else start + n, 0), n)
        stop = builtins.min(builtins.max(stop if stop >= 0 else stop + n, start), n)
        out.append(_slice_axis(x, axis, start, stop))
    return out


def split(x, indices_or_sections, axis=0):
    return _split(x, indices_or_sections, axis, even=True)


def array_split(x, indices_or_sections, axis=0):
    return _split(x, indices_or_sections, axis, even=False)


def hsplit(x, indices_or_sections):
    x = convert_to_tensor(x)
    return split(x, indices_or_sections, axis=0 if x.ndim == 1 else 1)


def vsplit(x, indices_or_sections):
    return split(x, indices_or_sections, axis=0)


def dsplit(x, indices_or_sections):
    return split(x, indices_or_sections, axis=2)


def flip(x, axis=None):
    x = convert_to_tensor(x)
    axes = _canonical_axes(axis, x.ndim)
    idx = tuple(
        builtins.slice(None, None, -1) if i in axes else builtins.slice(None)
        for i in range(x.ndim)
    )
    return x[idx]


def fliplr(x):
    return flip(x, axis=1)


def flipud(x):
    return flip(x, axis=0)


def rot90(array, k=1, axes=(0, 1)):
    array = convert_to_tensor(array)
    if array.ndim < 2:
        raise ValueError(
            "Input array must have at least 2 dimensions. "
            f"Received: array.ndim={array.ndim}"
        )
    if len(axes) != 2 or axes[0] == axes[1]:
        raise ValueError(
            f"Invalid axes: {axes}. Axes must be a tuple "
            "of two different dimensions."
        )
    a0 = canonicalize_axis(axes[0], array.ndim)
    a1 = canonicalize_axis(axes[1], array.ndim)
    k = k % 4
    if k == 0:
        return array
    if k == 2:
        return flip(flip(array, a0), a1)
    if k == 1:
        return swapaxes(flip(array, a1), a0, a1)
    return flip(swapaxes(array, a0, a1), a1)


def roll(x, shift, axis=None):
    x = convert_to_tensor(x)
    if axis is None:
        return reshape(roll(ravel(x), shift, axis=0), x.shape)
    shifts = _axes(shift)
    axes = [canonicalize_axis(a, x.ndim) for a in _axes(axis)]
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    for s, a in zip(shifts, axes):
        n = x.shape[a]
        if n == 0:
            continue
        s %= n
        if s:
            x = op(
                "concatenate",
                _slice_axis(x, a, n - s, None),
                _slice_axis(x, a, 0, n - s),
                axis=a,
            )
    return x


def repeat(x, repeats, axis=None):
    x = convert_to_tensor(x)
    if is_tensor(repeats):
        repeats = convert_to_numpy(repeats)
    reps = [int(r) for r in np.asarray(repeats).reshape(-1)]
    if axis is None:
        return op("repeat", x, repeats=reps)
    return op("repeat", x, repeats=reps, axis=int(axis))

def tile(x, repeats):
    x = convert_to_tensor(x)
    reps = _axes(repeats) if not is_tensor(repeats) else _static_ints(repeats, "repeats")
    nd = builtins.max(len(reps), x.ndim)
    reps = [1] * (nd - len(reps)) + reps
    shape = [1] * (nd - x.ndim) + list(x.shape)
    y = op("reshape", x, shape=[d for s in shape for d in (1, s)])
    y = op("broadcast_to", y, shape=[d for r, s in zip(reps, shape) for d in (r, s)])
    return op("reshape", y, shape=[r * s for r, s in zip(reps, shape)])


def pad(x, pad_width, mode="constant", constant_values=None):
    x = convert_to_tensor(x)
    if constant_values is not None and mode != "constant":
        raise ValueError(
            "Argument `constant_values` can only be "
            "provided when `mode == 'constant'`. "
            f"Received: mode={mode}"
        )
    if mode not in ("constant", "reflect", "symmetric", "edge"):
        raise not_implemented(f"numpy.pad(mode={mode!r})")
    if is_tensor(pad_width):
        pad_width = convert_to_numpy(pad_width)
    pw = np.asarray(pad_width, dtype=np.int64)
    pw = np.broadcast_to(pw.reshape(-1, 2) if pw.size > 1 else pw.reshape(1, 1), (x.ndim, 2))
    if (pw < 0).any():
        raise ValueError(f"pad: negative pad width {pad_width}")
    value = 0.0 if constant_values is None else float(constant_values)
    return op("pad", x, pads=[int(p) for p in pw.reshape(-1)], mode=mode, value=value)

def diff(a, n=1, axis=-1):
    if int(n) < 0:
        raise ValueError(f"order must be non-negative but got {n}")
    a = convert_to_tensor(a)
    axis = canonicalize_axis(axis, a.ndim)
    for _ in range(n):
        if a.shape[axis] == 0:
            break
        hi = _slice_axis(a, axis, 1, None)
        lo = _slice_axis(a, axis, 0, -1)
        a = op("not_equal", hi, lo) if a.dtype == "bool" else op("subtract", hi, lo)
    return a


# ---------------------------------------------------------------------------
# indexing
# ---------------------------------------------------------------------------


def take(x, indices, axis=None):
    x = convert_to_tensor(x)
    indices = convert_to_tensor(indices)
    if not is_int_dtype(indices.dtype):
        raise TypeError(
            f"`indices` must be an integer tensor, got dtype={indices.dtype}"
        )
    if axis is None:
        return op("take", x, indices)
    return op("take", x, indices, axis=int(axis))


def take_along_axis(x, indices, axis=None):
    x = convert_to_tensor(x)
    indices = convert_to_tensor(indices)
    if not is_int_dtype(indices.dtype):
        raise TypeError(
            f"`indices` must be an integer tensor, got dtype={indices.dtype}"
        )
    if axis is None:
        x = op("reshape", x, shape=[-1])
        indices = op("reshape", indices, shape=[-1])
        axis = 0
    axis = canonicalize_axis(axis, x.ndim)
    # Broadcast every non-indexed dimension, like numpy/jax.
    if indices.ndim == x.ndim:
        xs = list(x.shape)
        ishape = list(indices.shape)
        xs_b = [builtins.max(a, b) if i != axis else a for i, (a, b) in enumerate(zip(xs, ishape))]
        is_b = [builtins.max(a, b) if i != axis else b for i, (a, b) in enumerate(zip(xs, ishape))]
        if xs_b != xs:
            x = op("broadcast_to", x, shape=xs_b)
        if is_b != ishape:
            indices = op("broadcast_to", indices, shape=is_b)
    return op("take_along_axis", x, indices, axis=axis)


def where(condition, x1=None, x2=None):
    if x1 is None and x2 is None:
        return nonzero(condition)
    if x1 is None or x2 is None:
        raise ValueError(
            "`x1` and `x2` must either both be provided or both be None."
        )
    condition = cast(condition, "bool")
    x1, x2 = _promote(x1, x2)
    return op("where", condition, x1, x2)


def select(condlist, choicelist, default=0):
    if len(condlist) != len(choicelist):
        raise ValueError(
            "condlist and choicelist must have the same length. Received: "
            f"len(condlist)={len(condlist)}, len(choicelist)={len(choicelist)}"
        )
    choices = _promote(*choicelist, default)
    out = choices[-1]
    for cond, choice in zip(reversed(condlist), reversed(choices[:-1])):
        out = op("where", cast(cond, "bool"), choice, out)
    return out


def searchsorted(sorted_sequence, values, side="left"):
    sorted_sequence = convert_to_tensor(sorted_sequence)
    if sorted_sequence.ndim != 1:
        raise ValueError(
            "`searchsorted` only supports 1-D sorted sequences. "
            "You can use `keras.ops.vectorized_map` "
            "to extend it to N-D sequences. Received: "
            f"sorted_sequence.shape={sorted_sequence.shape}"
        )
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    seq, values = _promote(sorted_sequence, values)
    expanded = op("reshape", values, shape=[*values.shape, 1])
    cmp = _sort_less(seq, expanded, or_equal=side == "right")
    out_type = "int32" if seq.shape[0] <= np.iinfo(np.int32).max else "int64"
    return op("sum", cast(cmp, out_type), axes=[-1], keepdims=False)


@sparse.elementwise_unary(linear=False)
def digitize(x, bins):
    x = convert_to_tensor(x)
    bins = convert_to_tensor(bins)
    x, bins = _promote(x, bins)
    expanded = op("reshape", x, shape=[*x.shape, 1])
    count = op("sum", cast(_sort_less(bins, expanded, or_equal=True), "int32"), axes=[-1], keepdims=False)
    return count


def _sort_less(a, b, or_equal):
    """a < b (or a <= b) in numpy's sort order, where nan sorts after every
    number (and equals itself)."""
    if not is_float_dtype(a.dtype) and a.dtype not in ("complex64", "complex128"):
        return op("less_equal" if or_equal else "less", a, b)
    b_nan = op("isnan", b)
    if or_equal:
        return op("logical_or", op("less_equal", a, b), b_nan)
    return op("logical_or", op("less", a, b), op("logical_and", b_nan, op("logical_not", op("isnan", a))))


@sparse.on_sparse_input_or_flag(sparse.bincount)
def bincount(x, weights=None, minlength=0, sparse=False):
    if sparse:
        raise ValueError("Unsupported value `sparse=True` with swift backend")
    x = convert_to_tensor(x)
    if not is_int_dtype(x.dtype):
        raise TypeError(f"bincount: `x` must be integers, got {x.dtype}")
    if weights is not None:
        weights = convert_to_tensor(weights)
        dtype = result_type(x.dtype, weights.dtype)
    else:
        dtype = "int32"
    length = builtins.max(int(minlength), int(op("max", x)) + 1 if x.size else 0)
    hot = op("one_hot", cast(x, "int32"), num_classes=length, axis=-1, dtype=dtype)
    if weights is not None:
        hot = op("multiply", hot, op("reshape", cast(weights, dtype), shape=[*weights.shape, 1]))
    return op("sum", hot, axes=[x.ndim - 1], keepdims=False)


def unravel_index(indices, shape):
    indices = convert_to_tensor(indices)
    dtype = result_type(indices.dtype)
    indices = cast(indices, dtype)
    out = []
    for d in reversed(_shape_list(shape)):
        dt = _scalar(d, dtype)
        out.append(op("mod", indices, dt))
        indices = op("floor_divide", indices, dt)
    return tuple(reversed(out))


# ---------------------------------------------------------------------------
# sorting, cumulative ops, quantiles
# ---------------------------------------------------------------------------


def sort(x, axis=-1):
    x = convert_to_tensor(x)
    if axis is None:
        return op("sort", op("reshape", x, shape=[-1]), axis=0)
    return op("sort", x, axis=int(axis))


def argsort(x, axis=-1):
    x = convert_to_tensor(x)
    if axis is None or x.ndim == 0:  # numpy: a scalar sorts as a 1-element array
        return op("argsort", op("reshape", x, shape=[-1]), axis=0)
    return op("argsort", x, axis=int(axis))


def argpartition(x, kth, axis=-1):
    # A full (stable) sort is a valid partition around every kth.
    x = convert_to_tensor(x)
    if axis is None:
        x, axis = op("reshape", x, shape=[-1]), 0
    n = x.shape[axis]
    for k in np.asarray(kth).reshape(-1):
        if not -n <= int(k) < n:
            raise ValueError(f"kth(={int(k)}) out of bounds ({n})")
    return op("argsort", x, axis=int(axis))


def _cumulative(name, x, axis, dtype):
    x = convert_to_tensor(x)
    dtype = result_type(dtype or x.dtype)
    if dtype == "bool":
        dtype = "int32"
    x = cast(x, dtype)
    if axis is None:
        return op(name, x)
    return op(name, x, axis=int(axis))


def cumsum(x, axis=None, dtype=None):
    return _cumulative("cumsum", x, axis, dtype)


def cumprod(x, axis=None, dtype=None):
    return _cumulative("cumprod", x, axis, dtype)


def nancumsum(x, axis=None, dtype=None):
    return _cumulative("cumsum", _nan_filled(x, 0), axis, dtype)


def nancumprod(x, axis=None, dtype=None):
    return _cumulative("cumprod", _nan_filled(x, 1), axis, dtype)


def nonzero(x):
    x = convert_to_tensor(x)
    coords = op("nonzero", x)  # (count, rank) int64
    return tuple(
        cast(coords[:, i], "int32") for i in range(coords.shape[1])
    )


def _quantile(x, q, axis, method, keepdims, ignore_nan):
    """numpy's quantile (q in [0, 1]) via the engine's sort (NaN last)."""
    if method not in ("linear", "lower", "higher", "midpoint", "nearest"):
        raise ValueError(f"Unsupported quantile method: {method}")
    x = convert_to_tensor(x)
    if x.dtype == "bool" or x.dtype == "int64":
        dtype = floatx()
    else:
        dtype = result_type(x.dtype, float)
    x = cast(x, dtype)
    q = convert_to_tensor(q, dtype)
    axes = _canonical_axes(axis, x.ndim)
    kept = [i for i in range(x.ndim) if i not in axes]
    y = _move_to_end(x, axes)
    y = op("reshape", y, shape=[x.shape[i] for i in kept] + [-1])
    y = op("sort", y, axis=-1)
    n_total = y.shape[-1]
    qv = op("reshape", q, shape=[-1])
    lead = list(y.shape[:-1])
    if ignore_nan:
        valid = cast(op("logical_not", op("isnan", y)), dtype)
        n = op("sum", valid, axes=[-1], keepdims=True)
    else:
        n = convert_to_tensor(n_total, dtype)
    pos = op("multiply", qv, op("subtract", n, convert_to_tensor(1, dtype)))
    pos = op("broadcast_to", pos, shape=lead + [qv.shape[0]])
    lo = op("floor", pos)
    hi = op("ceil", pos)
    top = float(builtins.max(n_total - 1, 0))

    def gather(p):
        idx = cast(op("clip", p, min=0.0, max=top), "int32")
        return op("take_along_axis", y, idx, axis=-1)

    if method == "lower":
        out = gather(lo)
    elif method == "higher":
        out = gather(hi)
    elif method == "nearest":
        out = gather(op("round", pos))
    elif method == "midpoint":
        out = op("multiply", op("add", gather(lo), gather(hi)), convert_to_tensor(0.5, dtype))
    else:
        w = op("subtract", pos, lo)
        a, b = gather(lo), gather(hi)
        mixed = op("add", a, op("multiply", w, op("subtract", b, a)))
        out = op("where", op("equal", lo, hi), a, mixed)  # keeps +-inf
    if not ignore_nan:
        has_nan = op("any", op("isnan", y), axes=[-1], keepdims=True)
        out = op("where", has_nan, convert_to_tensor(np.nan, dtype), out)
    # (..., Q) -> (Q, ...), then restore reduced axes for keepdims
    out = op("transpose", out, perm=[out.ndim - 1] + list(range(out.ndim - 1)))
    if keepdims:
        shape = [qv.shape[0]] + [1 if i in axes else x.shape[i] for i in range(x.ndim)]
        out = op("reshape", out, shape=shape)
    if q.ndim == 0:
        out = op("reshape", out, shape=list(out.shape[1:]))
    return out


def quantile(x, q, axis=None, method="linear", keepdims=False):
    return _quantile(x, q, axis, method, keepdims, ignore_nan=False)


def nanquantile(x, q, axis=None, method="linear", keepdims=False):
    return _quantile(x, q, axis, method, keepdims, ignore_nan=True)


def percentile(x, q, axis=None, method="linear", keepdims=False):
    q = op("divide", cast(q, "float32"), convert_to_tensor(100.0, "float32"))
    return _quantile(x, q, axis, method, keepdims, ignore_nan=False)


def nanpercentile(x, q, axis=None, method="linear", keepdims=False):
    q = op("divide", cast(q, "float32"), convert_to_tensor(100.0, "float32"))
    return _quantile(x, q, axis, method, keepdims, ignore_nan=True)


def median(x, axis=None, keepdims=False):
    return _quantile(x, 0.5, axis, "linear", keepdims, ignore_nan=False)


def nanmedian(x, axis=None, keepdims=False):
    return _quantile(x, 0.5, axis, "linear", keepdims, ignore_nan=True)


# ---------------------------------------------------------------------------
# misc
# ---------------------------------------------------------------------------


@sparse.elementwise_unary(linear=True)
def conjugate(x):
    return op("conj", convert_to_tensor(x))


@sparse.elementwise_unary(linear=True)
def conj(x):
    return conjugate(x)


@sparse.elementwise_unary(linear=True)
def real(x):
    return op("real", convert_to_tensor(x))


@sparse.elementwise_unary(linear=True)
def imag(x):
    return op("imag", convert_to_tensor(x))


def angle(x):
    x = convert_to_tensor(x)
    if x.dtype == "int64":
        x = cast(x, floatx())
    elif not x.dtype.startswith("complex"):
        x = cast(x, result_type(x.dtype, float))
    return op("angle", x)


def slogdet(x):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        x = cast(x, result_type(x.dtype, float))
    sign, logabsdet = op("slogdet", x)
    return sign, logabsdet


def trapezoid(y, x=None, dx=1.0, axis=-1):
    y = convert_to_tensor(y)
    dtype = result_type(y.dtype, float)
    y = cast(y, dtype)
    axis = canonicalize_axis(axis, y.ndim)
    mid = op(
        "multiply",
        op("add", _slice_axis(y, axis, 1, None), _slice_axis(y, axis, 0, -1)),
        _scalar(0.5, dtype),
    )
    if x is None:
        return op("multiply", op("sum", mid, axes=[axis], keepdims=False), _scalar(dx, dtype))
    x = cast(convert_to_tensor(x), dtype)
    if x.ndim == 1:
        d = op("subtract", x[1:], x[:-1])
        shape = [1] * y.ndim
        shape[axis] = d.shape[0]
        d = op("reshape", d, shape=shape)
    else:
        d = op("subtract", _slice_axis(x, axis, 1, None), _slice_axis(x, axis, 0, -1))
    return op("sum", op("multiply", mid, d), axes=[axis], keepdims=False)


def vectorize(pyfunc, *, excluded=None, signature=None):
    def vmap(fn, in_axes):
        def mapped(*args):
            n = next(a.shape[0] for a, ax in zip(args, in_axes) if ax == 0)
            outs = []
            for i in range(n):
                outs.append(fn(*[a[i] if ax == 0 else a for a, ax in zip(args, in_axes)]))
            return tree.map_structure(lambda *ys: stack(ys), *outs)

        return mapped

    return vectorize_impl(pyfunc, vmap, excluded=excluded, signature=signature)


def _bitwise(name, x, y):
    x = convert_to_tensor(x)
    y = convert_to_tensor(y)
    dtype = result_type(x.dtype, y.dtype)
    return op(name, cast(x, dtype), cast(y, dtype))


def _shift(name, x, y):
    # A Python int shift count keeps x's dtype (as the numpy and jax backends do).
    x = convert_to_tensor(x)
    if isinstance(y, int) and not isinstance(y, bool):
        return op(name, x, convert_to_tensor(y, x.dtype))
    return _bitwise(name, x, y)


def bitwise_and(x, y):
    return _bitwise("bitwise_and", x, y)


def bitwise_or(x, y):
    return _bitwise("bitwise_or", x, y)


def bitwise_xor(x, y):
    return _bitwise("bitwise_xor", x, y)


def bitwise_invert(x):
    return op("bitwise_invert", convert_to_tensor(x))


def bitwise_not(x):
    return bitwise_invert(x)


def bitwise_left_shift(x, y):
    return _shift("left_shift", x, y)


def left_shift(x, y):
    return bitwise_left_shift(x, y)


def bitwise_right_shift(x, y):
    return _shift("right_shift", x, y)


def right_shift(x, y):
    return bitwise_right_shift(x, y)


def gcd(x1, x2):
    return _bitwise("gcd", x1, x2)


def lcm(x1, x2):
    return _bitwise("lcm", x1, x2)


def nextafter(x1, x2):
    x1 = convert_to_tensor(x1)
    x2 = convert_to_tensor(x2)
    dtype = result_type(x1.dtype, x2.dtype, float)
    return op("nextafter", cast(x1, dtype), cast(x2, dtype))


def i0(x):
    x = convert_to_tensor(x)
    dtype = standardize_dtype(x.dtype)
    if dtype in ("int64", "float64"):
        dtype = "float64"
    elif dtype not in ("bfloat16", "float16"):
        dtype = floatx()
    return op("i0", cast(x, dtype))


def kaiser(x, beta):
    def fn(k, n):
        # I0(beta * sqrt(1 - (2k / (n - 1) - 1)^2)) / I0(beta), in float64 for accuracy
        k = cast(k, "float64")
        r = op("subtract", op("multiply", k, _scalar(2.0 / (n - 1), "float64")), _scalar(1.0, "float64"))
        arg = op("sqrt", op("subtract", _scalar(1.0, "float64"), op("square", r)))
        num = op("i0", op("multiply", arg, _scalar(float(beta), "float64")))
        return op("divide", num, op("i0", _scalar(float(beta), "float64")))

    return _window(x, fn)


def cross(x1, x2, axisa=-1, axisb=-1, axisc=-1, axis=None):
    x1, x2 = _promote(x1, x2)
    if axis is not None:
        axisa = axisb = axisc = axis
    a = moveaxis(x1, axisa, -1)
    b = moveaxis(x2, axisb, -1)
    if a.shape[-1] not in (2, 3) or b.shape[-1] not in (2, 3):
        raise ValueError(
            "Incompatible dimensions for cross product (dimension must be 2 "
            f"or 3). Received: x1.shape={x1.shape}, x2.shape={x2.shape}"
        )
    # A 2-vector is a 3-vector with z = 0: its missing terms are dropped.
    a0, a1 = a[..., 0], a[..., 1]
    b0, b1 = b[..., 0], b[..., 1]
    a2 = a[..., 2] if a.shape[-1] == 3 else None
    b2 = b[..., 2] if b.shape[-1] == 3 else None

    def mul(u, v):
        return None if u is None or v is None else op("multiply", u, v)

    def diff(p, q):
        if p is None and q is None:
            return None
        if q is None:
            return p
        return op("negative", q) if p is None else op("subtract", p, q)

    z = diff(mul(a0, b1), mul(a1, b0))
    if a2 is None and b2 is None:
        return z
    x = diff(mul(a1, b2), mul(a2, b1))
    y = diff(mul(a2, b0), mul(a0, b2))
    shape = list(z.shape)
    x = op("broadcast_to", x, shape=shape)
    y = op("broadcast_to", y, shape=shape)
    c = op("stack", x, y, z, axis=-1)
    return moveaxis(c, -1, axisc)


def _correlation_dtype(*dtypes):
    dtype = result_type(*dtypes)
    if dtype == "int64":
        return "float64"
    if dtype not in ("bfloat16", "float16", "float64"):
        return "float32"
    return dtype


def correlate(x1, x2, mode="valid"):
    x1 = convert_to_tensor(x1)
    x2 = convert_to_tensor(x2)
    dtype = _correlation_dtype(x1.dtype, x2.dtype)
    return op("correlate", cast(x1, dtype), cast(x2, dtype), mode=str(mode))


def corrcoef(x):
    x = convert_to_tensor(x)
    dtype = "float64" if x.dtype == "int64" else result_type(x.dtype, float)
    if x.ndim not in (1, 2):
        raise ValueError(f"corrcoef takes a 1-D or 2-D tensor, got shape {x.shape}")
    compute = "float32" if dtype in ("float16", "bfloat16") else dtype
    rows = op("reshape", cast(x, compute), shape=[-1, x.shape[-1]])
    centred = op(
        "subtract", rows, op("mean", rows, axes=[1], keepdims=True)
    )
    # The 1/(n-1) of the covariance cancels in the normalisation.
    cov = op("matmul", centred, op("transpose", centred, perm=[1, 0]))
    std = op("sqrt", op("sum", op("square", centred), axes=[1], keepdims=True))
    c = op("divide", op("divide", cov, std), op("transpose", std, perm=[1, 0]))
    c = op("clip", c, min=-1.0, max=1.0)
    if x.ndim == 1:
        c = op("reshape", c, shape=[])
    return cast(c, dtype)


def histogram(x, bins=10, range=None):
    x = convert_to_tensor(x)
    if x.ndim != 1:
        raise ValueError(
            f"Input tensor must be 1-dimensional. Received: shape={x.shape}"
        )
    attrs = {"bins": int(bins)}
    if range is not None:
        attrs["min"], attrs["max"] = float(range[0]), float(range[1])
    counts, edges = op("histogram", x, **attrs)
    return counts, edges


def unique(
    x,
    sorted=True,
    return_index=False,
    return_inverse=False,
    return_counts=False,
    axis=None,
    size=None,
    fill_value=None,
):
    # Results always come sorted (sorted=False only allows any order).
    x = convert_to_tensor(x)
    attrs = {}
    if axis is not None:
        attrs["axis"] = int(axis)
    if size is not None:
        attrs["size"] = int(size)
    if fill_value is not None:
        attrs["fill_value"] = float(fill_value)
    values, index, inverse, counts = op("unique", x, **attrs)
    outputs = [values]
    if return_index:
        outputs.append(index)
    if return_inverse:
        outputs.append(inverse)
    if return_counts:
        outputs.append(counts)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def view(x, dtype=None):
    x = convert_to_tensor(x)
    if dtype is None:
        return x
    return op("bitcast", x, dtype=standardize_dtype(dtype))
