"""numpy-style ``tensor[key]`` on engine tensors.

Basic indexing (ints, slices with any step, ``None``, ``Ellipsis``) is one
``strided_slice`` plus a ``reshape``. Advanced indexing (int arrays/tensors,
boolean masks) then gathers with ``take`` along the advanced dimensions,
following numpy's placement rule: the broadcast index dimensions replace the
indexed dimensions when those are adjacent, and go first otherwise.
"""

import math

import numpy as np

from keras.src.backend.common.variables import Variable as KerasVariable
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_int_dtype
from keras_swift.src.engine import _C
from keras_swift.src.engine import op


def _is_array_index(k):
    return isinstance(k, (_C.Tensor, KerasVariable, np.ndarray, list, tuple))


def _expand_key(key, shape):
    """Split ``key`` into per-dimension entries plus ``None`` (new axes).

    Boolean masks become one int-array entry per dimension they cover; a mask
    whose shape differs from the dimensions it covers is an IndexError, as in
    numpy and JAX (its nonzero positions alone could fit a larger dimension).
    """
    ndim = len(shape)
    if not isinstance(key, tuple):
        key = (key,)
    entries = []
    mask_sizes = {}  # id of a mask's index array -> the mask's size along it
    for k in key:
        if isinstance(k, (_C.Tensor, KerasVariable)):
            k = convert_to_numpy(k) if k.dtype == "bool" else k
        elif isinstance(k, (list, tuple)):
            k = np.asarray(k)
        if isinstance(k, np.ndarray) and k.dtype == np.bool_:
            if k.ndim == 0:
                entries.append(_scalar_bool_index(bool(k)))
                continue
            parts = np.nonzero(k)
            for part, size in zip(parts, k.shape):
                mask_sizes[id(part)] = size
            entries.extend(parts)
        elif isinstance(k, (bool, np.bool_)):
            entries.append(_scalar_bool_index(bool(k)))
        else:
            entries.append(k)
    n_ellipsis = sum(1 for k in entries if k is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    consumed = sum(1 for k in entries if k is not None and k is not Ellipsis)
    if consumed > ndim:
        raise IndexError(
            f"too many indices for tensor: tensor is {ndim}-dimensional, "
            f"but {consumed} were indexed"
        )
    if n_ellipsis:
        i = next(i for i, k in enumerate(entries) if k is Ellipsis)
        entries[i : i + 1] = [slice(None)] * (ndim - consumed)
    else:
        entries.extend([slice(None)] * (ndim - consumed))
    if mask_sizes:
        dim = 0
        for k in entries:
            if k is None:
                continue
            if id(k) in mask_sizes and mask_sizes[id(k)] != shape[dim]:
                raise IndexError(
                    f"boolean index did not match indexed array along axis "
                    f"{dim}; size of axis is {shape[dim]} but size of "
                    f"corresponding boolean axis is {mask_sizes[id(k)]}"
                )
            dim += 1
    return entries


def _scalar_bool_index(flag):
    # x[True] adds an axis of length 1, like None.
    if not flag:
        raise IndexError("indexing with a scalar False is not supported")
    return None


def _as_int(k):
    if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
        return int(k)
    if isinstance(k, (_C.Tensor, np.ndarray)) and k.ndim == 0 and (
        is_int_dtype(str(k.dtype))
    ):
        return int(k)
    return None


def getitem(x, key):
    entries = _expand_key(key, tuple(x.shape))
    has_advanced = any(
        _is_array_index(k) and _as_int(k) is None for k in entries
    )

    begin, end, strides = [], [], []
    out_shape = []  # shape after basic indexing (with new axes)
    advanced = []  # (position in out_shape, index tensor)
    dim = 0
    for k in entries:
        if k is None:
            out_shape.append(1)
            continue
        size = x.shape[dim]
        i = _as_int(k)
        if isinstance(k, slice):
            start, stop, step = k.indices(size)
            begin.append(start)
            end.append(stop)
            strides.append(step)
            out_shape.append(len(range(start, stop, step)))
        elif i is not None:
            if not -size <= i < size:
                raise IndexError(
                    f"index {i} is out of bounds for axis {dim} with size "
                    f"{size}"
                )
            i %= size
            begin.append(i)
            end.append(i + 1)
            strides.append(1)
            if has_advanced:  # numpy treats it as a 0-d advanced index
                advanced.append((len(out_shape), i))
                out_shape.append(1)
        elif _is_array_index(k):
            begin.append(0)
            end.append(size)
            strides.append(1)
            advanced.append((len(out_shape), k))
            out_shape.append(size)
        else:
            raise IndexError(
                "only integers, slices (`:`), ellipsis (`...`), None, and "
                "integer or boolean arrays are valid indices. "
                f"Received: {k!r} of type {type(k).__name__}"
            )
        dim += 1

    y = x
    if any(
        (b, e, s) != (0, n, 1) for b, e, s, n in zip(begin, end, strides, x.shape)
    ):
        y = op("strided_slice", x, begin=begin, end=end, strides=strides)
    if tuple(out_shape) != y.shape:
        y = op("reshape", y, shape=out_shape)
    if not advanced:
        return y
    return _gather(y, advanced)


def _gather(y, advanced):
    positions = [p for p, _ in advanced]
    indices = []
    for p, k in advanced:
        t = convert_to_tensor(k)
        if not is_int_dtype(t.dtype):
            raise IndexError(
                "arrays used as indices must be of integer (or boolean) "
                f"type, got {t.dtype}"
            )
        indices.append(t)
    if len(indices) == 1:
        return op("take", y, indices[0], axis=positions[0])

    # Several advanced indices: broadcast them, wrap negatives, check bounds,
    # and turn them into one flat index over the merged indexed dimensions.
    bshape = np.broadcast_shapes(*[t.shape for t in indices])
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    if not adjacent:
        rest = [i for i in range(y.ndim) if i not in positions]
        y = op("transpose", y, perm=positions + rest)
        positions = list(range(len(positions)))
    first = positions[0]
    sizes = [y.shape[p] for p in positions]
    flat = None
    for t, size in zip(indices, sizes):
        t = op("cast", t, dtype="int64") if t.dtype != "int64" else t
        lo = convert_to_tensor(-size, "int64")
        hi = convert_to_tensor(size, "int64")
        bad = op(
            "logical_or", op("less", t, lo), op("greater_equal", t, hi)
        )
        if bool(op("any", bad)):
            raise IndexError(
                f"index out of bounds for an axis with size {size}"
            )
        zero = convert_to_tensor(0, "int64")
        t = op("where", op("less", t, zero), op("add", t, hi), t)
        t = op("broadcast_to", t, shape=list(bshape))
        flat = t if flat is None else op("add", op("multiply", flat, hi), t)
    merged_shape = (
        list(y.shape[:first]) + [math.prod(sizes)]
        + list(y.shape[first + len(sizes):])
    )
    y = op("reshape", y, shape=merged_shape)
    return op("take", y, flat, axis=first)
