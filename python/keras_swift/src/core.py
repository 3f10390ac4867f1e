"""Core backend functions: conversion, dtype rules, slicing, gradients.

The layer above the engine binding (``engine``): everything here computes
through ``op`` (one engine op by name); numpy is used only at the boundary,
turning user data into engine tensors and engine tensors into arrays.
``SparseBase`` is what this layer knows of a sparse tensor (its layout and
dense form); the sparse ops and operators are ``keras_swift.src.sparse``'s.
Control flow and shape inference, which call the numpy ops, are
``keras_swift.src.ops.core``'s.
"""

import contextlib
import functools
import warnings

import numpy as np

from keras.src import tree
from keras.src.backend.common import standardize_dtype
from keras.src.backend.common.dtypes import result_type as _result_type
from keras.src.backend.common.keras_tensor import KerasTensor
from keras.src.backend.common.variables import Variable as KerasVariable
from keras.src.backend.config import floatx
from keras_swift.src.dtypes import NUMPY_DTYPES
from keras_swift.src.engine import _C
from keras_swift.src.engine import from_numpy
from keras_swift.src.engine import numpy_view
from keras_swift.src.engine import op

ENGINE_DTYPES = frozenset(NUMPY_DTYPES)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------------------
# Helpers of the op modules
# ---------------------------------------------------------------------------

def to_float(x):
    """x as a tensor of a float dtype (integers and bools promote as Keras does)."""
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        x = cast(x, result_type(x.dtype, float))
    return x


def not_implemented(qualname):
    """The error every not-yet-implemented entry point raises."""
    return NotImplementedError(
        f"keras_swift: {qualname} is not implemented yet"
    )


@contextlib.contextmanager
def no_grad():
    """Run a block without recording onto the caller's tape.

    The C API has no pause switch, so the block records onto a throwaway tape
    that is popped (and discarded) on exit.
    """
    _C.tape_push()
    try:
        yield
    finally:
        _C.tape_pop()



# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _cached_result_type(args, fx):
    return _result_type(*args)


def result_type(*dtypes):
    """``keras.backend.result_type``, memoised (it runs on every op)."""
    try:
        return _cached_result_type(dtypes, floatx())
    except TypeError:  # unhashable argument
        return _result_type(*dtypes)


def dtype_of(x):
    """The dtype to promote with: tensors' dtype, Python scalars' type."""
    return getattr(x, "dtype", type(x))


def is_float_dtype(dtype):
    return dtype.startswith("float") or dtype == "bfloat16"


def is_int_dtype(dtype):
    return dtype.startswith("int") or dtype.startswith("uint")


def _check_engine_dtype(dtype):
    if dtype not in ENGINE_DTYPES:
        raise TypeError(
            f"keras_swift: dtype {dtype!r} is not supported by the Swift "
            f"engine (supported: {', '.join(sorted(ENGINE_DTYPES))})"
        )
    return dtype



def sum_dtype(dtype):
    # jax's accumulation rule for sums and products
    if dtype in ("bool", "int8", "int16"):
        return "int32"
    if dtype in ("uint8", "uint16"):
        return "uint32"
    return dtype


def matmul_dtype(x1, x2):
    if x1.dtype == "int8" and x2.dtype == "int8":
        return "int32"
    return result_type(x1.dtype, x2.dtype)



# ---------------------------------------------------------------------------
# Sparse layout
# ---------------------------------------------------------------------------


class SparseBase:
    """A COO sparse tensor whose indices and values are engine tensors: its
    layout, validation and dense form. ``keras_swift.src.sparse.SparseTensor``
    adds the operators, which are sparse ops.

    ``indices`` (int64, ``[nnz, k]``) names the coordinates of ``nnz``
    entries along the first ``k`` dimensions of ``shape``; ``values``
    (``[nnz, *shape[k:]]``) holds them. ``k == ndim`` is element-wise COO;
    ``k < ndim`` stores whole trailing slices per index (jax's BCOO with
    ``n_dense > 0``, TensorFlow's IndexedSlices). Duplicate indices mean the
    sum of their values.

    Args:
        indices: integer tensor-like ``[nnz, k]``, ``0 <= k <= len(shape)``.
        values: tensor-like ``[nnz, *shape[k:]]``.
        shape: the dense shape (static ints).
        unique: the caller guarantees that ``indices`` has no duplicates
            (skips merging them before non-linear element-wise ops).
        validate: check that indices are in range (one engine reduction).
    """

    __array_priority__ = 100.0
    __slots__ = ("indices", "values", "shape", "unique")

    def __init__(self, indices, values, shape, unique=False, validate=True):
        try:
            shape = tuple(int(d) for d in shape)
        except TypeError as e:
            raise TypeError(
                f"SparseTensor: `shape` must be a sequence of ints, got {shape!r}"
            ) from e
        if any(d < 0 for d in shape):
            raise ValueError(f"SparseTensor: negative dimension in shape {shape}")
        if not isinstance(indices, _C.Tensor):
            indices = np.asarray(indices)
            if indices.size == 0:
                indices = indices.reshape(0, len(shape))
            if indices.dtype.kind not in "iu":
                raise TypeError(
                    f"SparseTensor: `indices` must be integers, got {indices.dtype}"
                )
            indices = convert_to_tensor(indices, "int64")
        if not (indices.dtype.startswith("int") or indices.dtype.startswith("uint")):
            raise TypeError(
                f"SparseTensor: `indices` must be integers, got {indices.dtype}"
            )
        if indices.dtype != "int64":
            indices = op("cast", indices, dtype="int64")
        if indices.ndim != 2 or indices.shape[1] > len(shape):
            raise ValueError(
                "SparseTensor: `indices` must have shape [nnz, k] with "
                f"k <= {len(shape)} (the rank of shape {shape}), got "
                f"{indices.shape}"
            )
        values = convert_to_tensor(values)
        nnz, k = indices.shape
        if values.shape != (nnz, *shape[k:]):
            raise ValueError(
                f"SparseTensor: `values` must have shape {(nnz, *shape[k:])} "
                f"for {nnz} indices into shape {shape}, got {values.shape}"
            )
        if validate and nnz and k:
            limits = convert_to_tensor(np.asarray(shape[:k], np.int64))
            zero = convert_to_tensor(np.zeros((), np.int64))
            bad = op(
                "logical_or",
                op("less", indices, zero),
                op("greater_equal", indices, limits),
            )
            if bool(op("any", bad)):
                raise IndexError(
                    f"SparseTensor: an index is out of range for shape {shape}"
                )
        self.indices = indices
        self.values = values
        self.shape = shape
        self.unique = bool(unique)

    # -- properties --------------------------------------------------------
    @property
    def dtype(self):
        return self.values.dtype

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def n_sparse(self):
        return self.indices.shape[1]

    @property
    def n_dense(self):
        return len(self.shape) - self.indices.shape[1]

    @property
    def nnz(self):
        return self.indices.shape[0]

    @property
    def size(self):
        size = 1
        for d in self.shape:
            size *= d
        return size

    # -- conversion --------------------------------------------------------
    def todense(self):
        dtype = self.dtype
        values = self.values
        if dtype == "bool":  # duplicates mean "or": count, then compare
            values = op("cast", values, dtype="int32")
        if self.n_sparse == 0:
            out = op("sum", values, axes=[0], keepdims=False)
        else:
            base = op("full", shape=list(self.shape), dtype=values.dtype, value=0.0)
            out = op("scatter_nd", base, self.indices, values, reduction="add")
        if dtype == "bool":
            out = op("cast", out, dtype="bool")
        return out

    def __array__(self, dtype=None, copy=None):
        a = numpy_view(self.todense())
        return a.astype(dtype) if dtype is not None else a.copy()

    def numpy(self):
        return self.todense().numpy()

    def astype(self, dtype):
        return self.with_values(cast(self.values, dtype))

    def with_values(self, values):
        """Same indices (and shape) holding ``values``, of the same class."""
        return type(self)(
            self.indices, values, self.shape, unique=self.unique, validate=False
        )

    def __repr__(self):
        return (
            f"SparseTensor(shape={self.shape}, dtype={self.dtype}, "
            f"nnz={self.nnz}, n_dense={self.n_dense})"
        )

    __str__ = __repr__
    __hash__ = object.__hash__

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # Indexing, iteration and truth value work on the dense form.
    def __getitem__(self, key):
        return self.todense()[key]

    def __iter__(self):
        return iter(self.todense())

    def __bool__(self):
        return bool(self.todense())


def is_foreign_operand(other):
    """Operands a tensor's operators leave to the other side (NotImplemented)."""
    if other is None or isinstance(other, (str, bytes)):
        return True
    # Symbolic tensors handle the reflected operator themselves.
    return type(other).__name__ == "KerasTensor"


# ---------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------


def is_tensor(x):
    return isinstance(x, _C.Tensor)


def _scalar_dtype(x):
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int32" if _INT32_MIN <= x <= _INT32_MAX else "int64"
    if isinstance(x, complex):
        return "complex64"
    return floatx()


def _has_tensor(x):
    return any(
        isinstance(e, (_C.Tensor, KerasVariable)) for e in tree.flatten(x)
    )


def _stack_nested(x, dtype):
    """Convert a (nested) list holding tensors; stacking runs in the engine."""
    if isinstance(x, (list, tuple)):
        parts = [_stack_nested(e, dtype) for e in x]
        if not parts:
            return from_numpy(np.zeros((0,), NUMPY_DTYPES[dtype]), dtype)
        parts = [op("reshape", p, shape=[1, *p.shape]) for p in parts]
        return op("concatenate", *parts, axis=0)
    return convert_to_tensor(x, dtype)


def _from_dlpack(x):
    """``x`` through DLPack, or None where the engine cannot take it that way
    (another device, a dtype DLPack or the engine lacks): the general path
    below then tries numpy."""
    try:
        return _C.from_dlpack(x)
    except BufferError:
        return None


def convert_to_tensor(x, dtype=None, sparse=None, ragged=None):
    # Inside the backend a SparseTensor becomes dense unless `sparse=True`
    # (the dense op code expects engine tensors); the exported
    # `backend.convert_to_tensor` (sparse.convert_to_tensor) keeps it for
    # `sparse=None`, as keras.ops.convert_to_tensor documents for a backend
    # that supports sparse tensors. A dense input stays dense.
    if ragged:
        raise ValueError("`ragged=True` is not supported with swift backend")
    if dtype is not None and dtype not in ENGINE_DTYPES:
        dtype = standardize_dtype(dtype)
    if not isinstance(x, _C.Tensor) and isinstance(x, KerasVariable):
        x = x.value
    if isinstance(x, _C.Tensor):
        if dtype is None or x.dtype == dtype:
            return x
        return op("cast", x, dtype=_check_engine_dtype(dtype))
    if isinstance(x, SparseBase):
        return convert_sparse(x, dtype, bool(sparse))
    if isinstance(x, KerasTensor):
        raise ValueError(
            "A KerasTensor is symbolic: it's a placeholder for a shape and a "
            "dtype. It doesn't have any actual numerical value. You cannot "
            f"convert it to a swift tensor. Received: x={x}"
        )
    if not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__"):
        # JAX, PyTorch...: shared, not copied, where DLPack's layout allows.
        t = _from_dlpack(x)
        if t is not None:
            if dtype is None or t.dtype == dtype:
                return t
            return op("cast", t, dtype=_check_engine_dtype(dtype))
    if type(x) in (bool, int, float, complex):
        dtype = _check_engine_dtype(dtype or _scalar_dtype(x))
        return from_numpy(np.asarray(x, dtype=NUMPY_DTYPES[dtype]), dtype)
    if isinstance(x, (list, tuple)) and _has_tensor(x):
        if dtype is None:
            dtype = result_type(*[dtype_of(e) for e in tree.flatten(x)])
        return _stack_nested(x, _check_engine_dtype(dtype))
    if dtype is None:
        if isinstance(x, (np.ndarray, np.generic)):
            dtype = result_type(x.dtype)
        else:
            dtype = result_type(*[dtype_of(e) for e in tree.flatten(x)])
    dtype = _check_engine_dtype(dtype)
    a = np.asarray(x)
    if a.dtype == object:
        raise TypeError(
            f"keras_swift: cannot convert {type(x).__name__} to a tensor"
        )
    if a.dtype.kind == "c" and not dtype.startswith("complex"):
        # Dropping the imaginary part is the engine cast's job: numpy's astype
        # would warn (ComplexWarning) where jax does not.
        src = "complex64" if a.dtype == np.complex64 else "complex128"
        t = from_numpy(a.astype(NUMPY_DTYPES[src], copy=False), src)
        return op("cast", t, dtype=dtype)
    return from_numpy(a.astype(NUMPY_DTYPES[dtype], copy=False), dtype)


def convert_to_numpy(x):
    if isinstance(x, KerasVariable):
        x = x.value
    if isinstance(x, _C.Tensor):
        return np.array(numpy_view(x))
    if isinstance(x, SparseBase):
        return np.array(numpy_view(x.todense()))
    if isinstance(x, (list, tuple)):
        return np.array([convert_to_numpy(e) for e in x])
    return np.array(x)


def convert_sparse(x, dtype, keep):
    """``convert_to_tensor`` of a sparse tensor: kept sparse if ``keep``."""
    if not keep:
        out = x.todense()
        if dtype is not None and out.dtype != dtype:
            out = cast(out, dtype)
        return out
    if dtype is not None and x.dtype != dtype:
        return x.astype(dtype)
    return x


def shape(x):
    return tuple(x.shape)


def cast(x, dtype):
    if isinstance(x, _C.Tensor) and x.dtype == dtype:
        return x  # the common no-op, before standardize_dtype's cost
    if isinstance(x, KerasVariable):
        x = x.value
    if isinstance(x, SparseBase):  # stays sparse, as on jax and tensorflow
        return x.astype(standardize_dtype(dtype))
    return convert_to_tensor(x, standardize_dtype(dtype))


def stop_gradient(variable):
    if isinstance(variable, KerasVariable):
        variable = variable.value
    return op("stop_gradient", convert_to_tensor(variable))


def random_seed_dtype():
    return "uint32"


@contextlib.contextmanager
def device_scope(device_name):
    if not isinstance(device_name, str):
        raise ValueError(
            "Invalid value for argument `device_name`. Expected a string "
            f"like 'gpu:0' or 'cpu'. Received: device_name='{device_name}'"
        )
    # The engine has one device, the CPU: any other name is refused rather than
    # ignored, so that code meant for an accelerator does not silently run here.
    # There is no scope state to keep.
    if device_name.lower() not in ("cpu", "cpu:0"):
        raise ValueError(
            f"Unknown device '{device_name}': the swift backend has one device, "
            "'cpu' (also 'cpu:0')."
        )
    yield device_name.lower()



# ---------------------------------------------------------------------------
# Functional slicing and scattering
# ---------------------------------------------------------------------------


def _static_ints(values, what):
    """Read a small index vector (Python ints, numpy or a tensor)."""
    if is_tensor(values) or isinstance(values, KerasVariable):
        values = convert_to_numpy(values)
    try:
        return [int(v) for v in values]
    except TypeError as e:
        raise TypeError(f"`{what}` must be a sequence of integers") from e


def slice(inputs, start_indices, shape):
    inputs = convert_to_tensor(inputs)
    start_indices = _static_ints(start_indices, "start_indices")
    shape = _static_ints(shape, "shape")
    if len(start_indices) != len(shape):
        raise ValueError(
            "Length of `start_indices` must match length of `shape`. "
            f"Received: start_indices={start_indices}, shape={shape}"
        )
    if len(shape) != inputs.ndim:
        raise ValueError(
            f"`start_indices` must have one entry per dimension of `inputs` "
            f"(ndim={inputs.ndim}). Received: start_indices={start_indices}"
        )
    for s, n, d in zip(start_indices, shape, inputs.shape):
        if s < 0 or n < 0 or s + n > d:
            raise IndexError(
                f"slice start={start_indices} size={shape} is out of range "
                f"for a tensor of shape {inputs.shape}"
            )
    return op(
        "strided_slice",
        inputs,
        begin=start_indices,
        end=[s + n for s, n in zip(start_indices, shape)],
        strides=[1] * inputs.ndim,
    )


def slice_update(inputs, start_indices, updates):
    inputs = convert_to_tensor(inputs)
    updates = convert_to_tensor(updates, inputs.dtype)
    start = _static_ints(start_indices, "start_indices")
    return op("slice_update", inputs, updates, start=start)


def scatter(indices, values, shape):
    values = convert_to_tensor(values)
    base = op(
        "full",
        shape=_static_ints(shape, "shape"),
        dtype=values.dtype,
        value=0.0,
    )
    return scatter_update(base, indices, values, reduction="add")


def scatter_update(inputs, indices, updates, reduction=None):
    inputs = convert_to_tensor(inputs)
    updates = convert_to_tensor(updates, inputs.dtype)
    indices = convert_to_tensor(indices)
    if not is_int_dtype(indices.dtype):
        raise TypeError(f"`indices` must be integers, got {indices.dtype}")
    reduction = "update" if reduction is None else reduction
    if reduction not in ("update", "add", "max", "min", "mul"):
        raise ValueError(f"Unsupported reduction: {reduction}")
    return op("scatter_nd", inputs, indices, updates, reduction=reduction)


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------


class custom_gradient:
    """``fun(*args, **kwargs)`` returns ``(outputs, grad_fn)``; gradients of the
    outputs flow to the positional tensor arguments through ``grad_fn`` instead
    of through the forward ops.

    ``grad_fn`` receives the upstream gradient (one per output, positionally)
    and returns one gradient per positional argument (a single tensor when there
    is one argument); ``None`` or a non-tensor argument gets no gradient.
    """

    def __init__(self, fun):
        self.fun = fun
        functools.update_wrapper(self, fun)

    def __call__(self, *args, **kwargs):
        positions = [
            i for i, a in enumerate(args) if isinstance(a, (_C.Tensor, KerasVariable))
        ]
        inputs = [convert_to_tensor(args[i]) for i in positions]
        with no_grad():
            outputs, grad_fn = self.fun(*args, **kwargs)
        if _C.tape_depth() == 0 or not inputs:
            return outputs
        flat = [convert_to_tensor(o) for o in tree.flatten(outputs)]

        def vjp_for(k):
            def vjp(upstream):
                ups = [
                    upstream if j == k else op("full", shape=list(o.shape), dtype=o.dtype)
                    for j, o in enumerate(flat)
                ]
                grads = grad_fn(*ups)
                if len(args) == 1 and not isinstance(grads, (list, tuple)):
                    grads = [grads]
                grads = list(grads)
                if len(grads) != len(args):
                    raise ValueError(
                        f"custom_gradient: the gradient function returned "
                        f"{len(grads)} gradients for {len(args)} positional arguments"
                    )
                return [
                    None if grads[i] is None else convert_to_tensor(grads[i])
                    for i in positions
                ]

            return vjp

        recorded = [_C.record_custom(o, inputs, vjp_for(k)) for k, o in enumerate(flat)]
        return tree.pack_sequence_as(outputs, recorded)


def remat(f):
    warnings.warn(
        "Rematerialization memory optimization is not supported by the "
        "swift backend; the function runs unchanged."
    )
    return f
