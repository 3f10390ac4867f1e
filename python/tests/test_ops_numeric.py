"""cross / correlate / corrcoef / histogram / unique / view, stft / istft and
the gamma / beta / binomial samplers on KERAS_BACKEND=swift, against numpy."""

import warnings

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import ops  # noqa: E402

rng = np.random.default_rng(1)


def np_(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("na,nv", [(7, 3), (6, 4), (3, 7), (2, 5), (4, 4), (1, 1)])
def test_correlate(mode, na, nv):
    a = rng.normal(size=na).astype("float32")
    v = rng.normal(size=nv).astype("float32")
    np.testing.assert_allclose(
        np_(ops.correlate(a, v, mode=mode)), np.correlate(a, v, mode=mode), rtol=1e-5, atol=1e-5
    )


def test_correlate_gradient():
    a = keras.Variable(rng.normal(size=6).astype("float32"))
    v = rng.normal(size=3).astype("float32")
    from keras_swift.src.engine import _C

    _C.tape_push()
    try:
        out = ops.sum(ops.correlate(a.value, v, mode="full"))
        (g,) = _C.gradient(out, [a.value])
    finally:
        _C.tape_pop()
    # d/da_i of sum_k sum_n a[n + k] v[n] over the full window is sum(v).
    np.testing.assert_allclose(np_(g), np.full(6, v.sum()), rtol=1e-5)


@pytest.mark.parametrize(
    "sa,sb,kw",
    [((4, 3), (4, 3), {}), ((4, 2), (4, 3), {}), ((5, 2), (5, 2), {}),
     ((3, 4), (3, 4), {"axis": 0}), ((2, 3, 5), (3,), {"axisa": 1}),
     ((3, 2), (3, 2), {"axisa": 0, "axisb": 0, "axisc": 0})],
)
def test_cross(sa, sb, kw):
    a = rng.normal(size=sa).astype("float32")
    b = rng.normal(size=sb).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy's 2-vector deprecation
        expected = np.cross(a, b, **kw)
    np.testing.assert_allclose(np_(ops.cross(a, b, **kw)), expected, rtol=1e-5, atol=1e-5)


def test_cross_rejects_bad_sizes():
    with pytest.raises(ValueError):
        ops.cross(np.ones((2, 4)), np.ones((2, 3)))


def test_corrcoef():
    x = rng.normal(size=(3, 9)).astype("float32")
    np.testing.assert_allclose(np_(ops.corrcoef(x)), np.corrcoef(x), rtol=1e-5, atol=1e-6)
    assert ops.corrcoef(ops.arange(6, dtype="int64")).dtype == "float64"
    assert ops.corrcoef(ops.ones((2, 3), dtype="int8")).dtype == "float32"


@pytest.mark.parametrize("bins,rng_", [(10, None), (3, None), (4, (0.2, 0.7))])
def test_histogram(bins, rng_):
    x = rng.random(50)
    counts, edges = ops.histogram(x, bins=bins, range=rng_)
    ec, ee = np.histogram(x, bins=bins, range=rng_)
    np.testing.assert_array_equal(np_(counts), ec)
    np.testing.assert_allclose(np_(edges), ee, rtol=1e-6)


def test_unique_matches_numpy():
    x = rng.integers(0, 5, size=(4, 6)).astype("int32")
    v, idx, inv, cnt = ops.unique(x, return_index=True, return_inverse=True, return_counts=True)
    ev, eidx, einv, ecnt = np.unique(x, return_index=True, return_inverse=True, return_counts=True)
    for got, exp in [(v, ev), (idx, eidx), (inv, einv.reshape(x.shape)), (cnt, ecnt)]:
        np.testing.assert_array_equal(np_(got), exp)
    rows = np.array([[1, 2], [0, 5], [1, 2], [0, 1]], "float32")
    v, inv = ops.unique(rows, axis=0, return_inverse=True)
    ev, einv = np.unique(rows, axis=0, return_inverse=True)
    np.testing.assert_array_equal(np_(v), ev)
    np.testing.assert_array_equal(np_(inv), einv.reshape(-1))
    v, c = ops.unique(np.array([True, False, True]), return_counts=True)
    np.testing.assert_array_equal(np_(v), [False, True])
    np.testing.assert_array_equal(np_(c), [1, 2])


@pytest.mark.parametrize("src,dst", [("float32", "int32"), ("int16", "float16"), ("int32", "uint8"),
                                     ("uint8", "bfloat16"), ("float64", "int16")])
def test_view(src, dst):
    import ml_dtypes  # noqa: F401  (numpy's bfloat16)

    x = (rng.normal(size=(2, 8)) * 100).astype(src)
    got = ops.view(ops.convert_to_tensor(x, dtype=src), dst)
    np.testing.assert_array_equal(np_(got).view("uint8"), x.view(dst).view("uint8"))
    assert got.dtype == dst


def test_view_scalar_size_change_raises():
    with pytest.raises(ValueError):
        ops.view(np.array(1, "int16"), "int8")


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("window", ["hann", "hamming", None])
def test_stft_istft_round_trip(center, window):
    x = rng.normal(size=(2, 100)).astype("float32")
    re, im = ops.stft(x, 16, 4, 32, window=window, center=center)
    y = np_(ops.istft((re, im), 16, 4, 32, window=window, center=center))
    if center and window is not None:
        n = min(y.shape[-1], x.shape[-1])
        np.testing.assert_allclose(y[..., 16:n - 16], x[..., 16:n - 16], atol=1e-4)
    # the spectrum of frame 0 against numpy
    if not center:
        # no window: ones over the whole fft_length; else the periodic window, centred
        win = np.ones(32) if window is None else np.pad(
            0.5 - 0.5 * np.cos(2 * np.pi * np.arange(16) / 16) if window == "hann"
            else 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(16) / 16), (8, 8))
        frame = x[0, :32] * win
        spec = np.fft.rfft(frame)
        np.testing.assert_allclose(np_(re)[0, 0], spec.real, atol=1e-4)
        np.testing.assert_allclose(np_(im)[0, 0], spec.imag, atol=1e-4)


def test_stft_rejects_int_input():
    with pytest.raises(TypeError):
        ops.stft(np.arange(8), 2, 1, 4)


def test_gamma_beta_binomial_moments():
    g = np_(keras.random.gamma((20000,), alpha=2.5, seed=1))
    assert g.min() > 0 and abs(g.mean() - 2.5) < 0.06 and abs(g.var() - 2.5) < 0.2
    b = np_(keras.random.beta((20000,), alpha=2.0, beta=5.0, seed=2))
    assert 0 <= b.min() and b.max() <= 1 and abs(b.mean() - 2 / 7) < 0.01
    counts = np.array([[10.0, 1e5], [300.0, 7.0]])
    probs = np.array([[0.3, 0.5], [0.9, 0.0]])
    s = np_(keras.random.binomial((2, 2), counts, probs, seed=3))
    assert (s >= 0).all() and (s <= counts).all() and s[1, 1] == 0
    assert abs(s[0, 1] / 1e5 - 0.5) < 0.01
    # a pure function of the seed
    np.testing.assert_array_equal(s, np_(keras.random.binomial((2, 2), counts, probs, seed=3)))


def test_svd_and_lstsq_of_non_finite_matrices_are_nan():
    # LAPACK refuses NaN/inf input; like numpy and jax, the factors are NaN instead of an error.
    a = np.array([[[1.0, np.nan], [0.0, 1.0]], [[3.0, 0.0], [0.0, 4.0]]], "float32")
    u, s, v = (ops.convert_to_numpy(t) for t in ops.linalg.svd(a))
    assert np.isnan(s[0]).all() and np.isnan(u[0]).all() and np.isnan(v[0]).all()
    np.testing.assert_allclose(s[1], [4.0, 3.0])
    x = ops.convert_to_numpy(ops.linalg.lstsq(a[0], np.ones(2, "float32")))
    assert np.isnan(x).all()
