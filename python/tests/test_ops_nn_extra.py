"""keras.ops.nn CTC / fold / unfold / sparsemax / adaptive pooling / attention
on KERAS_BACKEND=swift against numpy references (and the layers built on them).
"""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import ops  # noqa: E402

rng = np.random.default_rng(0)


def _bins(n, out):
    return [
        (int(np.floor(i * n / out)), int(np.ceil((i + 1) * n / out)))
        for i in range(out)
    ]


def _adaptive_ref(x, out, reduce):
    """Channels-last numpy reference with torch's bins."""
    spatial = x.ndim - 2
    out = (out,) * spatial if isinstance(out, int) else tuple(out)
    res = np.zeros((x.shape[0], *out, x.shape[-1]), x.dtype)
    for cell in np.ndindex(*out):
        sl = tuple(
            slice(*_bins(x.shape[1 + d], out[d])[cell[d]]) for d in range(spatial)
        )
        win = x[(slice(None), *sl)]
        res[(slice(None), *cell)] = reduce(win, axis=tuple(range(1, 1 + spatial)))
    return res


@pytest.mark.parametrize("shape,out", [((2, 7, 3), 3), ((2, 5, 7, 3), (2, 4)),
                                       ((1, 4, 5, 6, 2), (3, 2, 4)), ((1, 3, 2), 5)])
@pytest.mark.parametrize("kind", ["average", "max"])
def test_adaptive_pool_matches_numpy(shape, out, kind):
    x = rng.normal(size=shape).astype("float32")
    fn = ops.adaptive_average_pool if kind == "average" else ops.adaptive_max_pool
    ref = _adaptive_ref(x, out, np.mean if kind == "average" else np.max)
    got = fn(x, out, data_format="channels_last")
    np.testing.assert_allclose(ops.convert_to_numpy(got), ref, rtol=1e-5, atol=1e-6)
    xf = np.moveaxis(x, -1, 1)
    got_cf = fn(xf, out, data_format="channels_first")
    np.testing.assert_allclose(
        ops.convert_to_numpy(got_cf), np.moveaxis(ref, -1, 1), rtol=1e-5, atol=1e-6
    )


def test_adaptive_pooling_layers_train():
    model = keras.Sequential([
        keras.Input((9, 11, 3)),
        keras.layers.Conv2D(4, 3),
        keras.layers.AdaptiveMaxPooling2D((3, 2)),
        keras.layers.AdaptiveAveragePooling2D(1),
        keras.layers.Flatten(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="sgd", loss="mse")
    x = rng.normal(size=(8, 9, 11, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    w0 = model.layers[0].kernel.numpy().copy()
    model.fit(x, y, epochs=1, verbose=0)
    assert model.output_shape == (None, 1)
    assert not np.allclose(model.layers[0].kernel.numpy(), w0)


def _unfold_ref(x, k, d, p, s):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    oh = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    cols = np.zeros((n, c, k[0], k[1], oh, ow), x.dtype)
    for i in range(k[0]):
        for j in range(k[1]):
            cols[:, :, i, j] = xp[:, :, i * d[0]: i * d[0] + s[0] * (oh - 1) + 1: s[0],
                                  j * d[1]: j * d[1] + s[1] * (ow - 1) + 1: s[1]]
    return cols.reshape(n, c * k[0] * k[1], oh * ow)


def test_unfold_fold_match_numpy_and_are_adjoint():
    x = rng.normal(size=(2, 3, 7, 6)).astype("float32")
    k, d, p, s = (3, 2), (1, 2), (1, 0), (2, 1)
    cols = ops.unfold(x, k, dilation=d, padding=p, stride=s)
    ref = _unfold_ref(x, k, d, p, s)
    np.testing.assert_allclose(ops.convert_to_numpy(cols), ref, rtol=1e-6)
    # <unfold(x), y> == <x, fold(y)>: fold is unfold's adjoint.
    y = rng.normal(size=ref.shape).astype("float32")
    folded = ops.convert_to_numpy(
        ops.nn.fold(y, (7, 6), k, dilation=d, padding=p, stride=s)
    )
    np.testing.assert_allclose((ref * y).sum(), (x * folded).sum(), rtol=1e-4)
    with pytest.raises(ValueError):
        ops.nn.fold(np.ones((1, 5, 4), "float32"), (4, 4), 2)


def _sparsemax_ref(x):
    z = -np.sort(-x, axis=-1)
    cs = np.cumsum(z, axis=-1)
    r = np.arange(1, x.shape[-1] + 1)
    k = (1 + r * z > cs).sum(axis=-1, keepdims=True)
    tau = (np.take_along_axis(cs, k - 1, axis=-1) - 1) / k
    return np.maximum(x - tau, 0)


def test_sparsemax_matches_numpy_and_trains():
    x = rng.normal(size=(4, 6)).astype("float32")
    got = ops.convert_to_numpy(ops.sparsemax(x))
    np.testing.assert_allclose(got, _sparsemax_ref(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1, rtol=1e-5)
    got0 = ops.convert_to_numpy(ops.sparsemax(x, axis=0))
    np.testing.assert_allclose(got0, _sparsemax_ref(x.T).T, rtol=1e-5, atol=1e-6)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="sparsemax")])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.eye(5)[[0, 1, 2, 3]].astype("float32"), epochs=1, verbose=0)


def test_ctc_loss_values_and_gradient():
    labels = np.array([[1, 2, 1], [1, 2, 2]])
    outputs = np.array([
        [[0.4, 0.8, 0.4], [0.2, 0.8, 0.3], [0.9, 0.4, 0.5]],
        [[0.4, 0.8, 0.4], [0.2, 0.3, 0.3], [0.4, 0.3, 0.2]],
    ], "float32")
    loss = ops.nn.ctc_loss(labels, outputs, np.array([3, 2]), np.array([3, 2]))
    np.testing.assert_allclose(ops.convert_to_numpy(loss), [3.4411672, 1.91680186], rtol=1e-5)

    # CTC loss through a model: the logits' gradient comes from the engine kernel.
    y = np.array([[1, 2, 0], [3, 3, 1]], "int32")  # 0 (blank) pads
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.Dense(5)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.CTC())
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=5, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert np.isfinite(before) and after < before


def test_ctc_decode_greedy_and_beam():
    x = np.log(np.array([[[0.1, 0.6, 0.3], [0.2, 0.7, 0.1], [0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]]))
    (dec,), scores = ops.nn.ctc_decode(x, [4], strategy="greedy")
    np.testing.assert_array_equal(ops.convert_to_numpy(dec), [[1, 2, -1, -1]])
    assert ops.convert_to_numpy(dec).dtype == np.int32
    paths, scores = ops.nn.ctc_decode(x, [4], strategy="beam_search", beam_width=5, top_paths=2)
    assert ops.convert_to_numpy(paths).shape == (2, 1, 4)
    s = ops.convert_to_numpy(scores)
    assert s.shape == (1, 2) and s[0, 0] >= s[0, 1]
    with pytest.raises(ValueError, match="Invalid strategy"):
        ops.nn.ctc_decode(x, [4], strategy="nope")


def _attention_ref(q, k, v, mask=None, causal=False):
    reps = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, reps, axis=2), np.repeat(v, reps, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    keep = np.ones(logits.shape, bool)
    if mask is not None:
        keep &= mask
    if causal:
        keep &= np.tril(np.ones(logits.shape[-2:], bool))
    logits = np.where(keep, logits, -1e30)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


@pytest.mark.parametrize("flash", [None, True, False])
def test_dot_product_attention_gqa_causal_flash(flash):
    q = rng.normal(size=(2, 5, 4, 8)).astype("float32")
    k = rng.normal(size=(2, 5, 2, 8)).astype("float32")
    v = rng.normal(size=(2, 5, 2, 8)).astype("float32")
    mask = rng.uniform(size=(2, 1, 5, 5)) > 0.3
    mask[..., 0] = True
    got = ops.dot_product_attention(q, k, v, mask=mask, is_causal=True, flash_attention=flash)
    np.testing.assert_allclose(
        ops.convert_to_numpy(got), _attention_ref(q, k, v, mask, True), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="multiple"):
        ops.dot_product_attention(q, k[:, :, :1].repeat(3, axis=2), v[:, :, :1].repeat(3, axis=2))


def test_polar_builds_complex_from_magnitude_and_angle():
    # keras.ops.polar reaches the backend through math._get_complex_tensor_from_tuple.
    mag = rng.random((2, 3)).astype(np.float32)
    angle = rng.uniform(-3, 3, (2, 3)).astype(np.float32)
    out = ops.polar(mag, angle)
    assert str(out.dtype) == "complex64"
    np.testing.assert_allclose(ops.convert_to_numpy(out), mag * np.exp(1j * angle), rtol=1e-6, atol=1e-6)
