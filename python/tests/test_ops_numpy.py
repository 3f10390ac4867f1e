"""keras.ops on KERAS_BACKEND=swift against numpy references.

Each case runs a Keras op in the Swift engine and compares values (and the
Keras result dtype) with numpy. Skipped while ``_swiftkeras`` is not built.
"""

import warnings

import ml_dtypes
import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import ops  # noqa: E402

rng = np.random.default_rng(0)
A = rng.normal(size=(3, 4)).astype("float32")
B = rng.normal(size=(3, 4)).astype("float32")
P = rng.uniform(0.5, 2.0, size=(3, 4)).astype("float32")  # positive
U = rng.uniform(-0.9, 0.9, size=(3, 4)).astype("float32")  # in (-1, 1)
M = rng.normal(size=(4, 5)).astype("float32")
T3 = rng.normal(size=(2, 3, 4)).astype("float32")
I = rng.integers(-5, 6, size=(3, 4)).astype("int32")
J = rng.integers(1, 4, size=(3, 4)).astype("int32")
IDX = np.array([2, 0, 1, 2], "int32")
V = rng.normal(size=(5,)).astype("float32")


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# (id, keras callable, numpy callable, args)
CASES = [
    # elementwise arithmetic
    ("add", ops.add, np.add, (A, B)),
    ("add_scalar", lambda x: ops.add(x, 2.5), lambda x: x + 2.5, (A,)),
    ("subtract", ops.subtract, np.subtract, (A, B)),
    ("multiply_bcast", ops.multiply, np.multiply, (A, V[:4])),
    ("divide", ops.divide, np.divide, (A, P)),
    ("divide_int", ops.divide, lambda x, y: (x / y).astype("float32"), (I, J)),
    ("divide_no_nan", ops.divide_no_nan,
     lambda x, y: np.where(y == 0, 0, x / np.where(y == 0, 1, y)),
     (A, np.where(B > 0, B, 0).astype("float32"))),
    ("floor_divide", ops.floor_divide, np.floor_divide, (I, J)),
    ("bitwise_and", ops.bitwise_and, np.bitwise_and, (I, J)),
    ("bitwise_or", ops.bitwise_or, np.bitwise_or, (I, J)),
    ("bitwise_xor", ops.bitwise_xor, np.bitwise_xor, (I, J)),
    ("bitwise_invert", ops.bitwise_invert, np.invert, (I,)),
    ("left_shift", ops.left_shift, np.left_shift, (I, J)),
    ("right_shift_int", lambda x: ops.right_shift(x, 1), lambda x: x >> 1, (I,)),
    ("gcd", ops.gcd, np.gcd, (I, J)),
    ("lcm", ops.lcm, np.lcm, (I, J)),
    ("nextafter", ops.nextafter, np.nextafter, (A, B)),
    ("i0", ops.i0, lambda x: np.i0(x).astype("float32"), (A,)),
    ("kaiser", lambda: ops.kaiser(7, 2.5), lambda: np.kaiser(7, 2.5).astype("float32"), ()),
    ("mod", ops.mod, np.mod, (I, J)),
    ("power", ops.power, np.power, (P, A)),
    ("maximum", ops.maximum, np.maximum, (A, B)),
    ("minimum", ops.minimum, np.minimum, (A, B)),
    ("arctan2", ops.arctan2, np.arctan2, (A, B)),
    ("hypot", ops.hypot, np.hypot, (A, B)),
    ("logaddexp", ops.logaddexp, np.logaddexp, (A, B)),
    ("negative", ops.negative, np.negative, (A,)),
    ("abs", ops.abs, np.abs, (A,)),
    ("abs_int", ops.abs, np.abs, (I,)),
    ("sign", ops.sign, np.sign, (A,)),
    ("square", ops.square, np.square, (A,)),
    ("sqrt", ops.sqrt, np.sqrt, (P,)),
    ("cbrt", ops.cbrt, np.cbrt, (A,)),
    ("reciprocal", ops.reciprocal, np.reciprocal, (P,)),
    ("exp", ops.exp, np.exp, (A,)),
    ("exp_int", ops.exp, lambda x: np.exp(x).astype("float32"), (I,)),
    ("exp2", ops.exp2, np.exp2, (A,)),
    ("expm1", ops.expm1, np.expm1, (A,)),
    ("log", ops.log, np.log, (P,)),
    ("log1p", ops.log1p, np.log1p, (P,)),
    ("log2", ops.log2, np.log2, (P,)),
    ("log10", ops.log10, np.log10, (P,)),
    ("sin", ops.sin, np.sin, (A,)),
    ("cos", ops.cos, np.cos, (A,)),
    ("tan", ops.tan, np.tan, (U,)),
    ("arcsin", ops.arcsin, np.arcsin, (U,)),
    ("arccos", ops.arccos, np.arccos, (U,)),
    ("arctan", ops.arctan, np.arctan, (A,)),
    ("sinh", ops.sinh, np.sinh, (A,)),
    ("cosh", ops.cosh, np.cosh, (A,)),
    ("tanh", ops.tanh, np.tanh, (A,)),
    ("arcsinh", ops.arcsinh, np.arcsinh, (A,)),
    ("arccosh", ops.arccosh, np.arccosh, (P + 1,)),
    ("arctanh", ops.arctanh, np.arctanh, (U,)),
    ("sinc", ops.sinc, np.sinc, (A,)),
    ("floor", ops.floor, np.floor, (A * 3,)),
    ("ceil", ops.ceil, np.ceil, (A * 3,)),
    ("trunc", ops.trunc, np.trunc, (A * 3,)),
    ("round", ops.round, np.round, (A * 3,)),
    ("round_decimals", lambda x: ops.round(x, 2), lambda x: np.round(x, 2), (A,)),
    ("clip", lambda x: ops.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), (A,)),
    ("nan_to_num", ops.nan_to_num,
     lambda x: np.nan_to_num(x),
     (np.array([np.nan, np.inf, -np.inf, 1.0], "float32"),)),
    # comparisons / logic
    ("equal", ops.equal, np.equal, (I, J)),
    ("not_equal", ops.not_equal, np.not_equal, (I, J)),
    ("less", ops.less, np.less, (A, B)),
    ("less_equal", ops.less_equal, np.less_equal, (I, J)),
    ("greater", ops.greater, np.greater, (A, B)),
    ("greater_equal", ops.greater_equal, np.greater_equal, (I, J)),
    ("logical_and", ops.logical_and, np.logical_and, (A > 0, B > 0)),
    ("logical_or", ops.logical_or, np.logical_or, (A > 0, B > 0)),
    ("logical_xor", ops.logical_xor, np.logical_xor, (A > 0, B > 0)),
    ("logical_not", ops.logical_not, np.logical_not, (A > 0,)),
    ("isclose", ops.isclose, np.isclose, (A, A + 1e-9)),
    ("isnan", ops.isnan, np.isnan, (np.array([np.nan, 1.0], "float32"),)),
    ("isinf", ops.isinf, np.isinf, (np.array([np.inf, 1.0], "float32"),)),
    ("isfinite", ops.isfinite, np.isfinite,
     (np.array([np.inf, np.nan, 1.0], "float32"),)),
    ("where", ops.where, np.where, (A > 0, A, B)),
    ("where_scalar", lambda c, x: ops.where(c, x, 0.0),
     lambda c, x: np.where(c, x, 0.0).astype("float32"), (A > 0, A)),
    ("isin", ops.isin, np.isin, (I, np.array([0, 1, 2], "int32"))),
    # reductions
    ("sum", ops.sum, np.sum, (A,)),
    ("sum_axis", lambda x: ops.sum(x, axis=1), lambda x: np.sum(x, axis=1), (A,)),
    ("sum_keepdims", lambda x: ops.sum(x, axis=(0, 2), keepdims=True),
     lambda x: np.sum(x, axis=(0, 2), keepdims=True), (T3,)),
    ("sum_bool", ops.sum, lambda x: np.sum(x).astype("int32"), (A > 0,)),
    ("mean", lambda x: ops.mean(x, axis=-1), lambda x: np.mean(x, axis=-1), (A,)),
    ("mean_int", ops.mean, lambda x: np.mean(x).astype("float32"), (I,)),
    ("prod", lambda x: ops.prod(x, axis=0), lambda x: np.prod(x, axis=0), (P,)),
    ("max", lambda x: ops.max(x, axis=1), lambda x: np.max(x, axis=1), (A,)),
    ("min", ops.min, np.min, (A,)),
    ("amax", lambda x: ops.amax(x, axis=0), lambda x: np.amax(x, axis=0), (A,)),
    ("ptp", lambda x: ops.ptp(x, axis=1), lambda x: np.ptp(x, axis=1), (A,)),
    ("all", lambda x: ops.all(x, axis=1), lambda x: np.all(x, axis=1), (A > -1,)),
    ("any", ops.any, np.any, (A > 1,)),
    ("argmax", lambda x: ops.argmax(x, axis=1),
     lambda x: np.argmax(x, axis=1).astype("int32"), (A,)),
    ("argmin", ops.argmin, lambda x: np.argmin(x).astype("int32"), (A,)),
    ("var", lambda x: ops.var(x, axis=0), lambda x: np.var(x, axis=0), (A,)),
    ("std", ops.std, np.std, (A,)),
    ("count_nonzero", ops.count_nonzero,
     lambda x: np.int32(np.count_nonzero(x)), (I,)),
    ("average", lambda x, w: ops.average(x, axis=1, weights=w),
     lambda x, w: np.average(x, axis=1, weights=w), (A, P[0])),
    ("logsumexp", lambda x: ops.logsumexp(x, axis=1),
     lambda x: np.log(np.exp(x).sum(axis=1)), (A,)),
    # linear algebra
    ("matmul", ops.matmul, np.matmul, (A, M)),
    ("matmul_batched", ops.matmul, np.matmul, (T3, M)),
    ("matmul_vec", ops.matmul, np.matmul, (A, A[0])),
    ("dot", ops.dot, np.dot, (A, M)),
    ("tensordot", lambda x, y: ops.tensordot(x, y, axes=1),
     lambda x, y: np.tensordot(x, y, axes=1), (A, M)),
    ("einsum_matmul", lambda x, y: ops.einsum("ij,jk->ik", x, y),
     lambda x, y: np.einsum("ij,jk->ik", x, y), (A, M)),
    ("einsum_batch", lambda x, y: ops.einsum("bij,jk->bki", x, y),
     lambda x, y: np.einsum("bij,jk->bki", x, y), (T3, M)),
    ("einsum_trace_free", lambda x: ops.einsum("ij->j", x),
     lambda x: np.einsum("ij->j", x), (A,)),
    ("einsum_outer", lambda x, y: ops.einsum("i,j", x, y),
     lambda x, y: np.einsum("i,j", x, y), (V, V[:3])),
    ("einsum_ellipsis", lambda x, y: ops.einsum("...ij,...jk->...ik", x, y),
     lambda x, y: np.einsum("...ij,...jk->...ik", x, y), (T3, M)),
    ("outer", ops.outer, np.outer, (V, V)),
    ("inner", ops.inner, np.inner, (A, B)),
    ("vdot", ops.vdot, np.vdot, (A, B)),
    ("kron", ops.kron, np.kron, (A[:2, :2], B[:2, :3])),
    ("trace", ops.trace, np.trace, (A,)),
    ("diagonal", lambda x: ops.diagonal(x, offset=1),
     lambda x: np.diagonal(x, offset=1), (A,)),
    ("diag_vec", lambda x: ops.diag(x, k=-1), lambda x: np.diag(x, k=-1), (V,)),
    ("diag_mat", ops.diag, np.diag, (A,)),
    ("norm", ops.norm, np.linalg.norm, (A,)),
    ("norm_axis", lambda x: ops.norm(x, ord=1, axis=1),
     lambda x: np.linalg.norm(x, ord=1, axis=1), (A,)),
    # creation
    ("zeros", lambda: ops.zeros((2, 3)), lambda: np.zeros((2, 3), "float32"), ()),
    ("ones_int", lambda: ops.ones((2,), "int32"), lambda: np.ones((2,), "int32"), ()),
    ("full", lambda: ops.full((2, 2), 7.0), lambda: np.full((2, 2), 7.0, "float32"), ()),
    ("arange", lambda: ops.arange(2, 11, 3), lambda: np.arange(2, 11, 3, dtype="int32"), ()),
    ("arange_float", lambda: ops.arange(0.0, 1.0, 0.25),
     lambda: np.arange(0.0, 1.0, 0.25, dtype="float32"), ()),
    ("eye", lambda: ops.eye(3, 4, k=1), lambda: np.eye(3, 4, k=1, dtype="float32"), ()),
    ("tri", lambda: ops.tri(3, 4, k=-1), lambda: np.tri(3, 4, k=-1, dtype="float32"), ()),
    ("tril", ops.tril, np.tril, (A,)),
    ("triu", lambda x: ops.triu(x, k=1), lambda x: np.triu(x, k=1), (A,)),
    ("linspace", lambda: ops.linspace(0.0, 1.0, 5),
     lambda: np.linspace(0.0, 1.0, 5, dtype="float32"), ()),
    ("zeros_like", ops.zeros_like, np.zeros_like, (I,)),
    ("ones_like", ops.ones_like, np.ones_like, (A,)),
    ("full_like", lambda x: ops.full_like(x, 3), lambda x: np.full_like(x, 3), (A,)),
    ("hanning", lambda: ops.hanning(6), lambda: np.hanning(6).astype("float32"), ()),
    # shape manipulation
    ("reshape", lambda x: ops.reshape(x, (4, -1)), lambda x: x.reshape(4, -1), (A,)),
    ("transpose", ops.transpose, np.transpose, (T3,)),
    ("transpose_axes", lambda x: ops.transpose(x, (1, 2, 0)),
     lambda x: np.transpose(x, (1, 2, 0)), (T3,)),
    ("expand_dims", lambda x: ops.expand_dims(x, -1),
     lambda x: np.expand_dims(x, -1), (A,)),
    ("squeeze", lambda x: ops.squeeze(x, 1),
     lambda x: np.squeeze(x, 1), (A[:, :1],)),
    ("broadcast_to", lambda x: ops.broadcast_to(x, (2, 3, 4)),
     lambda x: np.broadcast_to(x, (2, 3, 4)), (A,)),
    ("moveaxis", lambda x: ops.moveaxis(x, 0, -1), lambda x: np.moveaxis(x, 0, -1), (T3,)),
    ("swapaxes", lambda x: ops.swapaxes(x, 0, 2), lambda x: np.swapaxes(x, 0, 2), (T3,)),
    ("concatenate", lambda x, y: ops.concatenate([x, y], axis=1),
     lambda x, y: np.concatenate([x, y], axis=1), (A, B)),
    ("concatenate_promote", lambda x, y: ops.concatenate([x, y]),
     lambda x, y: np.concatenate([x, y]).astype("float32"), (A, I)),
    ("stack", lambda x, y: ops.stack([x, y], axis=1),
     lambda x, y: np.stack([x, y], axis=1), (A, B)),
    ("hstack", lambda x, y: ops.hstack([x, y]), lambda x, y: np.hstack([x, y]), (A, B)),
    ("vstack", lambda x, y: ops.vstack([x, y]), lambda x, y: np.vstack([x, y]), (A, B)),
    ("split", lambda x: ops.split(x, 2, axis=1), lambda x: np.split(x, 2, axis=1), (A,)),
    ("split_indices", lambda x: ops.split(x, [1, 3], axis=1),
     lambda x: np.split(x, [1, 3], axis=1), (A,)),
    ("array_split", lambda x: ops.array_split(x, 3, axis=1),
     lambda x: np.array_split(x, 3, axis=1), (A,)),
    ("flip", lambda x: ops.flip(x, axis=1), lambda x: np.flip(x, axis=1), (A,)),
    ("flip_all", ops.flip, np.flip, (T3,)),
    ("rot90", ops.rot90, np.rot90, (A,)),
    ("roll", lambda x: ops.roll(x, 2, axis=1), lambda x: np.roll(x, 2, axis=1), (A,)),
    ("roll_flat", lambda x: ops.roll(x, -3), lambda x: np.roll(x, -3), (A,)),
    ("repeat", lambda x: ops.repeat(x, 2, axis=0), lambda x: np.repeat(x, 2, axis=0), (A,)),
    ("repeat_list", lambda x: ops.repeat(x, [1, 0, 2], axis=0),
     lambda x: np.repeat(x, [1, 0, 2], axis=0), (A,)),
    ("tile", lambda x: ops.tile(x, (2, 1, 2)), lambda x: np.tile(x, (2, 1, 2)), (A,)),
    ("pad", lambda x: ops.pad(x, ((1, 0), (2, 1))),
     lambda x: np.pad(x, ((1, 0), (2, 1))), (A,)),
    ("pad_reflect", lambda x: ops.pad(x, ((1, 1), (2, 1)), mode="reflect"),
     lambda x: np.pad(x, ((1, 1), (2, 1)), mode="reflect"), (A,)),
    ("pad_symmetric", lambda x: ops.pad(x, ((1, 2), (0, 1)), mode="symmetric"),
     lambda x: np.pad(x, ((1, 2), (0, 1)), mode="symmetric"), (A,)),
    ("diff", lambda x: ops.diff(x, axis=1), lambda x: np.diff(x, axis=1), (A,)),
    ("ravel", ops.ravel, np.ravel, (T3,)),
    # indexing
    ("take", lambda x, i: ops.take(x, i, axis=1), lambda x, i: np.take(x, i, axis=1), (A, IDX)),
    ("take_flat", ops.take, np.take, (A, np.array([[0, 11], [5, -1]], "int32"))),
    ("take_along_axis", lambda x, i: ops.take_along_axis(x, i, axis=1),
     lambda x, i: np.take_along_axis(x, i, axis=1),
     (A, np.argsort(A, axis=1).astype("int32"))),
    ("searchsorted", ops.searchsorted, lambda s, v: np.searchsorted(s, v).astype("int32"),
     (np.array([1.0, 2.0, 3.0], "float32"), np.array([0.5, 2.0, 3.5], "float32"))),
    ("digitize", ops.digitize, lambda x, b: np.digitize(x, b).astype("int32"),
     (A, np.array([-1.0, 0.0, 1.0], "float32"))),
    ("bincount", ops.bincount, lambda x: np.bincount(x).astype("int32"),
     (np.array([0, 1, 1, 4], "int32"),)),
    ("select", lambda c1, c2, x: ops.select([c1, c2], [x, -x]),
     lambda c1, c2, x: np.select([c1, c2], [x, -x]), (A > 0.5, A < -0.5, A)),
    ("one_hot", lambda i: ops.one_hot(i, 3), lambda i: np.eye(3, dtype="float32")[i],
     (IDX,)),
    # sorting, cumulative, quantiles
    ("sort", ops.sort, np.sort, (A,)),
    ("sort_axis0", lambda x: ops.sort(x, axis=0), lambda x: np.sort(x, axis=0), (I,)),
    ("argsort", ops.argsort, lambda x: np.argsort(x, kind="stable").astype("int32"), (A,)),
    ("cumsum", lambda x: ops.cumsum(x, axis=1), lambda x: np.cumsum(x, axis=1), (A,)),
    ("cumsum_flat_int", ops.cumsum, lambda x: np.cumsum(x).astype("int32"), (I,)),
    ("cumprod", lambda x: ops.cumprod(x, axis=0), lambda x: np.cumprod(x, axis=0), (P,)),
    ("median", lambda x: ops.median(x, axis=1), lambda x: np.median(x, axis=1), (A,)),
    ("quantile", lambda x: ops.quantile(x, [0.1, 0.5, 0.9], axis=0),
     lambda x: np.quantile(x, [0.1, 0.5, 0.9], axis=0).astype("float32"), (A,)),
    ("quantile_keepdims", lambda x: ops.quantile(x, 0.3, axis=(0, 2), keepdims=True),
     lambda x: np.quantile(x, 0.3, axis=(0, 2), keepdims=True).astype("float32"), (T3,)),
    ("percentile_lower", lambda x: ops.percentile(x, 40, method="lower"),
     lambda x: np.percentile(x, 40, method="lower"), (A,)),
    ("nanmedian", ops.nanmedian, np.nanmedian,
     (np.array([1.0, np.nan, 3.0, 7.0], "float32"),)),
    ("nonzero", ops.nonzero, lambda x: tuple(i.astype("int32") for i in np.nonzero(x)), (I,)),
    ("where_1arg", ops.where, lambda x: tuple(i.astype("int32") for i in np.where(x)), (A > 0,)),
    ("top_k", lambda x: ops.top_k(x, 2),
     lambda x: (np.sort(x, axis=-1)[:, ::-1][:, :2],
                np.argsort(-x, axis=-1, kind="stable")[:, :2].astype("int32")), (A,)),
    ("in_top_k", lambda t, p: ops.in_top_k(t, p, 2),
     lambda t, p: np.array([t[i] in np.argsort(-p[i])[:2] for i in range(len(t))]),
     (np.array([0, 1, 3], "int32"), A)),
    ("segment_sum", lambda d, i: ops.segment_sum(d, i, num_segments=3),
     lambda d, i: np.stack([d[i == k].sum(0) for k in range(3)]),
     (A, np.array([0, 2, 0], "int32"))),
    ("segment_max", lambda d, i: ops.segment_max(d, i),
     lambda d, i: np.stack([d[i == k].max(0) for k in range(2)]),
     (A, np.array([1, 0, 1], "int32"))),
    # activations
    ("relu", keras.activations.relu, lambda x: np.maximum(x, 0), (A,)),
    ("sigmoid", ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (A,)),
    ("softmax", ops.softmax, _softmax, (A,)),
    ("softmax_axis0", lambda x: ops.softmax(x, axis=0), lambda x: _softmax(x, 0), (A,)),
    ("log_softmax", ops.log_softmax, lambda x: np.log(_softmax(x)), (A,)),
    ("softplus", ops.softplus, lambda x: np.log1p(np.exp(x)), (A,)),
    ("silu", ops.silu, lambda x: x / (1 + np.exp(-x)), (A,)),
    ("leaky_relu", ops.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x), (A,)),
    ("elu", ops.elu, lambda x: np.where(x > 0, x, np.expm1(x)), (A,)),
    ("hard_sigmoid", ops.hard_sigmoid, lambda x: np.clip(x / 6 + 0.5, 0, 1), (A * 4,)),
    ("gelu_tanh", ops.gelu,
     lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
     (A,)),
]


@pytest.mark.parametrize(
    "keras_fn, numpy_fn, args", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_op_matches_numpy(keras_fn, numpy_fn, args):
    got = keras_fn(*args)
    want = numpy_fn(*args)
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        pairs = list(zip(got, want))
    else:
        pairs = [(got, want)]
    for g, w in pairs:
        assert ops.is_tensor(g), type(g)
        g = ops.convert_to_numpy(g)
        w = np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(g, w)
        if w.dtype != np.float64:  # numpy's float64 is Keras's float32
            assert g.dtype == w.dtype, (g.dtype, w.dtype)


def test_nn_conv_and_pool_against_reference():
    x = rng.normal(size=(2, 6, 7, 3)).astype("float32")
    k = rng.normal(size=(3, 3, 3, 4)).astype("float32")

    def conv_valid(x, k, stride=1):
        kh, kw = k.shape[:2]
        oh = (x.shape[1] - kh) // stride + 1
        ow = (x.shape[2] - kw) // stride + 1
        out = np.zeros((x.shape[0], oh, ow, k.shape[3]), "float32")
        for i in range(oh):
            for j in range(ow):
                patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
                out[:, i, j, :] = np.tensordot(patch, k, axes=([1, 2, 3], [0, 1, 2]))
        return out

    got = ops.convert_to_numpy(ops.conv(x, k))
    np.testing.assert_allclose(got, conv_valid(x, k), rtol=1e-4, atol=1e-4)
    got = ops.convert_to_numpy(ops.conv(x, k, strides=2))
    np.testing.assert_allclose(got, conv_valid(x, k, 2), rtol=1e-4, atol=1e-4)
    same = ops.convert_to_numpy(ops.conv(x, k, padding="same"))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    np.testing.assert_allclose(same, conv_valid(padded, k), rtol=1e-4, atol=1e-4)
    # channels_first gives the transposed result
    cf = ops.conv(np.transpose(x, (0, 3, 1, 2)), k, data_format="channels_first")
    np.testing.assert_allclose(
        np.transpose(ops.convert_to_numpy(cf), (0, 2, 3, 1)), conv_valid(x, k),
        rtol=1e-4, atol=1e-4,
    )
    # 1-D conv
    x1 = rng.normal(size=(2, 9, 3)).astype("float32")
    k1 = rng.normal(size=(2, 3, 5)).astype("float32")
    got1 = ops.convert_to_numpy(ops.conv(x1, k1))
    want1 = conv_valid(x1[:, None], k1[None])[:, 0]
    np.testing.assert_allclose(got1, want1, rtol=1e-4, atol=1e-4)
    # depthwise conv == grouped conv with one input channel per group
    dk = rng.normal(size=(3, 3, 3, 2)).astype("float32")
    got = ops.convert_to_numpy(ops.depthwise_conv(x, dk))
    want = np.concatenate(
        [conv_valid(x[..., c:c + 1], dk[:, :, c:c + 1, :]) for c in range(3)], axis=-1
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # pooling
    mp = ops.convert_to_numpy(ops.max_pool(x, 2))
    np.testing.assert_allclose(
        mp, x[:, :6, :6].reshape(2, 3, 2, 3, 2, 3).max(axis=(2, 4))
    )
    ap = ops.convert_to_numpy(ops.average_pool(x, 2))
    np.testing.assert_allclose(
        ap, x[:, :6, :6].reshape(2, 3, 2, 3, 2, 3).mean(axis=(2, 4)),
        rtol=1e-5, atol=1e-6,
    )


def test_conv_transpose_is_the_adjoint_of_conv():
    # <conv(z), x> == <z, conv_transpose(x)> for matching "valid" geometry
    for strides, dilation in [(1, 1), (2, 1), (1, 2), (3, 1)]:
        k = rng.normal(size=(3, 3, 2, 4)).astype("float32")  # (kh, kw, in, out)
        z = rng.normal(size=(2, 9, 9, 2)).astype("float32")
        y = ops.conv(z, k, strides=strides, dilation_rate=dilation)
        x = rng.normal(size=ops.shape(y)).astype("float32")
        # conv_transpose kernels are (kh, kw, out_channels, in_channels);
        # output_padding recovers the rows the strided conv dropped.
        dilated_kernel = 2 * dilation + 1
        output_padding = 9 - ((y.shape[1] - 1) * strides + dilated_kernel)
        zt = ops.conv_transpose(
            x, k, strides=strides, dilation_rate=dilation,
            output_padding=output_padding,
        )
        assert ops.shape(zt) == z.shape
        lhs = float(np.sum(ops.convert_to_numpy(y) * x))
        rhs = float(np.sum(z * ops.convert_to_numpy(zt)))
        np.testing.assert_allclose(lhs, rhs, rtol=1e-4)
    same = ops.conv_transpose(
        np.ones((1, 4, 4, 3), "float32"), np.ones((3, 3, 5, 3), "float32"),
        strides=2, padding="same",
    )
    assert ops.shape(same) == (1, 8, 8, 5)


def test_linalg_and_fft_against_numpy():
    a = rng.normal(size=(4, 4)).astype("float32")
    spd = (a @ a.T + 4 * np.eye(4)).astype("float32")
    b = rng.normal(size=(4, 2)).astype("float32")

    def close(got, want, tol=1e-3):
        np.testing.assert_allclose(ops.convert_to_numpy(got), want, rtol=tol, atol=tol)

    close(ops.linalg.inv(a), np.linalg.inv(a))
    close(ops.linalg.det(a), np.linalg.det(a))
    close(ops.linalg.cholesky(spd), np.linalg.cholesky(spd))
    close(ops.linalg.cholesky_inverse(np.linalg.cholesky(spd)), np.linalg.inv(spd))
    close(ops.linalg.solve(a, b), np.linalg.solve(a, b))
    close(ops.linalg.solve(a, b[:, 0]), np.linalg.solve(a, b[:, 0]))
    close(
        ops.linalg.solve_triangular(np.tril(spd), b, lower=True),
        np.linalg.solve(np.tril(spd), b),
    )
    close(ops.linalg.svd(a, compute_uv=False), np.linalg.svd(a, compute_uv=False))
    close(ops.linalg.pinv(a[:, :3]), np.linalg.pinv(a[:, :3]))
    close(ops.linalg.lstsq(a[:, :3], b), np.linalg.lstsq(a[:, :3], b, rcond=None)[0])
    close(ops.linalg.eigh(spd)[0], np.linalg.eigh(spd)[0])
    close(ops.linalg.norm(a, ord=2), np.linalg.norm(a, ord=2))
    close(ops.linalg.norm(a, ord="nuc"), np.linalg.norm(a, ord="nuc"))
    assert int(ops.linalg.matrix_rank(np.outer(b[:, 0], b[:, 1]))) == 1
    sign, logdet = ops.slogdet(a)
    close(sign, np.linalg.slogdet(a)[0])
    close(logdet, np.linalg.slogdet(a)[1])
    q, r = ops.linalg.qr(a[:, :3])
    close(ops.matmul(q, r), a[:, :3])
    close(ops.matmul(ops.transpose(q), q), np.eye(3))

    x = rng.normal(size=(3, 8)).astype("float32")
    y = rng.normal(size=(3, 8)).astype("float32")
    for got, want in [
        (ops.fft((x, y)), np.fft.fft(x + 1j * y)),
        (ops.fft2((x, y)), np.fft.fft2(x + 1j * y)),
        (ops.ifft2((x, y)), np.fft.ifft2(x + 1j * y)),
        (ops.rfft(x), np.fft.rfft(x)),
        (ops.rfft(x, 11), np.fft.rfft(x, 11)),
    ]:
        close(got[0], want.real)
        close(got[1], want.imag)
    spectrum = np.fft.rfft(x)
    for n in (None, 7, 12):
        close(
            ops.irfft((spectrum.real.astype("float32"),
                       spectrum.imag.astype("float32")), n),
            np.fft.irfft(spectrum, n),
        )


def test_losses_and_normalization_against_reference():
    logits = rng.normal(size=(5, 4)).astype("float32")
    labels = np.array([0, 3, 1, 2, 3])
    probs = _softmax(logits)
    want = -np.log(probs[np.arange(5), labels])
    got = ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(ops.convert_to_numpy(got), want, rtol=1e-5)
    got = ops.categorical_crossentropy(np.eye(4)[labels], probs)
    np.testing.assert_allclose(ops.convert_to_numpy(got), want, rtol=1e-4)
    t = (rng.uniform(size=(5, 4)) > 0.5).astype("float32")
    p = 1 / (1 + np.exp(-logits))
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    got = ops.binary_crossentropy(t, logits, from_logits=True)
    np.testing.assert_allclose(ops.convert_to_numpy(got), bce, rtol=1e-4, atol=1e-6)
    mean, var = ops.moments(T3, axes=[0, 1])
    np.testing.assert_allclose(ops.convert_to_numpy(mean), T3.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(var), T3.var(axis=(0, 1)), rtol=1e-4, atol=1e-6)
    bn = ops.batch_normalization(A, A.mean(0), A.var(0), axis=1, epsilon=1e-3)
    np.testing.assert_allclose(
        ops.convert_to_numpy(bn), (A - A.mean(0)) / np.sqrt(A.var(0) + 1e-3),
        rtol=1e-4, atol=1e-5,
    )


def test_core_control_flow_and_scatter():
    total = ops.fori_loop(0, 5, lambda i, acc: acc + i, ops.convert_to_tensor(0))
    assert int(total) == 10
    carry, ys = ops.scan(lambda c, x: (c + x, c * x), 0.0, np.arange(4.0, dtype="float32"))
    assert float(carry) == 6.0
    np.testing.assert_allclose(ops.convert_to_numpy(ys), [0, 0, 2, 9])
    out = ops.while_loop(lambda i: i < 7, lambda i: i + 2, ops.convert_to_tensor(0))
    assert int(out) == 8
    s = ops.scatter(np.array([[0, 1], [2, 2], [0, 1]]), np.array([1.0, 2.0, 3.0], "float32"), (3, 3))
    want = np.zeros((3, 3), "float32")
    want[0, 1], want[2, 2] = 4.0, 2.0
    np.testing.assert_array_equal(ops.convert_to_numpy(s), want)
    u = ops.slice_update(np.zeros((3, 4), "float32"), (1, 1), np.ones((2, 2), "float32"))
    want = np.zeros((3, 4), "float32")
    want[1:3, 1:3] = 1
    np.testing.assert_array_equal(ops.convert_to_numpy(u), want)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(ops.slice(A, (1, 1), (2, 3))), A[1:3, 1:4]
    )
    parts = ops.unstack(A, axis=1)
    assert len(parts) == 4
    np.testing.assert_array_equal(ops.convert_to_numpy(parts[2]), A[:, 2])
    cs = ops.associative_scan(lambda a, b: a + b, np.arange(1.0, 8.0, dtype="float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(cs), np.cumsum(np.arange(1.0, 8.0)))
    vm = ops.vectorized_map(lambda row: ops.sum(row), A)
    np.testing.assert_allclose(ops.convert_to_numpy(vm), A.sum(1), rtol=1e-5)
    assert ops.cond(True, lambda: 1, lambda: 2) == 1
    assert ops.switch(1, [lambda: 10, lambda: 20]) == 20


def test_image_resize():
    x = rng.normal(size=(2, 3, 4, 2)).astype("float32")
    nearest = ops.image.resize(x, (6, 8), interpolation="nearest")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(nearest), x.repeat(2, axis=1).repeat(2, axis=2)
    )
    ramp = np.array([0.0, 1.0], "float32").reshape(1, 1, 2, 1)
    up = ops.image.resize(ramp, (1, 4))  # half-pixel centres
    np.testing.assert_allclose(
        ops.convert_to_numpy(up).reshape(-1), [0.0, 0.25, 0.75, 1.0]
    )
    same = ops.image.resize(x, (3, 4))
    np.testing.assert_allclose(ops.convert_to_numpy(same), x)
    cropped = ops.image.resize(x, (2, 2), crop_to_aspect_ratio=True)
    assert ops.shape(cropped) == (2, 2, 2, 2)


def test_any_all_on_float_inputs():
    x = np.array([[0.5, 0.0], [0.25, 0.75]], "float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(ops.any(x, axis=1)), [True, True])
    np.testing.assert_array_equal(ops.convert_to_numpy(ops.all(x, axis=1)), [False, True])


def test_erfinv_inverts_erf():
    from scipy.special import erfinv

    np.testing.assert_allclose(ops.convert_to_numpy(keras.ops.erfinv(U)), erfinv(U), rtol=1e-5, atol=1e-6)


def test_bfloat16_tensors_convert_to_bfloat16_arrays():
    t = ops.convert_to_tensor(np.array([1.5, 2.0], ml_dtypes.bfloat16))
    for a in (np.asarray(t), np.array(t), ops.convert_to_numpy(t)):
        assert a.dtype == ml_dtypes.bfloat16
        assert a.tolist() == [1.5, 2.0]


def test_not_implemented_entry_points_say_so():
    with pytest.raises(NotImplementedError, match="keras_swift: numpy.pad"):
        ops.pad(A, 1, mode="maximum")


# The float32 kernels of exp/tanh/sigmoid/gelu are polynomials, not libm, and sqrt/rsqrt
# run 4 lanes at a time with a scalar tail: check them over the whole float32 range, at the
# special values, and at lengths that leave a tail.
_WIDE = np.concatenate(
    [
        np.linspace(-110, 95, 40001),
        np.geomspace(1e-38, 1, 3001),
        -np.geomspace(1e-38, 1, 3001),
        [0.0, -0.0, 0.625, -0.625, 88.72, 88.73, -103.0, -104.0, np.inf, -np.inf, np.nan],
    ]
).astype("float32")
_X64 = _WIDE.astype("float64")


def _gelu_tanh64(x):
    return 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def _sigmoid64(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# Values that underflow to denormals/zero may differ by FLT_MIN. gelu's formula itself
# rounds 1 + tanh(.) to 0 in float32 below x ~ -9 (true values ~1e-16), so it gets an atol.
@pytest.mark.parametrize(
    "name,fn,ref,atol",
    [
        ("exp", ops.exp, np.exp, np.finfo("float32").tiny),
        ("tanh", ops.tanh, np.tanh, np.finfo("float32").tiny),
        ("sigmoid", ops.sigmoid, _sigmoid64, np.finfo("float32").tiny),
        ("gelu_tanh", ops.gelu, _gelu_tanh64, 1e-7),
    ],
)
def test_float32_transcendentals_are_accurate_everywhere(name, fn, ref, atol):
    with np.errstate(all="ignore"):
        want = ref(_X64).astype("float32")
    got = ops.convert_to_numpy(fn(_WIDE))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2.5e-7, atol=atol)  # ~2 ulp
    if name == "tanh":  # odd, down to the sign of zero
        zero = got == 0
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


# float32 power runs a vectorised 2^(b log2 a) in double where it can and libm's powf on
# the lanes it leaves (special values, negative bases with fractional exponents, results
# beyond 2^±126). Checked against float64 pow: NaN/inf/zero-sign exactly, the rest within
# one float32 ulp, for each operand layout the fast path takes and one it does not.
_POW_SPECIAL = np.array(
    [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3e38, -3e38, 1e-40, -1e-40,
     1.17549435e-38, np.inf, -np.inf, np.nan], "float32")
_POW_EXPONENTS = np.array(
    [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.5, -0.5, 127.0, 128.0, -126.0, -150.0,
     2.0**22 + 1, 2.0**23 + 1, 2.0**24, 1e-8, 1e30, -1e30, np.inf, -np.inf, np.nan], "float32")


def _pow_cases():
    r = np.random.default_rng(3)
    n = 20000
    a = np.concatenate([
        r.uniform(0, 4, n), np.exp(r.uniform(-80, 80, n)), -np.exp(r.uniform(-8, 8, n)),
        r.uniform(0.999, 1.001, n), np.repeat(_POW_SPECIAL, _POW_EXPONENTS.size),
    ]).astype("float32")
    b = np.concatenate([
        r.uniform(-8, 8, n), r.uniform(-1.5, 1.5, n), np.round(r.uniform(-12, 12, n)),
        r.uniform(-2e4, 2e4, n), np.tile(_POW_EXPONENTS, _POW_SPECIAL.size),
    ]).astype("float32")
    return a, b


def _assert_pow_f32(got, a, b):
    got = ops.convert_to_numpy(got)
    assert got.dtype == np.float32
    with np.errstate(all="ignore"):
        exact = np.power(a.astype("float64"), b.astype("float64"))
        want = exact.astype("float32")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    special = np.isinf(want) | (want == 0)
    np.testing.assert_array_equal(got[special], want[special])
    np.testing.assert_array_equal(np.signbit(got[special]), np.signbit(want[special]))
    fin = np.isfinite(want) & (want != 0)
    ulps = np.abs(got[fin] - exact[fin]) / np.spacing(np.abs(want[fin]))
    assert ulps.max() <= 1.0, (a[fin][ulps.argmax()], b[fin][ulps.argmax()], ulps.max())


def test_float32_power_matches_float64_everywhere():
    a, b = _pow_cases()
    _assert_pow_f32(ops.power(a, b), a, b)
    for e in (2.0, 3.0, -1.0, 0.5, 1e-8, 127.0, np.nan):  # scalar exponent
        _assert_pow_f32(ops.power(a, np.float32(e)), a, np.full_like(a, e))
    for base in (2.0, -2.0, 0.0, -0.0, 0.5, 1.0):  # scalar base
        _assert_pow_f32(ops.power(np.float32(base), b), np.full_like(b, base), b)
    # a layout the fast path does not take: an outer product by broadcasting
    col, row = a[:301].reshape(-1, 1), b[-23:].reshape(1, -1)
    _assert_pow_f32(ops.power(col, row), *np.broadcast_arrays(col, row))


@pytest.mark.parametrize("n", [1, 3, 4, 7, 70001])
def test_float32_sqrt_rsqrt_match_numpy(n):
    x = np.abs(rng.normal(size=n)).astype("float32") * 100
    x[0] = 0.0
    np.testing.assert_array_equal(ops.convert_to_numpy(ops.sqrt(x)), np.sqrt(x))
    with np.errstate(divide="ignore"):
        want = (1 / np.sqrt(x)).astype("float32")
    np.testing.assert_array_equal(ops.convert_to_numpy(ops.rsqrt(x)), want)
    assert np.isnan(ops.convert_to_numpy(ops.sqrt(np.array([-1.0, np.nan], "float32")))).all()


@pytest.mark.parametrize("name,grad", [
    ("tanh", lambda x: 1 - np.tanh(x) ** 2),
    ("sigmoid", lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    ("exp", np.exp),
    ("sqrt", lambda x: 0.5 / np.sqrt(x)),
    ("relu", lambda x: (x > 0).astype("float64")),
    ("gelu", None),
])
def test_float32_fast_path_gradients(name, grad):
    import _swiftkeras as C
    from keras_swift.src.engine import op

    x64 = np.linspace(0.05, 4, 50) * np.where(np.arange(50) % 2, 1.0, -1.0)
    if name == "sqrt":
        x64 = np.abs(x64)
    if grad is None:  # tanh-approximated gelu: central differences of the float64 formula
        h = 1e-6
        grad = lambda x: (_gelu_tanh64(x + h) - _gelu_tanh64(x - h)) / (2 * h)  # noqa: E731
    x = ops.convert_to_tensor(x64.astype("float32"))
    x.requires_grad = True
    C.tape_push()
    try:
        (g,) = C.gradient(op("sum", op(name, x)), [x])
    finally:
        C.tape_pop()
    np.testing.assert_allclose(np.asarray(g), grad(x64.astype("float32").astype("float64")), rtol=2e-6, atol=1e-6)


def _assert_close_same_dtype(got, want):
    got = ops.convert_to_numpy(got)
    assert got.dtype == np.asarray(want).dtype, (got.dtype, np.asarray(want).dtype)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


def test_complex64_against_numpy():
    close = _assert_close_same_dtype
    z_numpy = (A + 1j * B).astype("complex64")
    w_numpy = (P - 0.5j * U).astype("complex64")
    z, w = ops.convert_to_tensor(z_numpy), ops.convert_to_tensor(w_numpy)
    close(z, z_numpy)
    close(ops.add(z, w), z_numpy + w_numpy)
    close(ops.multiply(z, w), z_numpy * w_numpy)
    close(ops.divide(z, w), z_numpy / w_numpy)
    close(ops.power(z, 3), z_numpy**3)
    close(ops.sqrt(w), np.sqrt(w_numpy))
    close(ops.exp(z), np.exp(z_numpy))
    close(ops.log(w), np.log(w_numpy))
    close(ops.abs(z), np.abs(z_numpy))
    close(ops.real(z), z_numpy.real)
    close(ops.imag(z), z_numpy.imag)
    close(ops.conj(z), np.conj(z_numpy))
    close(ops.angle(z), np.angle(z_numpy))
    close(ops.sum(z, axis=0), z_numpy.sum(axis=0))
    close(ops.mean(z), z_numpy.mean())
    close(ops.matmul(z, ops.transpose(w)), z_numpy @ w_numpy.T)
    close(ops.transpose(z), z_numpy.T)
    close(ops.cast(z, "float32"), z_numpy.real)
    close(ops.view_as_real(z), np.stack([z_numpy.real, z_numpy.imag], axis=-1))
    close(ops.view_as_complex(ops.view_as_real(z)), z_numpy)
    close(ops.multiply(z, 1j), z_numpy * np.complex64(1j))
    assert ops.convert_to_numpy(ops.equal(z, z)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning must not leak out
        close(ops.convert_to_tensor(z_numpy, "float32"), z_numpy.real)


def test_complex128_keeps_double_precision():
    close = _assert_close_same_dtype
    z_numpy = (A.astype("float64") + 1j / 3).astype("complex128")
    z = ops.convert_to_tensor(z_numpy, "complex128")
    close(z, z_numpy)
    close(ops.real(z), z_numpy.real)
    close(ops.imag(z), z_numpy.imag)
    close(ops.sum(z, axis=1), z_numpy.sum(axis=1))
    close(ops.cast(z, "complex64"), z_numpy.astype("complex64"))
    # Like jax without x64 (Keras's result_type), a complex128 numpy input
    # becomes complex64 unless complex128 is asked for.
    assert ops.convert_to_tensor(z_numpy).dtype == "complex64"


def test_complex_unsupported_op_raises_type_error():
    z = ops.convert_to_tensor(np.array([1 + 2j], "complex64"))
    with pytest.raises(TypeError, match="complex"):
        ops.relu(z)
    with pytest.raises(TypeError, match="complex"):
        ops.less(z, z)
    with pytest.raises(TypeError, match="complex"):
        ops.max(z)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
@pytest.mark.parametrize("axes", [[0], [-1], [0, 1], [0, 2], None])
def test_moments_fused_against_numpy(dtype, axes):
    x = (rng.normal(size=(40, 30, 70)) * 3 + 5).astype(dtype)
    mean, var = ops.moments(ops.convert_to_tensor(x, dtype), axes=axes, keepdims=True)
    ref = x.astype("float64")
    np_axes = None if axes is None else tuple(axes)
    tol = {"float16": 2e-3, "float32": 1e-5, "float64": 1e-12, "int32": 1e-5}[dtype]
    np.testing.assert_allclose(
        ops.convert_to_numpy(mean).astype("float64"), ref.mean(axis=np_axes, keepdims=True), rtol=tol
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(var).astype("float64"), ref.var(axis=np_axes, keepdims=True), rtol=tol * 10
    )
    want_dtype = {"float16": "float16", "int32": "float32"}.get(dtype, dtype)
    assert mean.dtype == want_dtype and var.dtype == want_dtype


def test_large_transpose_is_deferred_but_reads_like_a_copy():
    x = rng.normal(size=(16, 32, 8, 64)).astype("float32")
    t = ops.transpose(x, (0, 2, 1, -1))
    tt = ops.transpose(t, (3, 1, 2, 0))
    np.testing.assert_array_equal(ops.convert_to_numpy(tt), x.transpose(0, 2, 1, 3).transpose(3, 1, 2, 0))
    np.testing.assert_array_equal(ops.convert_to_numpy(t), x.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(np.asarray(ops.reshape(ops.transpose(x), (-1,))), x.T.reshape(-1))
    with pytest.raises(ValueError):
        ops.transpose(x, (0, 1, 2, 2))
    with pytest.raises(ValueError):
        ops.transpose(x, (0, 1, 2, 4))


def test_tensors_are_untracked_and_carry_keras_masks():
    import gc

    from keras.src.backend.common.masking import get_keras_mask
    from keras_swift.src.ops import numpy as knp

    from _swiftkeras import _C

    x = ops.convert_to_tensor(np.array([[[1.0], [0.0], [2.0]]], np.float32))
    assert not gc.is_tracked(x)
    y = keras.layers.Masking(0.0)(x)
    np.testing.assert_array_equal(np.asarray(get_keras_mask(y)), [[True, False, True]])
    # transpose is bound to its engine op; its Python body still serves other inputs.
    assert isinstance(knp.transpose, _C.Op)
    np.testing.assert_array_equal(np.asarray(ops.transpose(np.ones((2, 3)))), np.ones((3, 2)))
