"""The engine binding: the native module and the way into it.

The bottom layer of the backend (above ``dtypes`` only): every other module
reaches the Swift engine through what is here. Engine tensors are instances
of ``_C.Tensor``; ``keras_swift.src.tensor`` registers the Python class they
are made as (``SwiftTensor``, whose operators are the backend's ops).
"""

import functools

import numpy as np

from keras_swift.src.dtypes import BITS_DTYPES
from keras_swift.src.dtypes import NUMPY_DTYPES

try:
    import _swiftkeras as _C
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        "keras_swift needs the native module `_swiftkeras` (the Swift "
        "engine's CPython extension). Build and install it with "
        "`pip install .` from the keras-swift repository. "
        f"Original error: {e}"
    ) from e


# op(name, *inputs, **attrs) runs one engine op and returns its output, or the
# tuple of its outputs for an op with several (the schema fixes the count). It
# is the C function itself, under the same name: a Python wrapper building the
# inputs tuple and attrs dict cost more than a small op.
op = _C.op


def engine_op(name, *, constant_time=False, **attrs):
    """Binds a backend function whose body is ``op(name, *inputs, **attrs)``
    once its inputs are tensors to that engine op, called from C.

    ``attrs`` maps each parameter after the tensor inputs to its engine
    attribute; the function's own parameters give the order. A call whose
    inputs are already engine tensors skips the Python frame; every other
    call (conversion, sparse input, bad arguments) runs the function itself
    (through whatever decorates it, such as its sparse dispatch).
    A ``constant_time`` op (its output is a description, not computed) keeps
    the GIL, whose release would cost more than the op.
    """

    def bind(fn):
        code = getattr(fn, "__wrapped__", fn).__code__
        params = code.co_varnames[: code.co_argcount]
        n_inputs = len(params) - len(attrs)
        bound = _C.Op(
            fn, name, params, tuple(attrs[p] for p in params[n_inputs:]),
            constant_time=constant_time,
        )
        return functools.update_wrapper(bound, fn)

    return bind


def numpy_view(t):
    """Zero-copy, read-only ndarray over an engine tensor's storage.

    The array keeps the tensor alive.
    """
    want = NUMPY_DTYPES[t.dtype]
    if t.dtype in BITS_DTYPES:  # no typed buffer: read the bits as the dtype
        a = np.frombuffer(t, dtype=want)
    else:
        a = np.asarray(memoryview(t))
    shape = t.shape
    if a.shape != shape:
        a = a.reshape(shape)
    return a


def _immutable_memory(a):
    """Whether nothing can ever write to ``a``'s memory: every array down its
    base chain is read-only and the chain ends at an immutable owner (bytes,
    or an engine tensor, as ``numpy_view`` returns). A read-only array that
    owns its memory does not count: it may be made writeable again."""
    b = a
    while isinstance(b, np.ndarray):
        if b.flags.writeable:
            return False
        b = b.base
    if isinstance(b, memoryview):
        if not b.readonly:
            return False
        b = b.obj
    return isinstance(b, (bytes, _C.Tensor))


def from_numpy(a, dtype):
    """A numpy array (already of ``dtype``'s numpy type) as an engine tensor:
    its memory shared when no one can write to it (see ``_immutable_memory``)
    and it is C-contiguous and 64-byte aligned, else a copy."""
    if (dtype not in BITS_DTYPES and a.size and a.flags.c_contiguous
            and a.ctypes.data % 64 == 0 and _immutable_memory(a)):
        return _C.from_dlpack(a, copy=False)
    if not a.flags.c_contiguous:  # (np.ascontiguousarray would make 0-d 1-d)
        a = a.copy(order="C")
    if dtype in BITS_DTYPES:
        a = a.view(BITS_DTYPES[dtype])
    return _C.from_buffer(a, dtype)
