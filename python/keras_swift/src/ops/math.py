"""``keras.ops.math`` on the Swift engine."""

import math as pymath

from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_int_dtype
from keras_swift.src.core import to_float as _float
from keras_swift.src.engine import op
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
    values, indices = op("top_k", x, k=int(k))
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
    kth = op("top_k", predictions, k=int(k))[0][:, -1:]
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
    return op(
        "frame", x, length=int(sequence_length), stride=int(sequence_stride)
    )


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
    return op("fft", real, imag, inverse=bool(inverse))


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


def _fft_length(n):
    if n < 1:
        raise ValueError(f"Invalid number of FFT data points ({n}) specified.")
    return n


def rfft(x, fft_length=None):
    x = _float(x)
    n = _fft_length(x.shape[-1] if fft_length is None else int(fft_length))
    x = _fit_last_axis(x, n)
    real, imag = _fft(x, knp.zeros_like(x))
    keep = n // 2 + 1
    return real[..., :keep], imag[..., :keep]


def irfft(x, fft_length=None):
    real, imag = _complex_pair(x)
    n = _fft_length(2 * (real.shape[-1] - 1) if fft_length is None else int(fft_length))
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
    return op("slogdet", _float(x))[1]


# Not part of the public surface, but keras.ops.polar (keras/src/ops/nn.py's
# _polar) calls backend.math._get_complex_tensor_from_tuple((real, imag)).
def _get_complex_tensor_from_tuple(x):
    return op("complex", *_complex_pair(x))


def erfinv(x):
    return op("erfinv", _float(x))


def _check_stride(sequence_stride):
    if not isinstance(sequence_stride, int) or sequence_stride <= 0:
        raise ValueError(
            "`sequence_stride` must be a positive integer. "
            f"Received: sequence_stride={sequence_stride}"
        )


def _stft_window(window, sequence_length, fft_length, dtype):
    """The window zero-padded (centred) to fft_length, or None for no window."""
    if window is None:
        return None
    if isinstance(window, str):
        if window not in ("hann", "hamming"):
            raise ValueError(
                "If a string is passed to `window`, it must be one of "
                f'`"hann"`, `"hamming"`. Received: window={window}'
            )
        # scipy.signal.get_window's periodic (fftbins=True) cosine windows.
        a = 0.5 if window == "hann" else 0.54
        n = op("arange", start=0.0, stop=float(sequence_length), step=1.0, dtype="float64")
        phase = op("multiply", n, convert_to_tensor(2.0 * pymath.pi / sequence_length, "float64"))
        win = op(
            "subtract",
            convert_to_tensor(a, "float64"),
            op("multiply", op("cos", phase), convert_to_tensor(1.0 - a, "float64")),
        )
        win = cast(win, dtype)
    else:
        win = convert_to_tensor(window, dtype)
    if win.ndim != 1 or win.shape[-1] != sequence_length:
        raise ValueError(
            "The shape of `window` must be equal to [sequence_length]."
            f"Received: window shape={win.shape}"
        )
    l_pad = (fft_length - sequence_length) // 2
    r_pad = fft_length - sequence_length - l_pad
    if l_pad or r_pad:
        win = op("pad", win, pads=[l_pad, r_pad], mode="constant", value=0.0)
    return win


def stft(x, sequence_length, sequence_stride, fft_length, window="hann", center=True):
    _check_stride(sequence_stride)
    x = convert_to_tensor(x)
    if x.dtype not in ("float32", "float64"):
        raise TypeError(
            "Invalid input type. Expected `float32` or `float64`. "
            f"Received: input type={x.dtype}"
        )
    if fft_length < sequence_length:
        raise ValueError(
            "`fft_length` must equal or larger than `sequence_length`. "
            f"Received: sequence_length={sequence_length}, "
            f"fft_length={fft_length}"
        )
    win = _stft_window(window, sequence_length, fft_length, x.dtype)
    if center:
        pads = [0] * (2 * x.ndim)
        pads[-2] = pads[-1] = fft_length // 2
        x = op("pad", x, pads=pads, mode="reflect", value=0.0)
    frames = op("frame", x, length=int(fft_length), stride=int(sequence_stride))
    if win is not None:
        frames = op("multiply", frames, win)
    return rfft(frames, fft_length)


def istft(x, sequence_length, sequence_stride, fft_length, length=None, window='hann', center=True):
    _check_stride(sequence_stride)
    real, imag = _complex_pair(x)
    if real.ndim < 2:
        raise ValueError(
            "Input `x` must have at least 2 dimensions. "
            f"Received shape: {real.shape}"
        )
    frames = irfft((real, imag), fft_length)
    expected_output_len = fft_length + sequence_stride * (frames.shape[-2] - 1)
    win = _stft_window(window, sequence_length, fft_length, frames.dtype)
    if win is not None:
        # Divide the window by the steady-state overlap of its square, so
        # overlap-adding windowed frames inverts the stft (as tf.signal does).
        overlaps = -(-fft_length // sequence_stride)
        sq = op("square", win)
        sq = op("pad", sq, pads=[0, overlaps * sequence_stride - fft_length], mode="constant", value=0.0)
        denom = op("sum", op("reshape", sq, shape=[overlaps, sequence_stride]), axes=[0], keepdims=True)
        denom = op("reshape", op("broadcast_to", denom, shape=[overlaps, sequence_stride]), shape=[overlaps * sequence_stride])
        frames = op("multiply", frames, op("divide", win, denom[:fft_length]))
    y = op("overlap_add", frames, stride=int(sequence_stride))
    start = fft_length // 2 if center else 0
    if length is not None:
        end = start + length
    elif center:
        end = -(fft_length // 2)
    else:
        end = expected_output_len
    return y[..., start:end]
