"""``keras.ops.math`` on the Swift engine."""


from keras_swift.src.core import cast
from keras_swift.src.core import to_float as _float
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_int_dtype
from keras_swift.src.core import not_implemented
from keras_swift.src.core import op
from keras_swift.src.core import op_multi
from keras_swift.src.ops import numpy as knp


def rsqrt(x):
    return op("rsqrt", _float(x))


def erf(x):
    return op("erf", _float(x))


def erfc(x):
    x = _float(x)
    return op("subtract", convert_to_tensor(1, x.dtype), op("erf", x))


def logsumexp(x, axis=None, keepdims=False):
    x = _float(x)
    axes = knp._axes(axis)
    m = op("stop_gradient", op("max", x, axes=axes, keepdims=True))
    # keep -inf rows finite before subtracting
    m = op("where", op("isfinite", m), m, convert_to_tensor(0, x.dtype))
    s = op("sum", op("exp", op("subtract", x, m)), axes=axes, keepdims=True)
    out = op("add", op("log", s), m)
    if keepdims:
        return out
    if axes is None:
        return op("reshape", out, shape=[])
    return knp.squeeze(out, axis=axes)


def _segment(reduction, data, segment_ids, num_segments):
    data = convert_to_tensor(data)
    segment_ids = convert_to_tensor(segment_ids)
    if not is_int_dtype(segment_ids.dtype):
        raise TypeError(
            f"`segment_ids` must be integers, got {segment_ids.dtype}"
        )
    if num_segments is None:
        num_segments = int(op("max", segment_ids)) + 1
    return op(
        "segment_reduce",
        data,
        segment_ids,
        reduction=reduction,
        num_segments=int(num_segments),
    )


def segment_sum(data, segment_ids, num_segments=None, sorted=False):
    return _segment("add", data, segment_ids, num_segments)


def segment_max(data, segment_ids, num_segments=None, sorted=False):
    return _segment("max", data, segment_ids, num_segments)


def segment_min(data, segment_ids, num_segments=None, sorted=False):
    return _segment("min", data, segment_ids, num_segments)


def segment_prod(data, segment_ids, num_segments=None, sorted=False):
    return _segment("mul", data, segment_ids, num_segments)


def top_k(x, k, sorted=True):
    x = convert_to_tensor(x)
    values, indices = op_multi("top_k", [x], {"k": int(k)})
    return values, indices


def in_top_k(targets, predictions, k):
    targets = convert_to_tensor(targets)
    predictions = convert_to_tensor(predictions)
    if not is_int_dtype(targets.dtype):
        targets = cast(targets, "int32")
    target_values = op(
        "take_along_axis",
        predictions,
        op("reshape", targets, shape=[-1, 1]),
        axis=-1,
    )
    kth = op_multi("top_k", [predictions], {"k": int(k)})[0][:, -1:]
    return op("reshape", op("greater_equal", target_values, kth), shape=[-1])


def cdist(x, y):
    x = convert_to_tensor(x)
    y = convert_to_tensor(y)
    if x.ndim < 2 or y.ndim < 2:
        raise ValueError("`cdist` inputs must have rank >= 2")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError("Last dimension of inputs to `cdist` must match")
    x, y = knp._promote(x, y, extra=(float,))
    diff = op(
        "subtract",
        op("reshape", x, shape=[*x.shape[:-1], 1, x.shape[-1]]),
        op("reshape", y, shape=[*y.shape[:-2], 1, *y.shape[-2:]]),
    )
    return op("sqrt", op("sum", op("square", diff), axes=[-1], keepdims=False))


def extract_sequences(x, sequence_length, sequence_stride):
    x = convert_to_tensor(x)
    n = x.shape[-1]
    count = (n - (sequence_length - sequence_stride)) // sequence_stride
    frames = [
        x[..., i * sequence_stride : i * sequence_stride + sequence_length]
        for i in range(count)
    ]
    if not frames:
        return knp.zeros((*x.shape[:-1], 0, sequence_length), x.dtype)
    return knp.stack(frames, axis=-2)


def _complex_pair(x):
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError(
            "Input `x` should be a tuple of two tensors - real and imaginary."
            f" Received: x={x}"
        )
    real, imag = x
    real = _float(real)
    imag = convert_to_tensor(imag, real.dtype)
    if real.shape != imag.shape:
        raise ValueError(
            "Input `x` should be a tuple of two tensors - real and imaginary."
            "Both the real and imaginary parts should have the same shape. "
            f"Received: x[0].shape = {real.shape}, x[1].shape = {imag.shape}"
        )
    return real, imag


def _fft(real, imag, inverse=False):
    """DFT along the last axis (engine op; inverse normalised by 1/n)."""
    return op_multi("fft", [real, imag], {"inverse": bool(inverse)})


def _swap_last(x):
    perm = list(range(x.ndim))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return op("transpose", x, perm=perm)


def _fft2(x, inverse):
    real, imag = _complex_pair(x)
    real, imag = _fft(real, imag, inverse)
    real, imag = _fft(_swap_last(real), _swap_last(imag), inverse)
    return _swap_last(real), _swap_last(imag)


def fft(x):
    real, imag = _complex_pair(x)
    return _fft(real, imag)


def fft2(x):
    return _fft2(x, inverse=False)


def ifft2(x):
    return _fft2(x, inverse=True)


def _fit_last_axis(x, n):
    """Crop or zero-pad the last axis to length n."""
    m = x.shape[-1]
    if m > n:
        return x[..., :n]
    if m < n:
        pads = [0] * (2 * x.ndim)
        pads[-1] = n - m
        return op("pad", x, pads=pads, mode="constant", value=0.0)
    return x


def rfft(x, fft_length=None):
    x = _float(x)
    n = x.shape[-1] if fft_length is None else int(fft_length)
    x = _fit_last_axis(x, n)
    real, imag = _fft(x, knp.zeros_like(x))
    keep = n // 2 + 1
    return real[..., :keep], imag[..., :keep]


def irfft(x, fft_length=None):
    real, imag = _complex_pair(x)
    n = 2 * (real.shape[-1] - 1) if fft_length is None else int(fft_length)
    # Rebuild the Hermitian spectrum X[n - k] = conj(X[k]) and invert it.
    head_r = _fit_last_axis(real, n // 2 + 1)
    head_i = _fit_last_axis(imag, n // 2 + 1)
    tail = (n + 1) // 2 - 1
    full_r, full_i = head_r, head_i
    if tail > 0:
        tail_r = knp.flip(head_r[..., 1 : tail + 1], axis=-1)
        tail_i = op("negative", knp.flip(head_i[..., 1 : tail + 1], axis=-1))
        full_r = op("concatenate", head_r, tail_r, axis=-1)
        full_i = op("concatenate", head_i, tail_i, axis=-1)
    full_r, full_i = full_r[..., :n], full_i[..., :n]
    return _fft(full_r, full_i, inverse=True)[0]


def logdet(x):
    return op_multi("slogdet", [_float(x)])[1]


def _get_complex_tensor_from_tuple(x):
    raise not_implemented("math._get_complex_tensor_from_tuple (complex dtypes)")


# Not implemented yet (generated stubs: keras.ops signatures; each raises
# NotImplementedError until the engine grows the op or a composition lands).


def erfinv(x):
    return op("erfinv", _float(x))


def istft(x, sequence_length, sequence_stride, fft_length, length=None, window='hann', center=True):
    raise not_implemented("math.istft")


def stft(x, sequence_length, sequence_stride, fft_length, window='hann', center=True):
    raise not_implemented("math.stft")
