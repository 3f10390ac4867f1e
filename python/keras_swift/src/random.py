"""``keras.random`` on the Swift engine.

Every sampler is a pure function of Keras's 2-element seed tensor
(``draw_seed``): the engine's random ops are counter-based (Philox keyed by
``seed[0]``, counter ``seed[1]``), with no hidden global state.
"""

from keras.src.backend.common.variables import standardize_dtype
from keras.src.backend.config import floatx
from keras.src.random.seed_generator import SeedGenerator  # noqa: F401
from keras.src.random.seed_generator import draw_seed
from keras.src.random.seed_generator import make_default_seed  # noqa: F401
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_float_dtype
from keras_swift.src.engine import _C
from keras_swift.src.engine import op


def _random(name, *inputs, seed, **attrs):
    """Runs random op ``name`` seeded by ``draw_seed(seed)``: two Python ints in its
    ``seed`` attribute, or, while a trace records a compiled step, its ``seed_t`` input,
    so that each replay draws from the seed generator's state at that step (an
    attribute would read it on the host, which a graph cannot replay)."""
    s = draw_seed(seed)
    if _C.trace_active():
        return op(name, *inputs, cast(convert_to_tensor(s), "int64"), **attrs)
    return op(name, *inputs, seed=[int(v) for v in convert_to_numpy(s).reshape(-1)], **attrs)


def _shape(shape):
    return [int(d) for d in shape]


def _float_dtype(dtype):
    dtype = standardize_dtype(dtype or floatx())
    if not is_float_dtype(dtype):
        raise ValueError(
            f"dtype must be a floating point type, got dtype={dtype}"
        )
    return dtype


def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return _random(
        "random_normal",
        shape=_shape(shape),
        dtype=_float_dtype(dtype),
        seed=seed,
        mean=float(mean),
        stddev=float(stddev),
    )


def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return _random(
        "random_uniform",
        shape=_shape(shape),
        dtype=_float_dtype(dtype),
        seed=seed,
        minval=float(minval),
        maxval=float(maxval),
    )


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return _random(
        "random_truncated_normal",
        shape=_shape(shape),
        dtype=_float_dtype(dtype),
        seed=seed,
        mean=float(mean),
        stddev=float(stddev),
    )


def randint(shape, minval, maxval, dtype="int32", seed=None):
    dtype = standardize_dtype(dtype)
    minval, maxval = int(minval), int(maxval)
    u = _random(
        "random_uniform",
        shape=_shape(shape),
        dtype="float64",
        seed=seed,
        minval=float(minval),
        maxval=float(maxval),
    )
    u = op("clip", op("floor", u), min=float(minval), max=float(maxval - 1))
    return cast(u, dtype)


def categorical(logits, num_samples, dtype="int64", seed=None):
    logits = convert_to_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(
            "`logits` should be a 2-D tensor with shape "
            f"[batch_size, num_classes]. Received: logits={logits.shape}"
        )
    batch, classes = logits.shape
    num_samples = int(num_samples)
    compute = "float64" if logits.dtype == "float64" else "float32"
    # Gumbel-max: argmax(logits + Gumbel noise) is a categorical sample.
    tiny = 1e-12
    u = _random(
        "random_uniform",
        shape=[batch, num_samples, classes],
        dtype=compute,
        seed=seed,
        minval=tiny,
        maxval=1.0,
    )
    gumbel = op("negative", op("log", op("negative", op("log", u))))
    scores = op("add", op("reshape", cast(logits, compute), shape=[batch, 1, classes]), gumbel)
    return cast(op("argmax", scores, axis=-1), standardize_dtype(dtype))


def dropout(inputs, rate, noise_shape=None, seed=None):
    inputs = convert_to_tensor(inputs)
    rate = float(rate)
    if rate == 1.0:
        # The engine op, not knp.zeros_like: ops.image imports this module, so
        # importing ops here would make random and ops a cycle.
        return op("full", shape=list(inputs.shape), dtype=inputs.dtype, value=0.0)
    if rate == 0.0:
        return inputs
    if not is_float_dtype(inputs.dtype):
        inputs = cast(inputs, floatx())
    attrs = {"rate": rate}
    if noise_shape is not None:
        attrs["noise_shape"] = [
            int(n) if n is not None else int(inputs.shape[i])
            for i, n in enumerate(noise_shape)
        ]
    return _random("dropout", inputs, seed=seed, **attrs)


def shuffle(x, axis=0, seed=None):
    x = convert_to_tensor(x)
    n = x.shape[axis]
    keys = _random(
        "random_uniform",
        shape=[n],
        dtype="float32",
        seed=seed,
        minval=0.0,
        maxval=1.0,
    )
    return op("take", x, op("argsort", keys, axis=0), axis=int(axis))


def _param(value):
    return convert_to_tensor(value, "float64")


def gamma(shape, alpha, dtype=None, seed=None):
    return _random(
        "random_gamma",
        _param(alpha),
        shape=_shape(shape),
        dtype=_float_dtype(dtype),
        seed=seed,
    )


def beta(shape, alpha, beta, dtype=None, seed=None):
    return _random(
        "random_beta",
        _param(alpha),
        _param(beta),
        shape=_shape(shape),
        dtype=_float_dtype(dtype),
        seed=seed,
    )


def binomial(shape, counts, probabilities, dtype=None, seed=None):
    return _random(
        "random_binomial",
        _param(counts),
        _param(probabilities),
        shape=_shape(shape),
        dtype=_float_dtype(dtype),
        seed=seed,
    )
