"""``keras.ops.image`` on the Swift engine."""

import numpy as np

from keras.src.backend.config import standardize_data_format
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import not_implemented
from keras_swift.src.core import op
from keras_swift.src.core import result_type


RESIZE_INTERPOLATIONS = ("bilinear", "nearest", "lanczos3", "lanczos5", "bicubic")


def _resize_axis(x, axis, out_size, interpolation):
    """Resample one spatial axis (half-pixel centres, no antialiasing).

    The gather positions and weights depend only on the static sizes.
    """
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    scale = in_size / out_size
    centres = (np.arange(out_size) + 0.5) * scale
    if interpolation == "nearest":
        index = np.minimum(np.floor(centres), in_size - 1).astype(np.int32)
        return op("take", x, convert_to_tensor(index, "int32"), axis=axis)
    src = np.clip(centres - 0.5, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int32)
    hi = np.minimum(lo + 1, in_size - 1).astype(np.int32)
    shape = [1] * x.ndim
    shape[axis] = out_size
    w = op("reshape", convert_to_tensor((src - lo).astype(np.float32), x.dtype), shape=shape)
    a = op("take", x, convert_to_tensor(lo, "int32"), axis=axis)
    b = op("take", x, convert_to_tensor(hi, "int32"), axis=axis)
    return op("add", a, op("multiply", w, op("subtract", b, a)))


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
    if images.ndim not in (3, 4):
        raise ValueError(
            "Invalid images rank: expected rank 3 (single image) "
            "or rank 4 (batch of images). Received input with shape: "
            f"images.shape={images.shape}"
        )
    if interpolation not in ("bilinear", "nearest"):
        raise not_implemented(f"image.resize(interpolation={interpolation!r})")
    target_h, target_w = int(size[0]), int(size[1])
    h_axis = images.ndim - 3 if data_format == "channels_last" else images.ndim - 2
    w_axis = h_axis + 1
    height, width = images.shape[h_axis], images.shape[w_axis]
    if antialias and (target_h < height or target_w < width):
        raise not_implemented("image.resize(antialias=True) when downsampling")

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

    original_dtype = images.dtype
    if interpolation == "bilinear" and original_dtype not in (
        "float16", "bfloat16", "float32", "float64"
    ):
        images = cast(images, result_type(original_dtype, float))
    out = _resize_axis(images, h_axis, target_h, interpolation)
    out = _resize_axis(out, w_axis, target_w, interpolation)
    return out


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


# Not implemented yet (generated stubs: keras.ops signatures; each raises
# NotImplementedError until the engine grows the op or a composition lands).


def affine_transform(images, transform, interpolation='bilinear', fill_mode='constant', fill_value=0, data_format=None):
    raise not_implemented("image.affine_transform")


def compute_homography_matrix(start_points, end_points):
    raise not_implemented("image.compute_homography_matrix")


def elastic_transform(images, alpha=20.0, sigma=5.0, interpolation='bilinear', fill_mode='reflect', fill_value=0.0, seed=None, data_format=None):
    raise not_implemented("image.elastic_transform")


def gaussian_blur(images, kernel_size=(3, 3), sigma=(1.0, 1.0), data_format=None):
    raise not_implemented("image.gaussian_blur")


def hsv_to_rgb(images, data_format=None):
    raise not_implemented("image.hsv_to_rgb")


def map_coordinates(inputs, coordinates, order, fill_mode='constant', fill_value=0.0):
    raise not_implemented("image.map_coordinates")


def perspective_transform(images, start_points, end_points, interpolation='bilinear', fill_value=0, data_format=None):
    raise not_implemented("image.perspective_transform")


def rgb_to_hsv(images, data_format=None):
    raise not_implemented("image.rgb_to_hsv")


def scale_and_translate(images, output_shape, scale, translation, spatial_dims, method, antialias=True):
    raise not_implemented("image.scale_and_translate")


def sobel_edges(images, data_format=None):
    raise not_implemented("image.sobel_edges")
