"""Issue 20: bad sizes raise instead of crashing, edge values and complex values
match numpy/JAX, gradients exist or raise, unknown devices are refused.

One test per example in the issue, plus a seeded sweep of huge sizes over the
size-computing ops (a crash there would kill this process, failing the run).
"""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import ops  # noqa: E402

from _swiftkeras import _C  # noqa: E402

jax = pytest.importorskip("jax")
jnp = jax.numpy


def _np(x):
    return ops.convert_to_numpy(x)


def _grad(fn, *xs):
    leaves = [keras.Variable(x) for x in xs]
    _C.tape_push()
    try:
        y = ops.sum(fn(*leaves))
        return [None if g is None else _np(g) for g in _C.gradient(y, [v.value for v in leaves])]
    finally:
        _C.tape_pop()


# ---------------------------------------------------------------------------
# 1. Sizes: overflow or beyond physical memory is a ValueError naming the op
# ---------------------------------------------------------------------------

HUGE_CASES = {
    "reshape": lambda: ops.reshape(np.zeros(4, "float32"), (-1, 2**62, 4)),
    "repeat": lambda: ops.repeat(np.ones(3, "float32"), 2**62),
    "pad": lambda: ops.pad(np.ones(3, "float32"), [(2**62, 0)]),
    "conv": lambda: ops.conv(np.ones((1, 8, 8, 3), "float32"), np.ones((3, 3, 3, 4), "float32"),
                             dilation_rate=2**62, padding="same"),
    "rfft": lambda: ops.rfft(np.ones(8, "float32"), fft_length=2**40),
    "pad_images": lambda: ops.image.pad_images(np.ones((1, 4, 4, 3), "float32"), 0, 0, 2**31, 2**31),
}


@pytest.mark.parametrize("name", sorted(HUGE_CASES))
def test_issue_huge_sizes_raise_value_error(name):
    with pytest.raises(ValueError, match=r"too large|overflows|exceed"):
        HUGE_CASES[name]()


def test_pad_widths_that_overflow_the_sum_raise():
    x = ops.convert_to_tensor(np.ones(3, "float32"))
    with pytest.raises(ValueError, match="pad"):
        _C.op("pad", x, pads=[2**62, 2**62], mode="constant", value=0.0)


def test_size_errors_name_the_op():
    with pytest.raises(ValueError, match="repeat"):
        HUGE_CASES["repeat"]()
    with pytest.raises(ValueError, match="reshape"):
        HUGE_CASES["reshape"]()
    with pytest.raises(ValueError, match="broadcast_to"):
        ops.broadcast_to(np.ones(2, "float32"), (2**40, 2**30, 2))


def test_rank_beyond_the_limit_is_a_value_error():
    # The issue's C ABI example: stack made a tensor of more dimensions than the
    # extension (and numpy) allow.
    x = np.zeros((1,) * _C.MAX_RANK, "float32")
    for fn in (lambda: ops.stack([x, x]), lambda: ops.expand_dims(x, 0),
               lambda: ops.reshape(x, (1,) * (_C.MAX_RANK + 1))):
        with pytest.raises(ValueError, match="rank"):
            fn()
    with pytest.raises(ValueError):
        np.zeros((1,) * (_C.MAX_RANK + 1))


def test_conv_rejects_non_positive_single_dilation_and_stride():
    x, w = np.ones((1, 8, 8, 3), "float32"), np.ones((3, 3, 3, 4), "float32")
    with pytest.raises(ValueError):
        ops.conv(x, w, dilation_rate=0)
    with pytest.raises(ValueError):
        ops.conv(x, w, strides=-1)


def test_huge_stride_same_padding_is_one_output():
    x, w = np.ones((1, 8, 8, 3), "float32"), np.ones((3, 3, 3, 4), "float32")
    y = ops.conv(x, w, strides=2**62, padding="same")
    ref = jax.lax.conv_general_dilated(x, w, (2**62, 2**62), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(_np(y), np.asarray(ref), rtol=1e-6)


def _huge_size_sweep_cases(seed, count):
    rng = np.random.default_rng(seed)
    x1 = np.ones(3, "float32")
    img = np.ones((1, 4, 4, 3), "float32")
    k = np.ones((3, 3, 3, 2), "float32")
    for _ in range(count):
        big = int(rng.integers(2**31, 2**62))
        small = int(rng.integers(1, 2**20))
        yield from [
            ("reshape", lambda b=big, s=small: ops.reshape(x1, (-1, b, s))),
            ("reshape2", lambda b=big, s=small: ops.reshape(x1, (b, b, s))),
            ("repeat", lambda b=big: ops.repeat(x1, b)),
            ("repeat_each", lambda b=big: ops.repeat(x1, [b, b, b])),
            ("pad", lambda b=big, s=small: ops.pad(x1, [(b, s)])),
            ("tile", lambda b=big, s=small: ops.tile(x1, [b, s])),
            ("broadcast_to", lambda b=big, s=small: ops.broadcast_to(x1, (b, s, 3))),
            ("conv_dilation", lambda b=big: ops.conv(img, k, dilation_rate=b, padding="same")),
            ("conv_stride", lambda b=big: ops.conv(img, k, strides=b, padding="valid")),
            ("rfft", lambda b=big: ops.rfft(x1, fft_length=b)),
            ("pad_images", lambda b=big: ops.image.pad_images(img, 0, 0, b, b)),
            ("crop_to_big", lambda b=big: ops.image.pad_images(img, b, b, 1, 1)),
            ("resize", lambda b=big: ops.image.resize(img, (b, b))),
            ("one_hot", lambda b=big: ops.one_hot(np.arange(4), b)),
            ("zeros", lambda b=big, s=small: ops.zeros((b, s))),
            ("full", lambda b=big: ops.full((b, b), 1.0)),
            ("eye", lambda b=big: ops.eye(b)),
            ("arange", lambda b=big: ops.arange(0, b * 4.0)),
            ("max_pool", lambda b=big: ops.max_pool(img, b, strides=b, padding="same")),
        ]


def test_huge_size_sweep_raises_value_error_never_crashes():
    tried = 0
    for name, case in _huge_size_sweep_cases(seed=20, count=8):
        try:
            out = case()
        except (ValueError, OverflowError):
            tried += 1
            continue
        # Some of these legitimately succeed (a huge stride gives a tiny output);
        # what they must never do is return a wrong-size result.
        assert np.prod(out.shape) * 4 < 2**40, (name, out.shape)
        tried += 1
    assert tried == 8 * 19


# ---------------------------------------------------------------------------
# 3. Gradients: svd values and qr's R have VJPs; a missing VJP raises
# ---------------------------------------------------------------------------


def _jax_grad(fn, x):
    return np.asarray(jax.grad(lambda a: jnp.sum(fn(a)))(jnp.asarray(x)))


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (2, 3, 3)])
def test_gradient_through_singular_values(shape):
    x = np.random.default_rng(0).normal(size=shape).astype("float64")
    weights = np.arange(1, min(shape[-2:]) + 1, dtype="float64")
    (g,) = _grad(lambda a: ops.linalg.svd(a, compute_uv=False) * weights, x)
    ref = _jax_grad(lambda a: jnp.linalg.svd(a, compute_uv=False) * weights, x)
    np.testing.assert_allclose(g, ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("shape", [(4, 3), (3, 3), (3, 5), (2, 4, 3)])
@pytest.mark.parametrize("output", [0, 1])
def test_gradient_through_qr(shape, output):
    x = np.random.default_rng(1).normal(size=shape).astype("float64")
    w = np.random.default_rng(2).normal(size=np.linalg.qr(x)[output].shape)
    (g,) = _grad(lambda a: ops.linalg.qr(a)[output] * w, x)
    ref = _jax_grad(lambda a: jnp.linalg.qr(a)[output] * w, x)
    np.testing.assert_allclose(g, ref, rtol=2e-4, atol=2e-5)


def test_gradient_through_an_op_without_vjp_raises():
    x = np.random.default_rng(3).normal(size=(3, 3)).astype("float32")
    # svd's U has no VJP yet: asking for a gradient through it must not give None.
    with pytest.raises(NotImplementedError, match="svd"):
        _grad(lambda a: ops.linalg.svd(a)[0], x)


def test_zero_derivative_ops_keep_zero_or_none():
    x = np.array([0.3, -1.7, 2.5], "float32")
    for fn in (ops.floor, ops.ceil, ops.round, ops.sign):
        (g,) = _grad(fn, x)
        assert g is None or not np.any(g), fn
    (g,) = _grad(lambda a: ops.cast(ops.greater(a, 0), "float32"), x)
    assert g is None or not np.any(g)
    (g,) = _grad(lambda a: ops.slogdet(ops.reshape(a[:1], (1, 1)))[0], x)
    assert g is None or not np.any(g)


# ---------------------------------------------------------------------------
# 2. Silently wrong values
# ---------------------------------------------------------------------------


def test_complex_var_and_std_are_real_as_numpy():
    z = np.array([1 + 2j, 3 - 1j], "complex64")
    np.testing.assert_allclose(_np(ops.var(z)), np.var(z), rtol=1e-6)
    np.testing.assert_allclose(_np(ops.std(z)), np.std(z), rtol=1e-6)
    assert not np.iscomplexobj(_np(ops.var(z)))


def test_vdot_conjugates_its_first_argument():
    a = np.array([1 + 2j, 3 - 1j], "complex64")
    b = np.array([2 - 1j, 1 + 1j], "complex64")
    np.testing.assert_allclose(_np(ops.vdot(a, b)), np.vdot(a, b), rtol=1e-6)


_BRANCH_POINTS = np.array(
    [2j, -2j, 1 + 1j, -1 - 1j, 0.5 - 3j, -0.5 + 3j, 0.5, -3, 3, 0.2 + 0.1j, -0.2 - 0.1j, 1e-3j], "complex64")


def test_complex_arcsinh_matches_numpy_including_branch_cuts():
    np.testing.assert_allclose(_np(ops.arcsinh(_BRANCH_POINTS)), np.arcsinh(_BRANCH_POINTS), rtol=1e-5, atol=1e-6)


def test_complex_arccosh_matches_numpy_including_branch_cuts():
    np.testing.assert_allclose(_np(ops.arccosh(_BRANCH_POINTS)), np.arccosh(_BRANCH_POINTS), rtol=1e-5, atol=1e-6)


def test_arcsinh_arccosh_of_huge_and_tiny_values():
    x = np.array([3e38, -3e38, 1e-30, 0.0, 1e10], "float32")
    np.testing.assert_allclose(_np(ops.arcsinh(x)), np.arcsinh(x), rtol=1e-6)
    y = np.array([3e38, 1.0, 1.0000001, 2.0, 1e10, -2.0**31, 0.5], "float32")
    np.testing.assert_allclose(_np(ops.arccosh(y)), np.arccosh(y), rtol=1e-5)
    assert np.isnan(_np(ops.arccosh(np.float32(-2**31))))
    np.testing.assert_allclose(_np(ops.arcsinh(np.float32(3e38))), 89.29, rtol=1e-4)


def test_hypot_inf_beats_nan_and_does_not_overflow():
    a = np.array([np.nan, np.inf, 1e20, 3.0, 0.0, -np.inf], "float32")
    b = np.array([np.inf, np.nan, 1e20, 4.0, 0.0, 1.0], "float32")
    np.testing.assert_allclose(_np(ops.hypot(a, b)), np.hypot(a, b), rtol=1e-6)


def test_heaviside_of_nan_is_nan():
    x = np.array([np.nan, -1.0, 0.0, 2.0], "float32")
    np.testing.assert_array_equal(_np(ops.heaviside(x, np.float32(np.inf))), np.heaviside(x, np.float32(np.inf)))


def _with_non_finite(shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    flat = x.reshape(-1)
    for i, v in zip(np.random.default_rng(seed + 1).choice(flat.size, 6, replace=False),
                    [np.nan, np.nan, np.inf, -np.inf, np.nan, -np.inf]):
        flat[i] = v
    return x


def _np_max_pool(x, k, s, padding):
    """Channels-last max pooling in numpy, whose max propagates NaN."""
    spatial = x.ndim - 2
    if padding == "same":
        pads = []
        for n in x.shape[1:-1]:
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0)] + pads + [(0, 0)], constant_values=-np.inf)
    axes = tuple(range(1, 1 + spatial))
    w = np.lib.stride_tricks.sliding_window_view(x, (k,) * spatial, axis=axes)
    return w[(slice(None),) + (slice(None, None, s),) * spatial].max(axis=tuple(range(-spatial, 0)))


def _np_adaptive_max_pool(x, out):
    """torch's bins [floor(i n / o), ceil((i + 1) n / o)) over each spatial axis."""
    for axis in range(1, x.ndim - 1):
        n = x.shape[axis]
        parts = [np.take(x, range(i * n // out, -(-(i + 1) * n // out)), axis=axis).max(axis=axis, keepdims=True)
                 for i in range(out)]
        x = np.concatenate(parts, axis=axis)
    return x


# Every max/min-family kernel against numpy, on inputs holding NaN and infinities: a NaN in a
# window, segment or row makes that result NaN. Generic float code once picked
# FloatingPoint.maximum (which drops a NaN) over the engine's NaN-propagating one.
NAN_CASES = {
    **{f"max_pool{d}d_{p}": (lambda d=d, p=p: _with_non_finite((2,) + (7,) * d + (3,), d),
                             lambda x, p=p: ops.max_pool(x, 3, 2, padding=p),
                             lambda x, p=p: _np_max_pool(x, 3, 2, p))
       for d in (1, 2, 3) for p in ("valid", "same")},
    "adaptive_max_pool": (lambda: _with_non_finite((2, 9, 9, 3), 7), lambda x: ops.adaptive_max_pool(x, 4),
                          lambda x: _np_adaptive_max_pool(x, 4)),
    "max": (lambda: _with_non_finite((5, 40), 8), lambda x: ops.max(x, axis=1), lambda x: x.max(axis=1)),
    "min": (lambda: _with_non_finite((40, 5), 9), lambda x: ops.min(x, axis=0), lambda x: x.min(axis=0)),
    "maximum": (lambda: _with_non_finite((1000,), 10), lambda x: ops.maximum(x, 0.5), lambda x: np.maximum(x, 0.5)),
    "minimum": (lambda: _with_non_finite((1000,), 11), lambda x: ops.minimum(x[::-1].copy(), x),
                lambda x: np.minimum(x[::-1], x)),
    "segment_max": (lambda: _with_non_finite((30,), 12), lambda x: ops.segment_max(x, np.arange(30) // 3, num_segments=10),
                    lambda x: x.reshape(10, 3).max(axis=1)),
    "segment_min": (lambda: _with_non_finite((30,), 13), lambda x: ops.segment_min(x, np.arange(30) // 3, num_segments=10),
                    lambda x: x.reshape(10, 3).min(axis=1)),
}


@pytest.mark.parametrize("name", sorted(NAN_CASES))
def test_max_family_propagates_nan_as_numpy(name):
    make, ours, reference = NAN_CASES[name]
    x = make()
    np.testing.assert_array_equal(_np(ours(x)), reference(x))


def test_sparsemax_of_a_row_with_nan_or_inf_is_nan():
    x = np.array([[np.nan, 1, 2], [np.inf, 1, 2], [-np.inf, 1, 2], [1, 2, 3.5]], "float32")
    y = _np(ops.sparsemax(x))
    assert np.isnan(y[:2]).all()
    np.testing.assert_allclose(y[2:], [[0, 0, 1], [0, 0, 1]])


def test_searchsorted_and_digitize_sort_nan_last():
    seq = np.array([1.0, 2.0, np.nan], "float32")
    v = np.array([np.nan, 1.5, 3.0, 1.0, 2.0], "float32")
    for side in ("left", "right"):
        np.testing.assert_array_equal(_np(ops.searchsorted(seq, v, side=side)), np.searchsorted(seq, v, side=side))
    np.testing.assert_array_equal(_np(ops.digitize(v, seq)), np.digitize(v, seq))


def test_log_softmax_with_inf_matches_jax():
    for x in ([np.inf, 0.0], [-np.inf, 0.0], [np.inf, np.inf], [1.0, 2.0]):
        x = np.array(x, "float32")
        np.testing.assert_array_equal(
            np.isnan(_np(ops.log_softmax(x))), np.isnan(np.asarray(jax.nn.log_softmax(x))))
        np.testing.assert_allclose(_np(ops.log_softmax(x)), np.asarray(jax.nn.log_softmax(x)), rtol=1e-6)
        np.testing.assert_allclose(_np(ops.softmax(x)), np.asarray(jax.nn.softmax(x)), rtol=1e-6)


def test_inv_of_all_nan_matrix_is_all_nan():
    x = np.full((2, 3, 3), np.nan, "float32")
    assert np.isnan(_np(ops.linalg.inv(x))).all()


# Accepted instead of rejected


def test_boolean_mask_of_wrong_length_is_rejected():
    x = ops.convert_to_tensor(np.arange(6.0, dtype="float32").reshape(3, 2))
    with pytest.raises(IndexError):
        x[np.array([True, False])]
    with pytest.raises(IndexError):
        x[:, np.array([True, False, True])]
    np.testing.assert_array_equal(_np(x[np.array([True, False, True])]), np.arange(6.0).reshape(3, 2)[[0, 2]])


def test_unstack_rejects_bad_axis_and_num():
    x = np.zeros((2, 3), "float32")
    with pytest.raises((ValueError, IndexError)):
        ops.unstack(x, axis=4)
    with pytest.raises(ValueError):
        ops.unstack(x, num=3, axis=0)
    assert len(ops.unstack(x, num=3, axis=-1)) == 3


@pytest.mark.parametrize("n", [0, -4])
def test_rfft_rejects_non_positive_length(n):
    with pytest.raises(ValueError):
        ops.rfft(np.ones(8, "float32"), fft_length=n)
    with pytest.raises(ValueError):
        jnp.fft.rfft(jnp.ones(8), n=n)


def test_diff_rejects_negative_order():
    with pytest.raises(ValueError):
        ops.diff(np.arange(4.0), n=-1)
    with pytest.raises(ValueError):
        np.diff(np.arange(4.0), n=-1)


def test_expand_dims_rejects_repeated_axes():
    with pytest.raises(ValueError):
        ops.expand_dims(np.ones(3, "float32"), (0, 0))
    with pytest.raises(ValueError):
        jnp.expand_dims(jnp.ones(3), (0, 0))
    assert ops.expand_dims(np.ones(3, "float32"), (0, 2)).shape == (1, 3, 1)


# Shapes


def test_argsort_of_a_scalar_has_shape_one():
    out = ops.argsort(np.float32(3.0))
    assert tuple(out.shape) == np.argsort(np.float32(3.0)).shape == (1,)


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (2, 0, 3)])
def test_svd_of_an_empty_matrix_has_orthogonal_bases(shape):
    u, s, vt = ops.linalg.svd(np.zeros(shape, "float32"))
    nu, ns, nvt = np.linalg.svd(np.zeros(shape, "float32"))
    np.testing.assert_array_equal(_np(u), nu)
    np.testing.assert_array_equal(_np(vt), nvt)
    assert _np(s).shape == ns.shape


def test_cholesky_inverse_of_a_batch_of_1x1():
    a = np.array([[[4.0]], [[9.0]]], "float32")
    np.testing.assert_allclose(_np(ops.linalg.cholesky_inverse(np.sqrt(a))), 1 / a, rtol=1e-6)
    m = np.random.default_rng(4).normal(size=(3, 4, 4))
    spd = m @ np.swapaxes(m, -1, -2) + 4 * np.eye(4)
    low = np.linalg.cholesky(spd)
    np.testing.assert_allclose(_np(ops.linalg.cholesky_inverse(low)), np.linalg.inv(spd), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# 4. Devices
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpu:0", "gpu", "tpu:0", "foo", "cpu:1"])
def test_unknown_device_is_refused(name):
    with pytest.raises(ValueError):
        with keras.device(name):
            pass


@pytest.mark.parametrize("name", ["cpu", "cpu:0", "CPU:0"])
def test_cpu_device_works(name):
    with keras.device(name):
        assert float(_np(ops.sum(ops.ones(3)))) == 3.0


# ---------------------------------------------------------------------------
# Non-finite and extreme values through LAPACK: some routines report a NaN or an infinity as
# an "illegal argument" (geev's balancing, gesdd), which must never surface as an internal
# error. Every LAPACK-backed op, both dtypes, one entry or all entries extreme.
# ---------------------------------------------------------------------------

LAPACK_OPS = {  # name: (extra input, attributes)
    "inv": (None, {}), "det": (None, {}), "slogdet": (None, {}), "lu_factor": (None, {}),
    "cholesky": (None, {}), "qr": (None, {}), "eig": (None, {}), "eigh": (None, {}),
    "svd": (None, {}), "solve": ("rhs", {}), "solve_triangular": ("rhs", {"lower": True}),
    "lstsq": ("rhs", {}),
}


@pytest.mark.parametrize("name", sorted(LAPACK_OPS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lapack_ops_of_extreme_values_never_raise_internal_errors(name, dtype):
    extra, attrs = LAPACK_OPS[name]
    big = np.finfo(dtype).max
    specials = [np.nan, np.inf, -np.inf, big, -big, np.finfo(dtype).tiny]
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5):
        base = rng.standard_normal((n, n)).astype(dtype)
        for value in specials:
            for where in ("one", "all"):
                a = base.copy()
                if where == "one":
                    a[n // 2, (n + 1) // 2 % n] = value
                else:
                    a[...] = value
                inputs = [_C.from_buffer(np.ascontiguousarray(a), dtype)]
                if extra:
                    inputs.append(_C.from_buffer(np.ones((n, 2), dtype), dtype))
                try:
                    outs = _C.op(name, *inputs, **attrs)
                except ValueError:
                    continue  # singular, not positive definite: a user error, named
                outs = outs if isinstance(outs, tuple) else (outs,)
                seen = np.tril(a) if name == "eigh" else a  # eigh reads the lower triangle
                if name in ("eig", "eigh", "svd") and not np.isfinite(seen).all():
                    # The decompositions of a matrix with a NaN or an infinity are NaN, as jax's.
                    for o in outs:
                        assert np.isnan(np.asarray(memoryview(o))).all(), (name, n, value, where)
