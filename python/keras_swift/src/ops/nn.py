"""``keras.ops.nn`` on the Swift engine.

Activations map to one engine op where the engine has one. Convolutions and
pooling use the engine's channels-last N-D ``conv``/``conv_transpose``/
``max_pool``/``avg_pool`` (channels_first goes through transposes; depthwise
convolution is a grouped ``conv``).
"""

import math

import numpy as np

from keras.src.backend.common.backend_utils import canonicalize_axis
from keras.src.backend.common.backend_utils import (
    compute_conv_transpose_padding_args_for_jax,
)
from keras.src.backend.config import epsilon
from keras.src.backend.config import standardize_data_format
from keras_swift.src import sparse
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_float_dtype
from keras_swift.src.core import is_int_dtype
from keras_swift.src.core import result_type
from keras_swift.src.core import to_float as _float
from keras_swift.src.engine import op
from keras_swift.src.ops import numpy as knp


def _scalar(value, dtype):
    return convert_to_tensor(value, dtype)


def _unary(name, x, **attrs):
    return op(name, _float(x), **attrs)


# ---------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------


def relu(x):
    x = convert_to_tensor(x)
    return op("relu", x)


def relu6(x):
    x = convert_to_tensor(x)
    return op("relu6", x)


def sigmoid(x):
    return _unary("sigmoid", x)


def sparse_sigmoid(x):
    x = _float(x)
    half = _scalar(0.5, x.dtype)
    y = op("multiply", half, op("add", x, _scalar(1, x.dtype)))
    return op("clip", y, min=0.0, max=1.0)


def tanh(x):
    return _unary("tanh", x)


def tanh_shrink(x):
    x = _float(x)
    return op("subtract", x, op("tanh", x))


def softplus(x):
    return _unary("softplus", x)


def softsign(x):
    return _unary("softsign", x)


def soft_shrink(x, threshold=0.5):
    x = _float(x)
    t = _scalar(threshold, x.dtype)
    zero = _scalar(0, x.dtype)
    out = op("where", op("greater", x, t), op("subtract", x, t), zero)
    neg = op("less", x, op("negative", t))
    return op("where", neg, op("add", x, t), out)


def sparse_plus(x):
    x = _float(x)
    one = _scalar(1, x.dtype)
    mid = op(
        "multiply",
        _scalar(0.25, x.dtype),
        op("square", op("add", x, one)),
    )
    out = op("where", op("less", x, one), mid, x)
    return op("where", op("less_equal", x, op("negative", one)), _scalar(0, x.dtype), out)


def silu(x):
    return _unary("silu", x)


def squareplus(x, b=4):
    x = _float(x)
    b = _scalar(b, x.dtype)
    y = op("add", x, op("sqrt", op("add", op("square", x), b)))
    return op("divide", y, _scalar(2, x.dtype))


def log_sigmoid(x):
    x = _float(x)
    return op("negative", op("softplus", op("negative", x)))


def leaky_relu(x, negative_slope=0.2):
    return _unary("leaky_relu", x, negative_slope=float(negative_slope))


def hard_sigmoid(x):
    x = _float(x)
    y = op("add", op("divide", x, _scalar(6, x.dtype)), _scalar(0.5, x.dtype))
    return op("clip", y, min=0.0, max=1.0)


def hard_silu(x):
    x = _float(x)
    return op("multiply", x, hard_sigmoid(x))


def elu(x, alpha=1.0):
    return _unary("elu", x, alpha=float(alpha))


def selu(x):
    return _unary("selu", x)


def gelu(x, approximate=True):
    return _unary("gelu", x, approximate=bool(approximate))


def celu(x, alpha=1.0):
    x = _float(x)
    a = _scalar(alpha, x.dtype)
    zero = _scalar(0, x.dtype)
    neg = op("multiply", a, op("expm1", op("divide", op("minimum", x, zero), a)))
    return op("add", op("maximum", x, zero), neg)


def glu(x, axis=-1):
    x = _float(x)
    if x.shape[axis] % 2 != 0:
        raise ValueError(
            "axis size must be divisible by 2. "
            f"Received: x.shape={x.shape} with axis={axis}"
        )
    x1, x2 = knp.split(x, 2, axis)
    return op("multiply", x1, op("sigmoid", x2))


def hard_tanh(x):
    return op("clip", _float(x), min=-1.0, max=1.0)


def hard_shrink(x, threshold=0.5):
    x = _float(x)
    keep = op("greater", op("abs", x), _scalar(threshold, x.dtype))
    return op("where", keep, x, _scalar(0, x.dtype))


def threshold(x, threshold, default_value):
    x = convert_to_tensor(x)
    keep = op("greater", x, _scalar(threshold, x.dtype))
    return op("where", keep, x, _scalar(default_value, x.dtype))


def softmax(x, axis=-1):
    x = _float(x)
    if axis is None or isinstance(axis, (tuple, list)):
        m = op("max", x, axes=knp._axes(axis), keepdims=True)
        e = op("exp", op("subtract", x, op("stop_gradient", m)))
        return op("divide", e, op("sum", e, axes=knp._axes(axis), keepdims=True))
    return op("softmax", x, axis=int(axis))


def log_softmax(x, axis=-1):
    x = _float(x)
    if axis is None or isinstance(axis, (tuple, list)):
        axes = knp._axes(axis)
        m = op("stop_gradient", op("max", x, axes=axes, keepdims=True))
        shifted = op("subtract", x, m)
        lse = op("log", op("sum", op("exp", shifted), axes=axes, keepdims=True))
        return op("subtract", shifted, lse)
    return op("log_softmax", x, axis=int(axis))


# ---------------------------------------------------------------------------
# convolution and pooling
# ---------------------------------------------------------------------------


def _tuple(value, n, name):
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(
            f"`{name}` must have {n} entries for {n} spatial dimensions, "
            f"got {value}"
        )
    return value


def _padding(padding):
    padding = padding.lower()
    if padding not in ("valid", "same"):
        raise ValueError(
            f"Invalid padding '{padding}', must be 'same' or 'valid'."
        )
    return padding


def _pool(name, inputs, pool_size, strides, padding, data_format):
    data_format = standardize_data_format(data_format)
    inputs = convert_to_tensor(inputs)
    num_spatial = inputs.ndim - 2
    strides = pool_size if strides is None else strides
    y = op(
        name,
        _channels_last(inputs, data_format),
        pool_size=list(_tuple(pool_size, num_spatial, "pool_size")),
        strides=list(_tuple(strides, num_spatial, "strides")),
        padding=_padding(padding),
    )
    return _channels_back(y, data_format)


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    return _pool("max_pool", inputs, pool_size, strides, padding, data_format)


def average_pool(
    inputs, pool_size, strides=None, padding="valid", data_format=None
):
    return _pool("avg_pool", inputs, pool_size, strides, padding, data_format)


def _channels_last(x, data_format):
    if data_format == "channels_first":
        return op("transpose", x, perm=[0] + list(range(2, x.ndim)) + [1])
    return x


def _channels_back(y, data_format):
    if data_format == "channels_first":
        return op("transpose", y, perm=[0, y.ndim - 1] + list(range(1, y.ndim - 1)))
    return y


def conv(
    inputs,
    kernel,
    strides=1,
    padding="valid",
    data_format=None,
    dilation_rate=1,
):
    data_format = standardize_data_format(data_format)
    inputs = convert_to_tensor(inputs)
    kernel = convert_to_tensor(kernel)
    dtype = result_type(inputs.dtype, kernel.dtype)
    inputs, kernel = cast(inputs, dtype), cast(kernel, dtype)
    num_spatial = inputs.ndim - 2
    if kernel.ndim != inputs.ndim:
        raise ValueError(
            f"conv: kernel of rank {kernel.ndim} does not match inputs of "
            f"rank {inputs.ndim}"
        )
    channels = inputs.shape[-1] if data_format == "channels_last" else inputs.shape[1]
    kernel_in = kernel.shape[-2]
    if kernel_in == 0 or channels % kernel_in > 0:
        raise ValueError(
            "The number of input channels must be evenly divisible by "
            f"kernel's in_channels. Received input channels {channels} and "
            f"kernel in_channels {kernel_in}. "
        )
    y = op(
        "conv",
        _channels_last(inputs, data_format),
        kernel,
        strides=list(_tuple(strides, num_spatial, "strides")),
        padding=_padding(padding),
        dilation=list(_tuple(dilation_rate, num_spatial, "dilation_rate")),
        groups=channels // kernel_in,
    )
    if y.size == 0 and inputs.size != 0:
        raise ValueError(
            "The convolution operation resulted in an empty output. "
            "This can happen if the input is too small for the given "
            "kernel size, strides, dilation rate, and padding mode. "
            "Please check the input shape and convolution parameters."
        )
    return _channels_back(y, data_format)


def depthwise_conv(
    inputs,
    kernel,
    strides=1,
    padding="valid",
    data_format=None,
    dilation_rate=1,
):
    data_format = standardize_data_format(data_format)
    inputs = convert_to_tensor(inputs)
    kernel = convert_to_tensor(kernel)
    channels = inputs.shape[-1] if data_format == "channels_last" else inputs.shape[1]
    if kernel.shape[-2] != channels:
        raise ValueError(
            "The number of input channels must match the kernel's "
            f"in_channels. Received input channels {channels} and kernel "
            f"shape {kernel.shape}."
        )
    # (..., C, M) -> (..., 1, C*M): a grouped conv with one input channel
    # per group, exactly like the jax/numpy backends.
    kernel = op(
        "reshape", kernel, shape=[*kernel.shape[:-2], 1, channels * kernel.shape[-1]]
    )
    return conv(inputs, kernel, strides, padding, data_format, dilation_rate)


def separable_conv(
    inputs,
    depthwise_kernel,
    pointwise_kernel,
    strides=1,
    padding="valid",
    data_format=None,
    dilation_rate=1,
):
    depthwise_output = depthwise_conv(
        inputs, depthwise_kernel, strides, padding, data_format, dilation_rate
    )
    return conv(
        depthwise_output,
        pointwise_kernel,
        strides=1,
        padding="valid",
        data_format=data_format,
        dilation_rate=dilation_rate,
    )


def conv_transpose(
    inputs,
    kernel,
    strides=1,
    padding="valid",
    output_padding=None,
    data_format=None,
    dilation_rate=1,
):
    data_format = standardize_data_format(data_format)
    inputs = convert_to_tensor(inputs)
    kernel = convert_to_tensor(kernel)
    dtype = result_type(inputs.dtype, kernel.dtype)
    inputs, kernel = cast(inputs, dtype), cast(kernel, dtype)
    num_spatial = inputs.ndim - 2
    x = _channels_last(inputs, data_format)
    if kernel.ndim != x.ndim or kernel.shape[-1] != x.shape[-1]:
        raise ValueError(
            "conv_transpose: the kernel's last dimension must equal the "
            f"input channels. Received inputs.shape={inputs.shape}, "
            f"kernel.shape={kernel.shape}"
        )
    # Keras's padding rule, as lax.conv_transpose pads (lo, hi) around the
    # stride-dilated input; the engine takes the equivalent forward conv's
    # padding before each dim and the output size instead.
    lax_pads = compute_conv_transpose_padding_args_for_jax(
        input_shape=x.shape,
        kernel_shape=kernel.shape,
        strides=strides,
        padding=_padding(padding),
        output_padding=output_padding,
        dilation_rate=dilation_rate,
    )
    strides = _tuple(strides, num_spatial, "strides")
    dilation = _tuple(dilation_rate, num_spatial, "dilation_rate")
    pads_before, output_size = [], []
    for i, (lo, hi) in enumerate(lax_pads):
        dk = (kernel.shape[i] - 1) * dilation[i] + 1
        pads_before.append(dk - 1 - lo)
        output_size.append((x.shape[1 + i] - 1) * strides[i] - dk + 2 + lo + hi)
    y = op(
        "conv_transpose",
        x,
        kernel,
        strides=list(strides),
        dilation=list(dilation),
        pads_before=pads_before,
        output_size=output_size,
    )
    return _channels_back(y, data_format)


# ---------------------------------------------------------------------------
# encodings, losses, normalization
# ---------------------------------------------------------------------------


@sparse.on_sparse_flag(sparse.one_hot)
def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    if sparse:
        raise ValueError("Unsupported value `sparse=True` with swift backend")
    x = convert_to_tensor(x)
    if not is_int_dtype(x.dtype):
        x = cast(x, "int32")
    dtype = dtype or "float32"
    return op("one_hot", x, num_classes=int(num_classes), axis=int(axis), dtype=dtype)


@sparse.on_sparse_flag(sparse.multi_hot)
def multi_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    if sparse:
        raise ValueError("Unsupported value `sparse=True` with swift backend")
    x = convert_to_tensor(x)
    reduction_axis = 1 if x.ndim > 1 else 0
    hot = one_hot(cast(x, "int32"), num_classes, axis=axis, dtype=dtype)
    return knp.max(hot, axis=reduction_axis)


def _log_prob(output, from_logits, axis):
    if from_logits:
        return log_softmax(output, axis=axis)
    output = op("divide", output, op("sum", output, axes=[axis], keepdims=True))
    eps = epsilon()
    output = op("clip", output, min=eps, max=1.0 - eps)
    return op("log", output)


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    output = _float(output)
    target = convert_to_tensor(target, output.dtype)
    if target.shape != output.shape:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape. "
            "Received: "
            f"target.shape={target.shape}, output.shape={output.shape}"
        )
    if len(target.shape) < 1:
        raise ValueError(
            "Arguments `target` and `output` must be at least rank 1. "
            "Received: "
            f"target.shape={target.shape}, output.shape={output.shape}"
        )
    log_prob = _log_prob(output, from_logits, axis)
    return op("negative", op("sum", op("multiply", target, log_prob), axes=[axis], keepdims=False))


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    output = _float(output)
    target = convert_to_tensor(target)
    if target.dtype != "int32":
        target = cast(target, "int32")
    if target.ndim == output.ndim and target.shape[-1] == 1:
        target = op("reshape", target, shape=list(target.shape[:-1]))
    if len(output.shape) < 1:
        raise ValueError(
            "Argument `output` must be at least rank 1. "
            "Received: "
            f"output.shape={output.shape}"
        )
    if target.shape != output.shape[:-1]:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape "
            "up until the last dimension: "
            f"target.shape={target.shape}, output.shape={output.shape}"
        )
    # Only the target class's log-probability is needed: gather it instead of taking the log
    # of every class and summing against a one-hot tensor. Out-of-range targets select
    # nothing (loss 0), as a one-hot row of zeros would.
    axis = canonicalize_axis(axis, output.ndim)
    zero = _scalar(0, "int32")
    valid = op(
        "logical_and",
        op("greater_equal", target, zero),
        op("less", target, _scalar(output.shape[axis], "int32")),
    )
    index_shape = list(output.shape)
    index_shape[axis] = 1
    index = op("reshape", op("where", valid, target, zero), shape=index_shape)
    if from_logits:
        picked = op("take_along_axis", log_softmax(output, axis=axis), index, axis=axis)
    else:
        total = op("sum", output, axes=[axis], keepdims=True)
        share = op("divide", op("take_along_axis", output, index, axis=axis), total)
        eps = epsilon()
        picked = op("log", op("clip", share, min=eps, max=1.0 - eps))
    picked = op("reshape", picked, shape=list(target.shape))
    return op("negative", op("where", valid, picked, _scalar(0, output.dtype)))


def binary_crossentropy(target, output, from_logits=False):
    output = _float(output)
    target = convert_to_tensor(target, output.dtype)
    if target.shape != output.shape:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape. "
            "Received: "
            f"target.shape={target.shape}, output.shape={output.shape}"
        )
    one = _scalar(1, output.dtype)
    if from_logits:
        # max(x, 0) - x * z + log(1 + exp(-|x|)), stable for large |x|
        relu_x = op("relu", output)
        softplus_term = op("log1p", op("exp", op("negative", op("abs", output))))
        return op("add", op("subtract", relu_x, op("multiply", output, target)), softplus_term)
    eps = epsilon()
    output = op("clip", output, min=eps, max=1.0 - eps)
    bce = op("multiply", target, op("log", output))
    bce = op("add", bce, op("multiply", op("subtract", one, target), op("log", op("subtract", one, output))))
    return op("negative", bce)


def moments(x, axes, keepdims=False, synchronized=False):
    if synchronized:
        raise NotImplementedError(
            "Argument synchronized=True is not supported with the swift backend."
        )
    x = convert_to_tensor(x)
    axes = knp._axes(axes)
    ori_dtype = x.dtype
    # float16 statistics are computed in float32 (like the other backends).
    if ori_dtype in ("float16", "bfloat16"):
        x = cast(x, "float32")
    elif not is_float_dtype(ori_dtype):
        x = cast(x, result_type(ori_dtype, float))
    mean, variance = op("moments", x, axes=axes, keepdims=bool(keepdims))
    if ori_dtype in ("float16", "bfloat16"):
        info = np.finfo(np.float16)
        mean = cast(op("clip", mean, min=float(info.min), max=float(info.max)), ori_dtype)
        variance = cast(op("clip", variance, min=float(info.min), max=float(info.max)), ori_dtype)
    return mean, variance


def batch_normalization(
    x, mean, variance, axis, offset=None, scale=None, epsilon=1e-3
):
    x = convert_to_tensor(x)
    mean = convert_to_tensor(mean, x.dtype)
    variance = convert_to_tensor(variance, x.dtype)
    axis = canonicalize_axis(axis, x.ndim)
    shape = [1] * x.ndim
    shape[axis] = mean.shape[0]
    mean = op("reshape", mean, shape=shape)
    variance = op("reshape", variance, shape=shape)
    inv = op("rsqrt", op("add", variance, _scalar(epsilon, x.dtype)))
    if scale is not None:
        inv = op("multiply", inv, op("reshape", convert_to_tensor(scale, x.dtype), shape=shape))
    res = op("negative", op("multiply", mean, inv))
    if offset is not None:
        res = op("add", res, op("reshape", convert_to_tensor(offset, x.dtype), shape=shape))
    return op("add", op("multiply", x, inv), res)


def psnr(x1, x2, max_val):
    x1 = _float(x1)
    x2 = convert_to_tensor(x2, x1.dtype)
    if x1.shape != x2.shape:
        raise ValueError(
            f"Input shapes {x1.shape} and {x2.shape} must "
            "match for PSNR calculation. "
        )
    max_val = convert_to_tensor(max_val, x1.dtype)
    mse = op("mean", op("square", op("subtract", x1, x2)))
    ratio = op("divide", op("square", max_val), mse)
    return op("multiply", _scalar(10.0, x1.dtype), op("divide", op("log", ratio), _scalar(np.log(10.0), x1.dtype)))


def dot_product_attention(
    query,
    key,
    value,
    bias=None,
    mask=None,
    scale=None,
    is_causal=False,
    flash_attention=None,
    attn_logits_soft_cap=None,
):
    # `flash_attention` only selects a kernel on accelerators; on the CPU engine
    # the result is the same attention, so the flag is accepted and ignored.
    query = convert_to_tensor(query)
    key = convert_to_tensor(key)
    value = convert_to_tensor(value)
    dtype = result_type(query.dtype, key.dtype, value.dtype, float)
    query, key, value = cast(query, dtype), cast(key, dtype), cast(value, dtype)
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        raise ValueError(
            "`dot_product_attention` only supports 4D inputs "
            "(batch, seq, heads, dim). Received: "
            f"query.shape={query.shape}, key.shape={key.shape}, "
            f"value.shape={value.shape}."
        )
    head_dim = query.shape[-1]
    scale = (1.0 / math.sqrt(head_dim)) if scale is None else float(scale)
    # (B, T, N, H) -> (B, N, T, H)
    q = op("transpose", query, perm=[0, 2, 1, 3])
    k = op("transpose", key, perm=[0, 2, 1, 3])
    v = op("transpose", value, perm=[0, 2, 1, 3])
    n_q, n_kv = q.shape[1], k.shape[1]
    if n_kv == 0 or n_q % n_kv:
        raise ValueError(
            "The number of query heads must be a multiple of the number of "
            f"key/value heads. Received: query.shape={query.shape}, "
            f"key.shape={key.shape}"
        )
    if n_q != n_kv:  # grouped-query attention: repeat the kv heads
        reps = n_q // n_kv
        k = knp.repeat(k, reps, axis=1)
        v = knp.repeat(v, reps, axis=1)
    if bias is None and mask is None and attn_logits_soft_cap is None and dtype in ("float32", "float64"):
        # The engine's blocked kernel: no (B, N, T, S) scores are materialised or kept.
        out = op("dot_product_attention", q, k, v, scale=scale, causal=bool(is_causal))
        return op("transpose", out, perm=[0, 2, 1, 3])
    logits = op("multiply", op("matmul", q, op("transpose", k, perm=[0, 1, 3, 2])), _scalar(scale, q.dtype))
    if attn_logits_soft_cap is not None:
        # Splash attention's soft cap: cap * tanh(logits / cap).
        cap = _scalar(attn_logits_soft_cap, logits.dtype)
        logits = op("multiply", cap, op("tanh", op("divide", logits, cap)))
    if bias is not None:
        logits = op("add", logits, convert_to_tensor(bias, logits.dtype))
    t_q, t_k = logits.shape[-2], logits.shape[-1]
    combined = None
    if mask is not None:
        combined = cast(mask, "bool")
    if is_causal:
        causal = knp.tril(knp.ones((t_q, t_k), dtype="bool"))
        combined = causal if combined is None else op("logical_and", combined, causal)
    if combined is not None:
        large_negative = float(np.finfo(np.float32 if logits.dtype == "bfloat16" else logits.dtype).min) * 0.7
        logits = op("where", combined, logits, _scalar(large_negative, logits.dtype))
    probs = op("softmax", logits, axis=-1)
    out = op("matmul", probs, v)
    return op("transpose", out, perm=[0, 2, 1, 3])


def depth_to_space(x, block_size, data_format="channels_last"):
    x = convert_to_tensor(x)
    data_format = standardize_data_format(data_format)
    b = int(block_size)
    if data_format == "channels_first":
        x = op("transpose", x, perm=[0, 2, 3, 1])
    n, h, w, c = x.shape
    if c % (b * b):
        raise ValueError(
            f"depth_to_space: channels ({c}) must be divisible by "
            f"block_size**2 ({b * b})"
        )
    oc = c // (b * b)
    y = op("reshape", x, shape=[n, h, w, b, b, oc])
    y = op("transpose", y, perm=[0, 1, 3, 2, 4, 5])
    y = op("reshape", y, shape=[n, h * b, w * b, oc])
    if data_format == "channels_first":
        y = op("transpose", y, perm=[0, 3, 1, 2])
    return y


def space_to_depth(x, block_size, data_format="channels_last"):
    x = convert_to_tensor(x)
    data_format = standardize_data_format(data_format)
    b = int(block_size)
    if data_format == "channels_first":
        x = op("transpose", x, perm=[0, 2, 3, 1])
    n, h, w, c = x.shape
    if h % b or w % b:
        raise ValueError(
            f"space_to_depth: height ({h}) and width ({w}) must be "
            f"divisible by block_size ({b})"
        )
    y = op("reshape", x, shape=[n, h // b, b, w // b, b, c])
    y = op("transpose", y, perm=[0, 1, 3, 2, 4, 5])
    y = op("reshape", y, shape=[n, h // b, w // b, b * b * c])
    if data_format == "channels_first":
        y = op("transpose", y, perm=[0, 3, 1, 2])
    return y


# ---------------------------------------------------------------------------
# CTC, im2col, sparsemax, adaptive pooling (one engine kernel each)
# ---------------------------------------------------------------------------


def _ints(value):
    if isinstance(value, int):
        return [int(value)]
    return [int(v) for v in value]


def _adaptive_pool(name, inputs, output_size, data_format):
    data_format = standardize_data_format(data_format)
    inputs = convert_to_tensor(inputs)
    if inputs.ndim not in (3, 4, 5):
        raise ValueError(
            f"{name} supports only 1D/2D/3D inputs (rank 3 to 5), got "
            f"shape {inputs.shape}"
        )
    y = op(
        name,
        _channels_last(inputs, data_format),
        output_size=_ints(output_size),
    )
    return _channels_back(y, data_format)


def adaptive_average_pool(inputs, output_size, data_format=None):
    return _adaptive_pool("adaptive_avg_pool", inputs, output_size, data_format)


def adaptive_max_pool(inputs, output_size, data_format=None):
    return _adaptive_pool("adaptive_max_pool", inputs, output_size, data_format)


def ctc_loss(target, output, target_length, output_length, mask_index=0):
    target = convert_to_tensor(target)
    if not is_int_dtype(target.dtype):
        target = cast(target, "int32")
    output = _float(output)
    return op(
        "ctc_loss",
        target,
        output,
        cast(convert_to_tensor(target_length), "int32"),
        cast(convert_to_tensor(output_length), "int32"),
        mask_index=int(mask_index),
    )


def ctc_decode(
    inputs,
    sequence_lengths,
    strategy="greedy",
    beam_width=100,
    top_paths=1,
    merge_repeated=True,
    mask_index=0,
):
    if strategy not in ("greedy", "beam_search"):
        raise ValueError(
            f"Invalid strategy {strategy}. Supported values are "
            "'greedy' and 'beam_search'."
        )
    inputs = _float(inputs)
    if mask_index is None:
        mask_index = inputs.shape[-1] - 1
    lengths = cast(convert_to_tensor(sequence_lengths), "int32")
    decoded, scores = op(
        "ctc_decode",
        inputs,
        lengths,
        strategy=strategy,
        beam_width=int(beam_width),
        top_paths=int(top_paths),
        merge_repeated=bool(merge_repeated),
        mask_index=int(mask_index),
    )
    return decoded, scores


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    x = convert_to_tensor(input)
    if x.ndim != 4:
        raise ValueError(
            f"unfold expects a 4D (N, C, H, W) input, got shape {x.shape}"
        )
    return op(
        "unfold",
        x,
        kernel_size=_ints(kernel_size),
        dilation=_ints(dilation),
        padding=_ints(padding),
        stride=_ints(stride),
    )


def fold(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
    x = convert_to_tensor(x)
    if x.ndim != 3:
        raise ValueError(
            f"Input must be a 3D tensor. Received: input.shape={x.shape}"
        )
    return op(
        "fold",
        x,
        output_size=_ints(output_size),
        kernel_size=_ints(kernel_size),
        dilation=_ints(dilation),
        padding=_ints(padding),
        stride=_ints(stride),
    )


def sparsemax(x, axis=-1):
    return op("sparsemax", _float(x), axis=int(axis))
