"""The Python face of an engine tensor.

``SwiftTensor`` subclasses the native ``_swiftkeras.Tensor`` and is registered
with ``set_tensor_class``, so every tensor the engine hands out is one. It adds
the numpy-like protocol Keras applies to backend tensors: operators (the
backend functions of ``keras_swift.src.ops.numpy``), indexing, scalar
conversion and ``__array__``. It is defined here, above the ops its operators
call; the layers below test for ``_C.Tensor``. Tensors are immutable; nothing
here writes into engine storage.
"""

import numpy as np

from keras_swift.src import indexing
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_foreign_operand
from keras_swift.src.engine import _C
from keras_swift.src.engine import numpy_view
from keras_swift.src.ops import numpy as knp


def _binary(fname, reflected=False):
    def method(self, other):
        if is_foreign_operand(other):
            return NotImplemented
        fn = getattr(knp, fname)
        return fn(other, self) if reflected else fn(self, other)

    method.__name__ = fname
    return method


def _bitwise_or_logical(logical, bitwise, reflected=False):
    def method(self, other):
        if is_foreign_operand(other):
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        other_dtype = getattr(other, "dtype", None)
        is_bool = self.dtype == "bool" and (
            isinstance(other, bool) or str(other_dtype) == "bool"
        )
        return getattr(knp, logical if is_bool else bitwise)(a, b)

    return method


class _SwiftTensorMethods:
    """An n-dimensional array computed by the Swift engine."""

    __array_priority__ = 100.0

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
        return knp.negative(self)

    def __abs__(self):
        return knp.absolute(self)

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
        return cast(self, dtype)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return knp.reshape(self, shape)

    @property
    def T(self):
        return knp.transpose(self)

    def __reduce__(self):
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
        return indexing.getitem(self, key)

    # -- arithmetic (continued) ---------------------------------------------
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
        if self.dtype == "bool":
            return knp.logical_not(self)
        return knp.bitwise_invert(self)

    def __round__(self, ndigits=None):
        return knp.round(self, decimals=ndigits or 0)


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
