"""The Python face of an engine tensor.

``SwiftTensor`` subclasses the native ``_swiftkeras.Tensor`` and is registered
with ``set_tensor_class``, so every tensor the engine hands out is one. It adds
the numpy-like protocol Keras applies to backend tensors: operators (routed to
``keras_swift.src.ops.numpy``), indexing, scalar conversion and ``__array__``.
Tensors are immutable; nothing here writes into engine storage.
"""

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


def _knp():
    from keras_swift.src.ops import numpy as knp

    return knp


def _indexing():
    from keras_swift.src import indexing

    return indexing


def _is_foreign(other):
    """Operands our operators leave to the other side (NotImplemented)."""
    if other is None or isinstance(other, (str, bytes)):
        return True
    # Symbolic tensors handle the reflected operator themselves.
    return type(other).__name__ == "KerasTensor"


def _binary(fname, reflected=False):
    def method(self, other):
        if _is_foreign(other):
            return NotImplemented
        fn = getattr(_knp(), fname)
        return fn(other, self) if reflected else fn(self, other)

    method.__name__ = fname
    return method


def _bitwise_or_logical(logical, bitwise, reflected=False):
    def method(self, other):
        if _is_foreign(other):
            return NotImplemented
        knp = _knp()
        a, b = (other, self) if reflected else (self, other)
        other_dtype = getattr(other, "dtype", None)
        is_bool = self.dtype == "bool" and (
            isinstance(other, bool) or str(other_dtype) == "bool"
        )
        return getattr(knp, logical if is_bool else bitwise)(a, b)

    return method


class _Arithmetic:
    """The operators dense and sparse tensors share; each routes to the
    backend function of the same name."""

    __slots__ = ()

    __add__ = _binary("add")
    __radd__ = _binary("add", reflected=True)
    __sub__ = _binary("subtract")
    __rsub__ = _binary("subtract", reflected=True)
    __mul__ = _binary("multiply")
    __rmul__ = _binary("multiply", reflected=True)
    __truediv__ = _binary("true_divide")
    __rtruediv__ = _binary("true_divide", reflected=True)
    __matmul__ = _binary("matmul")
    __rmatmul__ = _binary("matmul", reflected=True)

    def __neg__(self):
        return _knp().negative(self)

    def __abs__(self):
        return _knp().absolute(self)


class _SwiftTensorMethods(_Arithmetic):
    """An n-dimensional array computed by the Swift engine."""

    __array_priority__ = 100.0

    # -- numpy interop -----------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        a = numpy_view(self)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            if copy is False:
                raise ValueError(
                    "Unable to avoid a copy while converting a SwiftTensor "
                    f"of dtype {self.dtype} to {np.dtype(dtype)}."
                )
            return a.astype(dtype)
        if copy:
            return a.copy()
        return a

    def numpy(self):
        """A writable numpy copy of the tensor."""
        return numpy_view(self).copy()

    def item(self):
        if self.size != 1:
            raise ValueError(
                "Only tensors with exactly one element can be converted to a "
                f"Python scalar. Got shape={self.shape}"
            )
        return numpy_view(self).reshape(()).item()

    def tolist(self):
        return numpy_view(self).tolist()

    def astype(self, dtype):
        from keras_swift.src.core import cast

        return cast(self, dtype)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return _knp().reshape(self, shape)

    @property
    def T(self):
        return _knp().transpose(self)

    def __reduce__(self):
        from keras_swift.src.core import convert_to_tensor

        return (convert_to_tensor, (self.numpy(),))

    # Tensors are immutable: a copy is the tensor itself.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # -- python protocol ---------------------------------------------------
    __hash__ = object.__hash__

    def __repr__(self):
        try:
            body = np.array2string(
                numpy_view(self), separator=", ", prefix="SwiftTensor("
            )
        except Exception:  # keep repr usable even on odd storage
            body = "..."
        return f"SwiftTensor({body}, shape={self.shape}, dtype={self.dtype})"

    __str__ = __repr__

    def __format__(self, spec):
        if self.size == 1 and self.ndim == 0:
            return format(self.item(), spec)
        return format(str(self), spec)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __contains__(self, value):
        knp = _knp()
        return bool(knp.any(knp.equal(self, value)))

    def __bool__(self):
        if self.size != 1:
            raise ValueError(
                "The truth value of a tensor with more than one element is "
                "ambiguous. Use keras.ops.any() or keras.ops.all()."
            )
        return bool(self.item())

    def __int__(self):
        return int(self.item())

    def __float__(self):
        return float(self.item())

    def __index__(self):
        if self.dtype == "bool" or not (
            self.dtype.startswith("int") or self.dtype.startswith("uint")
        ):
            raise TypeError(
                f"Only integer scalar tensors can be used as an index, "
                f"got dtype={self.dtype}"
            )
        return int(self.item())

    def __getitem__(self, key):
        return _indexing().getitem(self, key)

    # -- arithmetic (the rest in _Arithmetic) --------------------------------
    __floordiv__ = _binary("floor_divide")
    __rfloordiv__ = _binary("floor_divide", reflected=True)
    __mod__ = _binary("mod")
    __rmod__ = _binary("mod", reflected=True)
    __pow__ = _binary("power")
    __rpow__ = _binary("power", reflected=True)
    __eq__ = _binary("equal")
    __ne__ = _binary("not_equal")
    __lt__ = _binary("less")
    __le__ = _binary("less_equal")
    __gt__ = _binary("greater")
    __ge__ = _binary("greater_equal")
    __and__ = _bitwise_or_logical("logical_and", "bitwise_and")
    __rand__ = _bitwise_or_logical("logical_and", "bitwise_and", True)
    __or__ = _bitwise_or_logical("logical_or", "bitwise_or")
    __ror__ = _bitwise_or_logical("logical_or", "bitwise_or", True)
    __xor__ = _bitwise_or_logical("logical_xor", "bitwise_xor")
    __rxor__ = _bitwise_or_logical("logical_xor", "bitwise_xor", True)

    def __pos__(self):
        return self

    def __invert__(self):
        knp = _knp()
        if self.dtype == "bool":
            return knp.logical_not(self)
        return knp.bitwise_invert(self)

    def __round__(self, ndigits=None):
        return _knp().round(self, decimals=ndigits or 0)


def _tensor_class(methods):
    # A class statement deriving from _C.Tensor would make every tensor a GC
    # object (CPython tracks all instances of classes it creates), a cost on
    # every op for objects that hold no Python references of their own. The
    # engine-made subclass is not tracked; it receives the methods here.
    cls = _C.tensor_subclass(f"{__name__}.SwiftTensor")
    for klass in reversed(methods.__mro__[:-1]):
        for name, value in vars(klass).items():
            if name not in ("__dict__", "__weakref__", "__module__", "__slots__"):
                setattr(cls, name, value)
    cls.__qualname__ = "SwiftTensor"
    return cls


SwiftTensor = _tensor_class(_SwiftTensorMethods)
_C.set_tensor_class(SwiftTensor)


def _sparse():
    from keras_swift.src import sparse

    return sparse


_op = _C.call


class SparseTensor(_Arithmetic):
    """A COO sparse tensor whose indices and values are engine tensors.

    ``indices`` (int64, ``[nnz, k]``) names the coordinates of ``nnz``
    entries along the first ``k`` dimensions of ``shape``; ``values``
    (``[nnz, *shape[k:]]``) holds them. ``k == ndim`` is element-wise COO;
    ``k < ndim`` stores whole trailing slices per index (jax's BCOO with
    ``n_dense > 0``, TensorFlow's IndexedSlices). Duplicate indices mean the
    sum of their values. The ops live in ``keras_swift.src.sparse``.

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
        from keras_swift.src.core import convert_to_tensor

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
            indices = _op("cast", indices, dtype="int64")
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
            bad = _op(
                "logical_or",
                _op("less", indices, zero),
                _op("greater_equal", indices, limits),
            )
            if bool(_op("any", bad)):
                raise IndexError(
                    f"SparseTensor: an index is out of range for shape {shape}"
                )
        self.indices = indices
        self.values = values
        self.shape = shape
        self.unique = bool(unique)

    @classmethod
    def fromdense(cls, x, n_dense=0):
        """The sparse form of dense ``x``: its non-zero entries, or with
        ``n_dense > 0`` its trailing slices that hold a non-zero."""
        return _sparse().fromdense(x, n_dense=n_dense)

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
        return _sparse().todense(self)

    def __array__(self, dtype=None, copy=None):
        a = numpy_view(self.todense())
        return a.astype(dtype) if dtype is not None else a.copy()

    def numpy(self):
        return self.todense().numpy()

    def astype(self, dtype):
        from keras_swift.src.core import cast

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

    # Operators (_Arithmetic) go through the backend functions, which dispatch
    # on sparse.


class IndexedSlices(SparseTensor):
    """A SparseTensor whose indices name whole rows (``indices`` is
    ``[nnz, 1]``): the gradient of a variable that a train step read only
    through row gathers (``sparse @ kernel``), so optimizers update just those
    rows, as TensorFlow's IndexedSlices of the same name. Duplicate rows sum."""

    __slots__ = ()
