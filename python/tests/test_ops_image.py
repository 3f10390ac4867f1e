"""keras.ops.image on KERAS_BACKEND=swift against numpy references.

The references restate jax's formulas (jax.image.scale_and_translate weight
matrices, jax.scipy.ndimage.map_coordinates index fixers) in plain numpy, so
these tests need neither jax nor TensorFlow.
"""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import ops  # noqa: E402

rng = np.random.default_rng(0)


def _kernel(method, x):
    if method in ("bilinear", "linear"):
        return np.maximum(0.0, 1.0 - x)
    if method in ("bicubic", "cubic"):
        out = ((1.5 * x - 2.5) * x) * x + 1.0
        out = np.where(x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, out)
        return np.where(x >= 2.0, 0.0, out)
    r = {"lanczos3": 3.0, "lanczos5": 5.0}[method]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = r * np.sin(np.pi * x) * np.sin(np.pi * x / r) / (np.pi**2 * x**2)
    return np.where(x > r, 0.0, np.where(x > 1e-3, y, 1.0))


def _weights(method, in_size, out_size, scale, translation, antialias):
    """jax's compute_weight_mat: (in_size, out_size)."""
    inv = 1.0 / scale
    kernel_scale = max(inv, 1.0) if antialias else 1.0
    sample = (np.arange(out_size) + 0.5) * inv - translation * inv - 0.5
    x = np.abs(sample[None, :] - np.arange(in_size)[:, None]) / kernel_scale
    w = _kernel(method, x)
    total = w.sum(axis=0, keepdims=True)
    big = np.abs(total) > 1000 * np.finfo(np.float32).eps
    w = np.where(big, w / np.where(total != 0, total, 1), 0)
    inside = (sample >= -0.5) & (sample <= in_size - 0.5)
    return np.where(inside[None, :], w, 0)


def _resample(x, axis, w):
    return np.moveaxis(np.tensordot(np.moveaxis(x, axis, -1), w, axes=1), -1, axis)


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "lanczos3", "lanczos5"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [(5, 13), (17, 4)])
def test_resize_matches_weight_matrix_reference(method, antialias, size):
    x = rng.uniform(0, 255, size=(2, 9, 11, 3))
    out = ops.image.resize(x.astype("float32"), size, interpolation=method, antialias=antialias)
    ref = _resample(x, 1, _weights(method, 9, size[0], size[0] / 9, 0.0, antialias))
    ref = _resample(ref, 2, _weights(method, 11, size[1], size[1] / 11, 0.0, antialias))
    assert out.shape == (2, *size, 3)
    np.testing.assert_allclose(ops.convert_to_numpy(out), ref, atol=2e-3, rtol=1e-5)


def test_resize_nearest_and_channels_first():
    x = np.arange(2 * 3 * 4 * 6, dtype="int32").reshape(2, 3, 4, 6)
    out = ops.image.resize(x, (2, 3), interpolation="nearest", data_format="channels_first")
    assert ops.convert_to_numpy(out).dtype == np.int32
    rows = np.floor((np.arange(2) + 0.5) * 4 / 2).astype(int)
    cols = np.floor((np.arange(3) + 0.5) * 6 / 3).astype(int)
    np.testing.assert_array_equal(ops.convert_to_numpy(out), x[:, :, rows][:, :, :, cols])


def test_resize_uint8_rounds_and_saturates():
    x = np.array([0, 1, 254, 255], "uint8").reshape(1, 2, 2, 1)
    out = ops.image.resize(x, (4, 4), interpolation="bicubic")
    assert ops.convert_to_numpy(out).dtype == np.uint8
    ref = _resample(x.astype("float64"), 1, _weights("bicubic", 2, 4, 2.0, 0.0, False))
    ref = _resample(ref, 2, _weights("bicubic", 2, 4, 2.0, 0.0, False))
    np.testing.assert_array_equal(ops.convert_to_numpy(out), np.clip(np.round(ref), 0, 255))


@pytest.mark.parametrize("method", ["linear", "cubic", "lanczos3"])
def test_scale_and_translate_matches_reference(method):
    x = rng.normal(size=(7, 8, 2))
    scale, translation = np.array([1.7, 0.45]), np.array([-0.8, 1.3])
    out = ops.image.scale_and_translate(
        x.astype("float32"), (9, 5, 2), scale, translation, (0, 1), method, antialias=True
    )
    ref = _resample(x, 0, _weights(method, 7, 9, 1.7, -0.8, True))
    ref = _resample(ref, 1, _weights(method, 8, 5, 0.45, 1.3, True))
    np.testing.assert_allclose(ops.convert_to_numpy(out), ref, atol=1e-5)


_FIXERS = {
    "constant": lambda i, n: i,
    "nearest": lambda i, n: np.clip(i, 0, n - 1),
    "wrap": lambda i, n: i % n,
    "mirror": lambda i, n: np.abs((i + n - 1) % (2 * n - 2) - (n - 1)),
    "reflect": lambda i, n: (np.abs((2 * i + 1 + 2 * n) % (4 * n) - 2 * n) - 1) // 2,
}


def _map_coordinates_ref(x, coords, order, mode, cval):
    nodes = []
    for c, n in zip(coords, x.shape):
        if order == 0:
            i = np.trunc(c + np.copysign(0.5, c)).astype(int)  # half away from zero
            pairs = [(i, np.ones_like(c))]
        else:
            lo = np.floor(c)
            pairs = [(lo.astype(int), 1 - (c - lo)), (lo.astype(int) + 1, c - lo)]
        nodes.append(
            [
                (_FIXERS[mode](i, n), (i >= 0) & (i < n) | (mode != "constant"), w)
                for i, w in pairs
            ]
        )
    out = 0.0
    for combo in np.ndindex(*[len(n) for n in nodes]):
        idx, ok, w = zip(*[nodes[d][k] for d, k in enumerate(combo)])
        valid = np.logical_and.reduce(ok)
        safe = tuple(np.where(valid, i, 0) for i in idx)
        out = out + np.prod(w, axis=0) * np.where(valid, x[safe], cval)
    return out


@pytest.mark.parametrize("mode", ["constant", "nearest", "wrap", "mirror", "reflect"])
@pytest.mark.parametrize("order", [0, 1])
def test_map_coordinates_matches_reference(mode, order):
    x = rng.normal(size=(4, 5, 3))
    coords = np.stack([rng.uniform(-6, 10, size=(6, 7)) for _ in range(3)])
    out = ops.image.map_coordinates(x, coords, order, fill_mode=mode, fill_value=0.75)
    ref = _map_coordinates_ref(x, coords, order, mode, 0.75)
    np.testing.assert_allclose(ops.convert_to_numpy(out), ref, rtol=1e-6, atol=1e-6)


def test_map_coordinates_rejects_bad_arguments():
    x = np.zeros((3, 3), "float32")
    with pytest.raises(ValueError):
        ops.image.map_coordinates(x, np.zeros((3, 4)), 1)
    with pytest.raises(ValueError):
        ops.image.map_coordinates(x, np.zeros((2, 4)), 3)
    with pytest.raises(ValueError):
        ops.image.map_coordinates(x, np.zeros((2, 4)), 1, fill_mode="edge")


def test_affine_transform_translation_and_projective():
    x = rng.uniform(size=(2, 6, 7, 3)).astype("float32")
    # x' = x + 2, y' = y - 1: output (y, x) reads input (y - 1, x + 2).
    t = np.array([1, 0, 2, 0, 1, -1, 0, 0], "float32")
    out = ops.convert_to_numpy(ops.image.affine_transform(x, t, interpolation="nearest"))
    ref = np.zeros_like(x)
    ref[:, 1:, :5] = x[:, :5, 2:]
    np.testing.assert_allclose(out, ref)
    # A projective row: k = c0 x + c1 y + 1 divides both coordinates.
    t = np.array([[1.2, 0.1, 0.5, -0.2, 0.9, 1.0, 0.01, 0.02]], "float32")
    out = ops.convert_to_numpy(
        ops.image.affine_transform(x[:1], t, fill_mode="reflect")
    )
    yy, xx = np.meshgrid(np.arange(6), np.arange(7), indexing="ij")
    k = 0.01 * xx + 0.02 * yy + 1
    coords = np.stack([(-0.2 * xx + 0.9 * yy + 1.0) / k, (1.2 * xx + 0.1 * yy + 0.5) / k])
    for c in range(3):
        ref = _map_coordinates_ref(x[0, :, :, c].astype("float64"), coords, 1, "reflect", 0.0)
        np.testing.assert_allclose(out[0, :, :, c], ref, atol=1e-4)


def test_perspective_transform_identity_points():
    x = rng.uniform(size=(5, 6, 2)).astype("float32")
    pts = np.array([[0, 0], [0, 4], [5, 0], [5, 4]], "float32")
    out = ops.image.perspective_transform(x, pts, pts)
    np.testing.assert_allclose(ops.convert_to_numpy(out), x, atol=1e-4)
    with pytest.raises(ValueError):
        ops.image.perspective_transform(x, pts[:3], pts[:3])


def test_gaussian_blur_matches_direct_convolution():
    x = rng.uniform(size=(1, 8, 9, 2)).astype("float32")
    out = ops.convert_to_numpy(ops.image.gaussian_blur(x, (3, 5), (0.7, 1.4)))

    def k1d(n, s):
        v = np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / s) ** 2)
        return v / v.sum()

    k = np.outer(k1d(5, 1.4), k1d(3, 0.7))  # rows: size[1] / sigma[1]
    padded = np.pad(x, [(0, 0), (2, 2), (1, 1), (0, 0)])
    ref = np.zeros_like(x)
    for dy in range(5):
        for dx in range(3):
            ref += k[dy, dx] * padded[:, dy : dy + 8, dx : dx + 9]
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_sobel_edges_vertical_edge_channels_first():
    x = np.zeros((1, 1, 5, 5), "float32")
    x[..., 3:] = 1.0
    out = ops.convert_to_numpy(ops.image.sobel_edges(x, data_format="channels_first"))
    assert out.shape == (1, 1, 5, 5, 2)
    dy, dx = out[0, 0, ..., 0], out[0, 0, ..., 1]
    np.testing.assert_allclose(dx[1:4, 2], 4.0)
    np.testing.assert_allclose(dy[1:4, :], 0.0)


def test_hsv_round_trip_and_known_colours():
    x = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    back = ops.image.hsv_to_rgb(ops.image.rgb_to_hsv(x))
    np.testing.assert_allclose(ops.convert_to_numpy(back), x, atol=1e-5)
    red_green_blue = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1]]], "float32")
    hsv = ops.convert_to_numpy(ops.image.rgb_to_hsv(red_green_blue))
    np.testing.assert_allclose(hsv[0, :, 0], [0, 1 / 3, 2 / 3], atol=1e-6)
    with pytest.raises(ValueError):
        ops.image.rgb_to_hsv(np.zeros((2, 2, 3), "int32"))


def test_elastic_transform_without_displacement_is_identity():
    x = rng.uniform(size=(6, 7, 3)).astype("float32")
    out = ops.image.elastic_transform(x, alpha=0.0, sigma=1.0, seed=3)
    np.testing.assert_allclose(ops.convert_to_numpy(out), x, atol=1e-6)
    moved = ops.convert_to_numpy(ops.image.elastic_transform(x, alpha=5.0, sigma=1.0, seed=3))
    assert moved.shape == x.shape and not np.allclose(moved, x)
