"""``keras.ops.image`` on the Swift engine."""

from keras.src.backend.config import standardize_data_format
from keras_swift.src import random as krandom
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_float_dtype
from keras_swift.src.core import result_type
from keras_swift.src.engine import op
from keras_swift.src.ops import numpy as knp


RESIZE_INTERPOLATIONS = ("bilinear", "nearest", "lanczos3", "lanczos5", "bicubic")
AFFINE_TRANSFORM_INTERPOLATIONS = {"nearest": 0, "bilinear": 1}  # to order
FILL_MODES = ("constant", "nearest", "wrap", "mirror", "reflect")
SCALE_AND_TRANSLATE_METHODS = (
    "linear",
    "bilinear",
    "trilinear",
    "cubic",
    "bicubic",
    "tricubic",
    "lanczos3",
    "lanczos5",
)


def _check_rank(images):
    if len(images.shape) not in (3, 4):
        raise ValueError(
            "Invalid images rank: expected rank 3 (single image) "
            "or rank 4 (batch of images). Received input with shape: "
            f"images.shape={images.shape}"
        )


def _check_interpolation(interpolation):
    if interpolation not in AFFINE_TRANSFORM_INTERPOLATIONS:
        raise ValueError(
            "Invalid value for argument `interpolation`. Expected of one "
            f"{set(AFFINE_TRANSFORM_INTERPOLATIONS)}. Received: "
            f"interpolation={interpolation}"
        )


def _check_fill_mode(fill_mode):
    if fill_mode not in FILL_MODES:
        raise ValueError(
            "Invalid value for argument `fill_mode`. Expected of one "
            f"{set(FILL_MODES)}. Received: fill_mode={fill_mode}"
        )


def _spatial_axes(ndim, data_format):
    h_axis = ndim - 3 if data_format == "channels_last" else ndim - 2
    return [h_axis, h_axis + 1]


def _to_nhwc(images, data_format):
    """images as a batch (N, H, W, C), and whether a batch axis was added."""
    squeeze = images.ndim == 3
    if squeeze:
        images = op("reshape", images, shape=[1, *images.shape])
    if data_format == "channels_first":
        images = op("transpose", images, perm=[0, 2, 3, 1])
    return images, squeeze


def _from_nhwc(images, squeeze, data_format):
    if data_format == "channels_first":
        images = op("transpose", images, perm=[0, 3, 1, 2])
    if squeeze:
        images = op("reshape", images, shape=list(images.shape[1:]))
    return images


def resize(
    images,
    size,
    interpolation="bilinear",
    antialias=False,
    crop_to_aspect_ratio=False,
    pad_to_aspect_ratio=False,
    fill_mode="constant",
    fill_value=0.0,
    data_format=None,
):
    data_format = standardize_data_format(data_format)
    if interpolation not in RESIZE_INTERPOLATIONS:
        raise ValueError(
            "Invalid value for argument `interpolation`. Expected of one "
            f"{RESIZE_INTERPOLATIONS}. Received: interpolation={interpolation}"
        )
    if fill_mode != "constant":
        raise ValueError(
            "Invalid value for argument `fill_mode`. Only `'constant'` "
            f"is supported. Received: fill_mode={fill_mode}"
        )
    if pad_to_aspect_ratio and crop_to_aspect_ratio:
        raise ValueError(
            "Only one of `pad_to_aspect_ratio` & `crop_to_aspect_ratio` "
            "can be `True`."
        )
    if not len(size) == 2:
        raise ValueError(
            "Argument `size` must be a tuple of two elements "
            f"(height, width). Received: size={size}"
        )
    images = convert_to_tensor(images)
    _check_rank(images)
    target_h, target_w = int(size[0]), int(size[1])
    h_axis, w_axis = _spatial_axes(images.ndim, data_format)
    height, width = images.shape[h_axis], images.shape[w_axis]

    def window(x, h0, h1, w0, w1):
        idx = [slice(None)] * x.ndim
        idx[h_axis] = slice(h0, h1)
        idx[w_axis] = slice(w0, w1)
        return x[tuple(idx)]

    if crop_to_aspect_ratio:
        crop_h = max(min(height, int(float(width * target_h) / target_w)), 1)
        crop_w = max(min(width, int(float(height * target_w) / target_h)), 1)
        h0 = int(float(height - crop_h) / 2)
        w0 = int(float(width - crop_w) / 2)
        images = window(images, h0, h0 + crop_h, w0, w0 + crop_w)
    elif pad_to_aspect_ratio:
        pad_h = max(height, int(float(width * target_h) / target_w))
        pad_w = max(width, int(float(height * target_w) / target_h))
        h0 = int(float(pad_h - height) / 2)
        w0 = int(float(pad_w - width) / 2)
        pads = [0] * (2 * images.ndim)
        if h0 > 0:
            pads[2 * h_axis] = pads[2 * h_axis + 1] = h0
        elif w0 > 0:
            pads[2 * w_axis] = pads[2 * w_axis + 1] = w0
        images = op("pad", images, pads=pads, mode="constant", value=float(fill_value))

    if interpolation != "nearest" and not is_float_dtype(images.dtype):
        images = cast(images, result_type(images.dtype, float))
    return op(
        "resize",
        images,
        axes=[h_axis, w_axis],
        sizes=[target_h, target_w],
        method=interpolation,
        antialias=bool(antialias),
    )


def rgb_to_grayscale(images, data_format=None):
    images = convert_to_tensor(images)
    data_format = standardize_data_format(data_format)
    channels_axis = -1 if data_format == "channels_last" else -3
    if len(images.shape) not in (3, 4):
        raise ValueError(
            "Invalid images rank: expected rank 3 (single image) "
            "or rank 4 (batch of images). Received input with shape: "
            f"images.shape={images.shape}"
        )
    if images.shape[channels_axis] not in (1, 3):
        raise ValueError(
            "Invalid channel size: expected 3 (RGB) or 1 (Grayscale). "
            f"Received input with shape: images.shape={images.shape}"
        )
    if images.shape[channels_axis] == 1:
        return images
    original_dtype = images.dtype
    compute_dtype = result_type(images.dtype, float)
    images = cast(images, compute_dtype)
    shape = [1] * images.ndim
    shape[channels_axis] = 3
    weights = op(
        "reshape",
        convert_to_tensor([0.2989, 0.5870, 0.1140], compute_dtype),
        shape=shape,
    )
    gray = op(
        "sum",
        op("multiply", images, weights),
        axes=[channels_axis],
        keepdims=True,
    )
    return cast(gray, original_dtype)


_EPS = {
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}


def _channel(images, axis, k):
    """Channel k of images, the channel axis dropped."""
    return op(
        "take", images, convert_to_tensor(k, "int32"), axis=axis
    )


def _check_hsv_input(images, data_format):
    images = convert_to_tensor(images)
    data_format = standardize_data_format(data_format)
    channels_axis = -1 if data_format == "channels_last" else -3
    _check_rank(images)
    if not is_float_dtype(images.dtype):
        raise ValueError(
            "Invalid images dtype: expected float dtype. "
            f"Received: images.dtype={images.dtype}"
        )
    if images.shape[channels_axis] != 3:
        raise ValueError(
            "Input images must have 3 channels, but received images with "
            f"{images.shape[channels_axis]} channels."
        )
    return images, channels_axis


def rgb_to_hsv(images, data_format=None):
    # dm_pix's formulation (as the jax backend), composed of engine ops.
    images, axis = _check_hsv_input(images, data_format)
    dtype = images.dtype
    eps = _EPS[dtype]
    zero = convert_to_tensor(0.0, dtype)
    one = convert_to_tensor(1.0, dtype)
    images = knp.where(knp.less(knp.abs(images), eps), zero, images)
    r, g, b = (_channel(images, axis, k) for k in range(3))
    value = knp.maximum(knp.maximum(r, g), b)
    range_ = knp.subtract(value, knp.minimum(knp.minimum(r, g), b))
    safe_value = knp.where(knp.greater(value, 0), value, one)
    safe_range = knp.where(knp.greater(range_, 0), range_, one)
    saturation = knp.where(
        knp.greater(value, 0), knp.divide(range_, safe_value), zero
    )
    norm = knp.divide(one, knp.multiply(safe_range, 6.0))
    hue = knp.where(
        knp.equal(value, g),
        knp.add(knp.multiply(norm, knp.subtract(b, r)), 2.0 / 6.0),
        knp.add(knp.multiply(norm, knp.subtract(r, g)), 4.0 / 6.0),
    )
    hue = knp.where(
        knp.equal(value, r), knp.multiply(norm, knp.subtract(g, b)), hue
    )
    hue = knp.add(
        knp.where(knp.greater(range_, 0), hue, zero),
        cast(knp.less(hue, 0), dtype),
    )
    return knp.stack([hue, saturation, value], axis=axis)


def hsv_to_rgb(images, data_format=None):
    images, axis = _check_hsv_input(images, data_format)
    hue, saturation, value = (_channel(images, axis, k) for k in range(3))
    dh = knp.multiply(knp.mod(hue, 1.0), 6.0)
    dr = knp.clip(knp.subtract(knp.abs(knp.subtract(dh, 3.0)), 1.0), 0.0, 1.0)
    dg = knp.clip(knp.subtract(2.0, knp.abs(knp.subtract(dh, 2.0))), 0.0, 1.0)
    db = knp.clip(knp.subtract(2.0, knp.abs(knp.subtract(dh, 4.0))), 0.0, 1.0)
    one_minus_s = knp.subtract(1.0, saturation)
    planes = [
        knp.multiply(value, knp.add(one_minus_s, knp.multiply(saturation, d)))
        for d in (dr, dg, db)
    ]
    return knp.stack(planes, axis=axis)


def scale_and_translate(
    images,
    output_shape,
    scale,
    translation,
    spatial_dims,
    method,
    antialias=True,
):
    if method not in SCALE_AND_TRANSLATE_METHODS:
        raise ValueError(
            "Invalid value for argument `method`. Expected of one "
            f"{set(SCALE_AND_TRANSLATE_METHODS)}. Received: method={method}"
        )
    images = convert_to_tensor(images)
    output_shape = [int(d) for d in output_shape]
    spatial_dims = [int(d) for d in spatial_dims]
    if len(output_shape) != images.ndim:
        raise ValueError(
            "`output_shape` must have one entry per dimension of `images`; "
            f"received output_shape={output_shape} for images.shape="
            f"{images.shape}"
        )
    if any(not -images.ndim <= d < images.ndim for d in spatial_dims):
        raise ValueError(
            f"`spatial_dims` {spatial_dims} out of range for images of rank "
            f"{images.ndim}"
        )
    spatial = {d % images.ndim for d in spatial_dims}
    for d in range(images.ndim):
        if d not in spatial and output_shape[d] != images.shape[d]:
            raise ValueError(
                f"`output_shape` {output_shape} changes dimension {d}, which "
                f"is not in spatial_dims={spatial_dims}"
            )
    # The scale and translation are read once, at the boundary, as attributes.
    scale = [float(v) for v in convert_to_numpy(scale).reshape(-1)]
    translation = [float(v) for v in convert_to_numpy(translation).reshape(-1)]
    return op(
        "scale_and_translate",
        images,
        axes=spatial_dims,
        sizes=[output_shape[d] for d in spatial_dims],
        scales=scale,
        translations=translation,
        method=method,
        antialias=bool(antialias),
    )


def map_coordinates(
    inputs, coordinates, order, fill_mode="constant", fill_value=0.0
):
    inputs = convert_to_tensor(inputs)
    coordinates = convert_to_tensor(coordinates)
    if coordinates.shape[0] != len(inputs.shape):
        raise ValueError(
            "First dim of `coordinates` must be the same as the rank of "
            "`inputs`. "
            f"Received inputs with shape: {inputs.shape} and coordinate "
            f"leading dim of {coordinates.shape[0]}"
        )
    if len(coordinates.shape) < 2:
        raise ValueError(
            "Invalid coordinates rank: expected at least rank 2."
            f" Received input with shape: {coordinates.shape}"
        )
    _check_fill_mode(fill_mode)
    if order not in range(2):
        raise ValueError(
            "Invalid value for argument `order`. Expected one of "
            f"{[0, 1]}. Received: order={order}"
        )
    return op(
        "map_coordinates",
        inputs,
        coordinates,
        order=int(order),
        fill_mode=fill_mode,
        fill_value=float(fill_value),
    )


def _projective_coordinates(transforms, height, width):
    """Input (y, x) of every output pixel, (B, H, W, 2), for projective transforms
    (B, 8) [a0, a1, a2, b0, b1, b2, c0, c1]: x' = (a0 x + a1 y + a2) / k,
    y' = (b0 x + b1 y + b2) / k, k = c0 x + c1 y + 1."""
    dtype = transforms.dtype
    batch = transforms.shape[0]
    x = op("reshape", knp.arange(width, dtype=dtype), shape=[1, 1, width])
    y = op("reshape", knp.arange(height, dtype=dtype), shape=[1, height, 1])
    t = op("reshape", op("transpose", transforms, perm=[1, 0]), shape=[8, batch, 1, 1])
    a0, a1, a2, b0, b1, b2, c0, c1 = (t[i] for i in range(8))
    k = knp.add(knp.add(knp.multiply(c0, x), knp.multiply(c1, y)), 1.0)
    x_in = knp.divide(knp.add(knp.add(knp.multiply(a0, x), knp.multiply(a1, y)), a2), k)
    y_in = knp.divide(knp.add(knp.add(knp.multiply(b0, x), knp.multiply(b1, y)), b2), k)
    return knp.stack([y_in, x_in], axis=-1)


def _coordinate_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


def affine_transform(
    images,
    transform,
    interpolation="bilinear",
    fill_mode="constant",
    fill_value=0,
    data_format=None,
):
    data_format = standardize_data_format(data_format)
    _check_interpolation(interpolation)
    _check_fill_mode(fill_mode)
    images = convert_to_tensor(images)
    transform = convert_to_tensor(transform)
    _check_rank(images)
    if len(transform.shape) not in (1, 2):
        raise ValueError(
            "Invalid transform rank: expected rank 1 (single transform) "
            "or rank 2 (batch of transforms). Received input with shape: "
            f"transform.shape={transform.shape}"
        )
    if transform.shape[-1] != 8:
        raise ValueError(
            "Invalid transform shape: expected 8 values per transform. "
            f"Received: transform.shape={transform.shape}"
        )
    images, squeeze = _to_nhwc(images, data_format)
    if transform.ndim == 1:
        transform = op("reshape", transform, shape=[1, 8])
    transform = cast(transform, _coordinate_dtype(transform.dtype))
    out = _projective_warp(images, transform, interpolation, fill_mode, fill_value)
    return _from_nhwc(out, squeeze, data_format)


def _projective_warp(images, transforms, interpolation, fill_mode, fill_value):
    """NHWC `images` sampled at each output pixel's image under `transforms` (N or 1, 8)."""
    coordinates = _projective_coordinates(transforms, images.shape[1], images.shape[2])
    return _grid_sample(images, coordinates, interpolation, fill_mode, fill_value)


def _grid_sample(images, coordinates, interpolation, fill_mode, fill_value):
    """NHWC `images` sampled at (row, col) `coordinates` (N or 1, H', W', 2)."""
    return op(
        "grid_sample",
        images,
        coordinates,
        order=AFFINE_TRANSFORM_INTERPOLATIONS[interpolation],
        fill_mode=fill_mode,
        fill_value=float(fill_value),
    )


def compute_homography_matrix(start_points, end_points):
    """The 8 projective coefficients mapping each end point to its start point
    (batched: points (..., 4, 2)), by an 8 x 8 linear solve."""
    start_points = convert_to_tensor(start_points)
    end_points = convert_to_tensor(end_points)
    dtype = result_type(start_points.dtype, end_points.dtype, float)
    start_points = cast(start_points, dtype)
    end_points = cast(end_points, dtype)
    start_x, start_y = start_points[..., 0], start_points[..., 1]
    end_x, end_y = end_points[..., 0], end_points[..., 1]
    zeros = knp.zeros_like(end_x)
    ones = knp.ones_like(end_x)
    x_rows = knp.stack(
        [end_x, end_y, ones, zeros, zeros, zeros,
         knp.negative(knp.multiply(start_x, end_x)),
         knp.negative(knp.multiply(start_x, end_y))],
        axis=-1,
    )
    y_rows = knp.stack(
        [zeros, zeros, zeros, end_x, end_y, ones,
         knp.negative(knp.multiply(start_y, end_x)),
         knp.negative(knp.multiply(start_y, end_y))],
        axis=-1,
    )
    coefficients = knp.concatenate([x_rows, y_rows], axis=-2)
    target = knp.expand_dims(knp.concatenate([start_x, start_y], axis=-1), -1)
    return knp.squeeze(op("solve", coefficients, target), axis=-1)


def perspective_transform(
    images,
    start_points,
    end_points,
    interpolation="bilinear",
    fill_value=0,
    data_format=None,
):
    data_format = standardize_data_format(data_format)
    _check_interpolation(interpolation)
    images = convert_to_tensor(images)
    start_points = convert_to_tensor(start_points)
    end_points = convert_to_tensor(end_points)
    _check_rank(images)
    for name, points in (("start_points", start_points), ("end_points", end_points)):
        if tuple(points.shape[-2:]) != (4, 2) or points.ndim not in (2, 3):
            raise ValueError(
                f"Invalid {name} shape: expected (4,2) for a single image"
                f" or (N,4,2) for a batch. Received shape: {points.shape}"
            )
    if start_points.shape != end_points.shape:
        raise ValueError(
            "start_points and end_points must have the same shape."
            f" Received start_points.shape={start_points.shape}, "
            f"end_points.shape={end_points.shape}"
        )
    images, squeeze = _to_nhwc(images, data_format)
    if start_points.ndim == 2:
        start_points = op("reshape", start_points, shape=[1, 4, 2])
        end_points = op("reshape", end_points, shape=[1, 4, 2])
    dtype = "float64" if "float64" in (start_points.dtype, end_points.dtype) else "float32"
    transforms = compute_homography_matrix(
        cast(start_points, dtype), cast(end_points, dtype)
    )
    out = _projective_warp(images, transforms, interpolation, "constant", fill_value)
    return _from_nhwc(out, squeeze, data_format)


def gaussian_blur(
    images, kernel_size=(3, 3), sigma=(1.0, 1.0), data_format=None
):
    data_format = standardize_data_format(data_format)
    images = convert_to_tensor(images)
    _check_rank(images)
    if not is_float_dtype(images.dtype):
        images = cast(images, result_type(images.dtype, float))
    kernel_size = [int(k) for k in convert_to_numpy(kernel_size).reshape(-1)]
    sigma = [float(s) for s in convert_to_numpy(sigma).reshape(-1)]
    if len(sigma) == 1:
        sigma = sigma * 2
    if len(kernel_size) != 2 or min(kernel_size) < 1 or len(sigma) != 2:
        raise ValueError(
            "`kernel_size` must be two positive integers and `sigma` two "
            f"floats. Received: kernel_size={kernel_size}, sigma={sigma}"
        )
    # The jax backend's kernel is outer(k(size[1], sigma[1]), k(size[0],
    # sigma[0])): rows use index 1, columns index 0. Separable, so it runs
    # as one 1-D pass per axis.
    return op(
        "gaussian_blur",
        images,
        axes=_spatial_axes(images.ndim, data_format),
        sizes=[kernel_size[1], kernel_size[0]],
        sigmas=[sigma[1], sigma[0]],
    )


def elastic_transform(
    images,
    alpha=20.0,
    sigma=5.0,
    interpolation="bilinear",
    fill_mode="reflect",
    fill_value=0.0,
    seed=None,
    data_format=None,
):
    data_format = standardize_data_format(data_format)
    _check_interpolation(interpolation)
    _check_fill_mode(fill_mode)
    images = convert_to_tensor(images)
    _check_rank(images)
    input_dtype = images.dtype
    alpha = float(alpha)
    sigma = float(sigma)
    if sigma <= 0:
        raise ValueError(f"`sigma` must be positive. Received: sigma={sigma}")
    kernel_size = int(6 * sigma) | 1
    images, squeeze = _to_nhwc(images, data_format)
    batch, height, width, _ = images.shape
    compute_dtype = (
        input_dtype if input_dtype in ("float32", "float64") else "float32"
    )
    # Two independent displacement fields (the jax backend draws dx and dy
    # from the same seed, which makes them equal).
    noise = krandom.normal(
        (batch, height, width, 2), dtype=compute_dtype, seed=seed
    )
    noise = knp.multiply(noise, sigma)
    field = gaussian_blur(
        noise,
        kernel_size=(kernel_size, kernel_size),
        sigma=(sigma, sigma),
        data_format="channels_last",
    )
    field = knp.multiply(field, alpha)
    rows, cols = knp.meshgrid(
        knp.arange(height, dtype=compute_dtype),
        knp.arange(width, dtype=compute_dtype),
        indexing="ij",
    )
    grid = op("reshape", knp.stack([rows, cols], axis=-1), shape=[1, height, width, 2])
    # field channel 0 displaces x, channel 1 displaces y.
    coordinates = knp.add(grid, knp.flip(field, axis=-1))
    out = _grid_sample(images, coordinates, interpolation, fill_mode, fill_value)
    return cast(_from_nhwc(out, squeeze, data_format), input_dtype)


def sobel_edges(images, data_format=None):
    data_format = standardize_data_format(data_format)
    images = convert_to_tensor(images)
    if images.ndim != 4:
        raise ValueError(
            "Invalid images rank: expected rank 4 (batch of images). "
            f"Received: images.shape={images.shape}"
        )
    if not is_float_dtype(images.dtype):
        images = cast(images, result_type(images.dtype, float))
    axes = _spatial_axes(4, data_format)
    # The 3 x 3 Sobel kernels are separable: a derivative along one axis
    # times a [1, 2, 1] smoothing along the other.
    dy = op("separable_filter", images, axes=axes, sizes=[3, 3], taps=[-1, 0, 1, 1, 2, 1])
    dx = op("separable_filter", images, axes=axes, sizes=[3, 3], taps=[1, 2, 1, -1, 0, 1])
    return knp.stack([dy, dx], axis=-1)
