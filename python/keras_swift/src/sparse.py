"""Sparse tensors: the swift backend's counterpart of jax's BCOO support.

``SparseTensor`` is a COO tensor: int64 ``indices`` ``[nnz, k]`` into the
first ``k`` dimensions of ``shape`` and ``values`` ``[nnz, *shape[k:]]``;
``k < ndim`` is the "indexed slices" layout (BCOO's ``n_dense > 0``).
Duplicate indices mean the sum of their values, as in BCOO. Its layout,
validation and dense form are ``core.SparseBase``'s (the dense layers below
convert it); this module adds its ops and operators.

The semantics follow keras/src/backend/jax/sparse.py and jax/numpy.py:
zero-preserving element-wise ops keep the indices, other unary ops densify,
union ops (add, subtract, maximum, minimum) are sparse only for two sparse
operands, multiply is sparse if either operand is, divide densifies for a
sparse divisor and adds the dense divisor's zeros/NaNs to the dividend's
indices. Every computation is a composition of engine ops (gather/scatter,
argsort, cumsum, segment sums); numpy appears only for static shapes and
where user data enters.

As on jax, each op module declares a function's sparse behaviour where it is
defined, with a decorator from here (``elementwise_unary``,
``elementwise_binary_union``, ``on_first_arg(sum)``...): the dense path of the
wrapped function costs one ``isinstance`` test. Any other function densifies a
sparse operand through ``core.convert_to_tensor``; only the exported
``backend.convert_to_tensor``/``cast`` keep sparse tensors sparse, as
``keras.ops.convert_to_tensor`` documents for ``sparse=None`` on a backend
that supports them (keras/src/ops/core.py).
"""

import builtins
import contextlib
import functools
import math
import operator
import threading

import numpy as np

from keras.src.backend.common import standardize_dtype
from keras.src.backend.common.backend_utils import canonicalize_axis
from keras_swift.src import core
from keras_swift.src.core import SparseBase
from keras_swift.src.core import cast as _cast
from keras_swift.src.core import is_float_dtype
from keras_swift.src.core import is_foreign_operand
from keras_swift.src.core import is_int_dtype
from keras_swift.src.core import matmul_dtype
from keras_swift.src.core import result_type
from keras_swift.src.core import sum_dtype
from keras_swift.src.dtypes import NUMPY_DTYPES
from keras_swift.src.engine import _C
from keras_swift.src.engine import from_numpy
from keras_swift.src.engine import op
from keras_swift.src.variable import detached_leaf

INDEX_DTYPE = "int64"


def _const(values, dtype=INDEX_DTYPE):
    """A small tensor of static values (shapes, strides, offsets)."""
    return from_numpy(np.asarray(values, dtype=NUMPY_DTYPES[dtype]), dtype)


def _zeros(shape, dtype):
    return op("full", shape=[int(d) for d in shape], dtype=dtype, value=0.0)


def _columns(indices, cols):
    """``indices[:, cols]`` (``cols`` a list of static ints, possibly empty)."""
    if not cols:
        return _zeros((indices.shape[0], 0), INDEX_DTYPE)
    return op("take", indices, _const(cols, "int32"), axis=1)


def is_tensor(x):
    """``backend.is_tensor``: dense engine tensors and sparse tensors."""
    return isinstance(x, (_C.Tensor, SparseBase))


# ---------------------------------------------------------------------------
# Construction and canonical forms
# ---------------------------------------------------------------------------


def fromdense(x, n_dense=0):
    """The sparse form of dense ``x``: its non-zero entries (or slices)."""
    x = core.convert_to_tensor(x)
    k = x.ndim - int(n_dense)
    if not 0 <= k <= x.ndim:
        raise ValueError(f"n_dense={n_dense} is invalid for rank {x.ndim}")
    if k == 0:
        indices = _zeros((1, 0), INDEX_DTYPE)
        values = op("reshape", x, shape=[1, *x.shape])
        return SparseTensor(indices, values, x.shape, unique=True, validate=False)
    mask = op("not_equal", x, _zeros((), x.dtype))
    if k < x.ndim:
        mask = op("any", mask, axes=list(range(k, x.ndim)), keepdims=False)
    indices = op("nonzero", mask)
    values = op("gather_nd", x, indices)
    return SparseTensor(indices, values, x.shape, unique=True, validate=False)


def _strides(dims):
    strides, acc = [], 1
    for d in reversed(dims):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def _linearize(indices, dims):
    """Row-major position of each index row within ``dims``."""
    if not dims:
        return _zeros((indices.shape[0],), INDEX_DTYPE)
    scaled = op("multiply", indices, _const(_strides(dims)))
    return op("sum", scaled, axes=[1], keepdims=False)


def _unravel(lin, dims):
    """Index rows ``[n, len(dims)]`` of row-major positions ``lin``."""
    cols = []
    for stride, d in zip(_strides(dims), dims):
        c = op("floor_divide", lin, _const(stride))
        cols.append(op("reshape", op("mod", c, _const(d)), shape=[-1, 1]))
    if not cols:
        return _zeros((lin.shape[0], 0), INDEX_DTYPE)
    return op("concatenate", *cols, axis=1)


class _DedupPlan:
    """How to merge duplicate index rows: sort by position, segment-sum.

    Built once per index set and applied to any number of value tensors
    sharing it (the two operands of a union share one plan).
    """

    def __init__(self, indices, dims):
        nnz = indices.shape[0]
        lin = _linearize(indices, dims)
        self.order = op("argsort", lin, axis=0)
        lin = op("take", lin, self.order, axis=0)
        first = op("full", shape=[1], dtype="bool", value=1.0)
        if nnz > 1:
            head = op("strided_slice", lin, begin=[1], end=[nnz], strides=[1])
            tail = op("strided_slice", lin, begin=[0], end=[nnz - 1], strides=[1])
            is_new = op("concatenate", first, op("not_equal", head, tail), axis=0)
        else:
            is_new = first
        self.segments = op(
            "subtract",
            op("cumsum", op("cast", is_new, dtype="int32"), axis=0),
            _const(1, "int32"),
        )
        firsts = op("reshape", op("nonzero", is_new), shape=[-1])
        self.count = firsts.shape[0]
        self.indices = op(
            "take", indices, op("take", self.order, firsts, axis=0), axis=0
        )

    def apply(self, values):
        dtype = values.dtype
        if dtype == "bool":
            values = op("cast", values, dtype="int32")
        values = op("take", values, self.order, axis=0)
        out = op(
            "segment_reduce",
            values,
            self.segments,
            reduction="add",
            num_segments=self.count,
        )
        if dtype == "bool":
            out = op("cast", out, dtype="bool")
        return out


def sum_duplicates(x):
    """``x`` with unique indices, sorted in row-major order."""
    if x.unique or x.nnz == 0:
        return x
    plan = _DedupPlan(x.indices, x.shape[: x.n_sparse])
    return SparseTensor(
        plan.indices, plan.apply(x.values), x.shape, unique=True, validate=False
    )


def to_coo(x):
    """``x`` with one index row per element (``n_dense == 0``)."""
    k = x.n_sparse
    if k == x.ndim:
        return x
    nnz = x.nnz
    dense_dims = x.shape[k:]
    per_row = math.prod(dense_dims)
    grid = _unravel(
        op("arange", start=0.0, stop=float(per_row), step=1.0, dtype=INDEX_DTYPE),
        dense_dims,
    )  # [per_row, n_dense]
    rows = op("repeat", x.indices, repeats=[per_row], axis=0)  # [nnz*per_row, k]
    tiled = op(
        "reshape",
        op("broadcast_to", grid, shape=[nnz, per_row, len(dense_dims)]),
        shape=[nnz * per_row, len(dense_dims)],
    )
    indices = op("concatenate", rows, tiled, axis=1)
    values = op("reshape", x.values, shape=[nnz * per_row])
    return SparseTensor(indices, values, x.shape, unique=x.unique, validate=False)


def _align(x1, x2):
    """``x1`` and ``x2`` re-expressed on the union of their indices.

    Both results hold the same (unique, sorted) index rows; entries missing
    from one operand are explicit zeros.
    """
    if x1.n_sparse != x2.n_sparse:
        x1, x2 = to_coo(x1), to_coo(x2)
    indices = op("concatenate", x1.indices, x2.indices, axis=0)
    v1 = op("concatenate", x1.values, _zeros(x2.values.shape, x1.dtype), axis=0)
    v2 = op("concatenate", _zeros(x1.values.shape, x2.dtype), x2.values, axis=0)
    plan = _DedupPlan(indices, x1.shape[: x1.n_sparse])
    return plan.indices, plan.apply(v1), plan.apply(v2)


# ---------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------


def from_foreign(x):
    """A scipy sparse matrix, jax BCOO or tf.SparseTensor as a SparseTensor
    (the same indices and values); anything else unchanged."""
    from keras.src.trainers.data_adapters import data_adapter_utils as du

    if du.is_scipy_sparse(x):
        coo = x.tocoo()
        indices = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
        return SparseTensor(indices, np.asarray(coo.data), coo.shape)
    if du.is_jax_sparse(x):
        if getattr(x, "n_batch", 0):
            x = x.update_layout(n_batch=0)
        return SparseTensor(np.asarray(x.indices), np.asarray(x.data), x.shape)
    if du.is_tensorflow_sparse(x):
        return SparseTensor(
            x.indices.numpy(), x.values.numpy(), x.dense_shape.numpy()
        )
    return x


def convert_to_tensor(x, dtype=None, sparse=None, ragged=None):
    """``backend.convert_to_tensor``: keeps sparse tensors unless
    ``sparse=False`` (the backend's own code densifies them)."""
    if isinstance(x, SparseBase):
        if dtype is not None:
            dtype = standardize_dtype(dtype)
        return core.convert_sparse(x, dtype, sparse is None or bool(sparse))
    return core.convert_to_tensor(x, dtype, sparse, ragged)


# ---------------------------------------------------------------------------
# Element-wise ops (jax backend: keras/src/backend/jax/sparse.py)
# ---------------------------------------------------------------------------


def _is_scalar(x):
    return not hasattr(x, "shape") or len(x.shape) == 0


def _densify(x):
    return x.todense() if isinstance(x, SparseTensor) else x


def _unary_handler(linear):
    """Zero-preserving unary op: applied to the values, indices kept.

    Non-linear ops (``f(a + b) != f(a) + f(b)``) see merged duplicates.
    """

    def handler(dense_fn, x, *args, **kwargs):
        if not linear:
            x = sum_duplicates(x)
        return x.with_values(dense_fn(x.values, *args, **kwargs))

    return handler


def _densifying_unary(dense_fn, x, *args, **kwargs):
    return dense_fn(x.todense(), *args, **kwargs)


def _dense_operand(x, shape):
    """Dense ``x`` broadcast to ``shape``, or None if that changes ``x``'s
    result shape (the op then runs densely)."""
    x = core.convert_to_tensor(x)
    if tuple(x.shape) == tuple(shape):
        return x
    try:
        out_shape = np.broadcast_shapes(tuple(x.shape), tuple(shape))
    except ValueError:
        return None
    if out_shape != tuple(shape):
        return None
    return op("broadcast_to", x, shape=list(shape))


def _combine_sparse(dense_fn, x1, x2, linear):
    """``dense_fn`` on the values of two sparse operands of one shape, over their
    shared indices (or the union of both); a non-linear op first merges
    duplicate entries, since it must see each position's total."""
    if x1.indices is x2.indices:
        if not linear and not x1.unique:
            x1, x2 = sum_duplicates(x1), sum_duplicates(x2)
        return SparseTensor(
            x1.indices,
            dense_fn(x1.values, x2.values),
            x1.shape,
            unique=x1.unique,
            validate=False,
        )
    indices, v1, v2 = _align(x1, x2)
    return SparseTensor(indices, dense_fn(v1, v2), x1.shape, unique=True, validate=False)


def _union_handler(linear):
    """``f(0, 0) == 0`` ops (add, subtract, maximum, minimum): sparse only
    when both operands are; the result holds the union of their indices."""

    def handler(dense_fn, x1, x2):
        if isinstance(x1, SparseTensor) and isinstance(x2, SparseTensor):
            if x1.shape == x2.shape:
                return _combine_sparse(dense_fn, x1, x2, linear)
        return dense_fn(_densify(x1), _densify(x2))

    return handler


def multiply(dense_fn, x1, x2):
    """Intersection sparseness: sparse if either operand is."""
    if isinstance(x1, SparseTensor) and isinstance(x2, SparseTensor):
        if x1.shape != x2.shape:
            return dense_fn(x1.todense(), x2.todense())
        return _combine_sparse(dense_fn, x1, x2, linear=False)
    if isinstance(x2, SparseTensor):
        return _multiply_dense(dense_fn, x2, x1, reflected=True)
    return _multiply_dense(dense_fn, x1, x2, reflected=False)


def _multiply_dense(dense_fn, sp, other, reflected):
    def apply(a):
        return dense_fn(a, sp.values) if reflected else dense_fn(sp.values, a)

    if _is_scalar(other):
        return sp.with_values(apply(other))
    dense = _dense_operand(other, sp.shape)
    if dense is None:
        d = sp.todense()
        return dense_fn(other, d) if reflected else dense_fn(d, other)
    # Values of the dense operand at the sparse entries (whole slices when
    # n_dense > 0): zeros elsewhere stay zeros (as bcoo_multiply_dense).
    return sp.with_values(apply(op("gather_nd", dense, sp.indices)))


def divide(dense_fn, x1, x2):
    """A sparse divisor divides by zero off its indices: the result is dense.
    A sparse dividend keeps its indices plus those where the dense divisor
    is zero or NaN (where 0 / 0 is NaN, not 0)."""
    if isinstance(x2, SparseTensor) or not isinstance(x1, SparseTensor):
        return dense_fn(_densify(x1), _densify(x2))
    if _is_scalar(x2):
        return x1.with_values(dense_fn(x1.values, x2))
    dense = _dense_operand(x2, x1.shape)
    if dense is None:
        return dense_fn(x1.todense(), x2)
    bad = op("equal", dense, _zeros((), dense.dtype))
    if is_float_dtype(dense.dtype):
        bad = op("logical_or", bad, op("isnan", dense))
    bad = fromdense(bad, n_dense=x1.n_dense)
    if bad.nnz:
        extra = SparseTensor(
            bad.indices,
            _zeros(bad.values.shape, x1.dtype),
            x1.shape,
            unique=True,
            validate=False,
        )
        indices, values, _ = _align(x1, extra)
        x1 = SparseTensor(indices, values, x1.shape, unique=True, validate=False)
    return x1.with_values(dense_fn(x1.values, op("gather_nd", dense, x1.indices)))


# ---------------------------------------------------------------------------
# Shape ops and reductions
# ---------------------------------------------------------------------------


def _axis_list(axis, ndim):
    if axis is None:
        return list(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = [axis]
    axes = [canonicalize_axis(int(a), ndim) for a in axis]
    if len(set(axes)) != len(axes):
        raise ValueError(f"Repeated axis in `axis`: {axis}")
    return sorted(axes)


def _insert_zero_column(indices, position):
    k = indices.shape[1]
    zero = _zeros((indices.shape[0], 1), INDEX_DTYPE)
    left = _columns(indices, list(range(position)))
    right = _columns(indices, list(range(position, k)))
    return op("concatenate", left, zero, right, axis=1)


def _reduce_sum(x, axis, keepdims, dtype):
    axes = _axis_list(axis, x.ndim)
    k = x.n_sparse
    sparse_axes = [a for a in axes if a < k]
    dense_axes = [a for a in axes if a >= k]
    values = _cast(x.values, dtype)
    if dense_axes:
        values = op(
            "sum",
            values,
            axes=[a - k + 1 for a in dense_axes],
            keepdims=bool(keepdims),
        )
    if keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        indices = x.indices
        if sparse_axes:
            keep = [0 if i in sparse_axes else 1 for i in range(k)]
            indices = op("multiply", indices, _const(keep))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        indices = _columns(x.indices, [i for i in range(k) if i not in sparse_axes])
    out = SparseTensor(
        indices, values, shape, unique=x.unique and not sparse_axes, validate=False
    )
    return sum_duplicates(out) if sparse_axes else out


def sum(dense_fn, x, axis=None, keepdims=False):
    return _reduce_sum(x, axis, keepdims, sum_dtype(x.dtype))


def mean(dense_fn, x, axis=None, keepdims=False):
    dtype = x.dtype
    if is_int_dtype(dtype) or dtype == "bool":
        dtype = result_type(dtype, "float32")
    axes = _axis_list(axis, x.ndim)
    divisor = math.prod(x.shape[a] for a in axes)
    out = _reduce_sum(x, axes, keepdims, dtype)
    return out.with_values(
        op("divide", out.values, _const(divisor, dtype))
        if divisor
        else op("divide", out.values, _zeros((), dtype))
    )


def expand_dims(dense_fn, x, axis):
    out_ndim = x.ndim + (1 if isinstance(axis, (int, np.integer)) else len(axis))
    axes = _axis_list(axis, out_ndim)
    indices, values, shape = x.indices, x.values, list(x.shape)
    k = x.n_sparse
    for a in axes:
        if a <= k:
            indices = _insert_zero_column(indices, a)
            k += 1
        else:
            vshape = list(values.shape)
            vshape.insert(a - k + 1, 1)
            values = op("reshape", values, shape=vshape)
        shape.insert(a, 1)
    return SparseTensor(indices, values, shape, unique=x.unique, validate=False)


def squeeze(dense_fn, x, axis=None):
    if axis is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        axes = _axis_list(axis, x.ndim)
        for a in axes:
            if x.shape[a] != 1:
                raise ValueError(
                    "Cannot select an axis to squeeze out which has size not "
                    f"equal to one: axis={a}, shape={x.shape}"
                )
    k = x.n_sparse
    indices = _columns(x.indices, [i for i in range(k) if i not in axes])
    values = x.values
    dense_axes = [a for a in axes if a >= k]
    if dense_axes:
        vshape = [d for i, d in enumerate(values.shape) if i - 1 + k not in dense_axes or i == 0]
        values = op("reshape", values, shape=vshape)
    shape = [d for i, d in enumerate(x.shape) if i not in axes]
    return SparseTensor(indices, values, shape, unique=x.unique, validate=False)


def transpose(dense_fn, x, axes=None):
    ndim = x.ndim
    if axes is None:
        perm = list(range(ndim))[::-1]
    else:
        perm = [canonicalize_axis(int(a), ndim) for a in axes]
        if sorted(perm) != list(range(ndim)):
            raise ValueError(f"`axes` must be a permutation of {ndim} axes, got {axes}")
    k = x.n_sparse
    if sorted(perm[:k]) != list(range(k)):
        x = to_coo(x)  # the permutation mixes index and slice dimensions
        k = ndim
    indices = _columns(x.indices, perm[:k])
    values = x.values
    if k < ndim:
        values = op("transpose", values, perm=[0] + [p - k + 1 for p in perm[k:]])
    shape = [x.shape[p] for p in perm]
    return SparseTensor(indices, values, shape, unique=x.unique, validate=False)


def reshape(dense_fn, x, newshape):
    if isinstance(newshape, (int, np.integer)):
        newshape = [newshape]
    newshape = [int(d) for d in newshape]
    size = x.size
    if newshape.count(-1) > 1:
        raise ValueError(f"Only one -1 is allowed in `newshape`, got {newshape}")
    if -1 in newshape:
        known = math.prod(d for d in newshape if d != -1)
        if known == 0 or size % known:
            raise ValueError(f"Cannot reshape a tensor of shape {x.shape} to {newshape}")
        newshape[newshape.index(-1)] = size // known
    if math.prod(newshape) != size or any(d < 0 for d in newshape):
        raise ValueError(f"Cannot reshape a tensor of shape {x.shape} to {newshape}")
    x = to_coo(x)
    indices = _unravel(_linearize(x.indices, x.shape), newshape)
    return SparseTensor(indices, x.values, newshape, unique=x.unique, validate=False)


def concatenate(dense_fn, xs, axis=0):
    n_sparse_inputs = builtins.sum(isinstance(x, SparseTensor) for x in xs)
    if n_sparse_inputs < len(xs) or axis is None:
        return dense_fn([_densify(x) for x in xs], axis=axis)
    ndim = xs[0].ndim
    axis = canonicalize_axis(int(axis), ndim)
    for x in xs[1:]:
        if x.ndim != ndim or any(
            a != b for i, (a, b) in enumerate(zip(x.shape, xs[0].shape)) if i != axis
        ):
            raise ValueError(
                "All input tensors must have the same shape except along the "
                f"concatenation axis; got {[x.shape for x in xs]}"
            )
    dtype = result_type(*[x.dtype for x in xs])
    if len({x.n_sparse for x in xs}) != 1 or axis >= xs[0].n_sparse:
        xs = [to_coo(x) for x in xs]
    k = xs[0].n_sparse
    indices, values, offset = [], [], 0
    for x in xs:
        shift = [0] * k
        shift[axis] = offset
        indices.append(op("add", x.indices, _const(shift)))
        values.append(_cast(x.values, dtype))
        offset += x.shape[axis]
    shape = list(xs[0].shape)
    shape[axis] = offset
    return SparseTensor(
        op("concatenate", *indices, axis=0),
        op("concatenate", *values, axis=0),
        shape,
        unique=all(x.unique for x in xs),
        validate=False,
    )


# ---------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------


def _sparse_matmul_dense(sp, dense, dtype):
    """``sp @ dense`` for ``sp`` of rank >= 2 whose batch dims equal the
    result's: each entry (b…, i, k) adds ``v * dense[b…, k, :]`` to
    ``out[b…, i, :]``."""
    sp = to_coo(sp)
    batch = sp.shape[:-2]
    compute = "float32" if dtype in ("float16", "bfloat16") else dtype
    values = _cast(sp.values, compute)
    nb = len(batch)
    # rows of `dense` picked by (batch…, k)
    picks = _columns(sp.indices, list(range(nb)) + [nb + 1])
    if nb == 0 and dense.dtype == compute:
        rows = _gather_rows(dense, picks)
    else:
        dense = op("broadcast_to", dense, shape=[*batch, *dense.shape[-2:]])
        rows = op("gather_nd", _cast(dense, compute), picks)
    contrib = op("multiply", rows, op("reshape", values, shape=[-1, 1]))
    out_shape = [*batch, sp.shape[-2], dense.shape[-1]]
    target = _columns(sp.indices, list(range(nb + 1)))  # (batch…, i)
    out = op("scatter_nd", _zeros(out_shape, compute), target, contrib, reduction="add")
    return _cast(out, dtype)


_row_reads = threading.local()


@contextlib.contextmanager
def collect_row_reads(enabled=True):
    """Within a train step, ``sparse @ variable`` reads the variable's rows
    through a fresh leaf recorded here instead of through the variable, so the
    gradient of those rows can reach the optimizer row-sparse
    (``gradient_with_row_reads``).

    ``enabled=False`` turns an enclosing collection off for the block: a
    detached row leaf cuts the rows' path back to the variable, which a
    gradient taken later with ``create_graph`` (or by an enclosing tape)
    still needs."""
    outer = getattr(_row_reads, "reads", None)
    reads = [] if enabled else None
    _row_reads.reads = reads
    try:
        yield reads
    finally:
        _row_reads.reads = outer


def _gather_rows(dense, picks):
    reads = getattr(_row_reads, "reads", None)
    if reads is None or not getattr(dense, "requires_grad", False):
        return op("gather_nd", dense, picks)
    rows = detached_leaf(op("gather_nd", op("stop_gradient", dense), picks), True)
    reads.append((dense, picks, rows))
    return rows


def gradient_with_row_reads(target, leaves, reads, seed=None, create_graph=False):
    """The tape's gradients of ``target`` with respect to ``leaves``, the rows
    that ``collect_row_reads`` recorded as ``reads`` merged into them."""
    rows = [r for _, _, r in reads or ()]
    grads = _C.gradient(target, list(leaves) + rows, seed=seed, create_graph=create_graph)
    return merge_row_gradients(leaves, grads, reads or ())


def merge_row_gradients(leaves, grads, reads):
    """Gradients for ``leaves`` from ``grads``: one per leaf, then one per
    row read. A leaf read only through rows gets an ``IndexedSlices``; one
    also used densely gets the rows added to its dense gradient."""
    merged = list(grads[: len(leaves)])
    row_grads = grads[len(leaves):]
    for i, leaf in enumerate(leaves):
        parts = [
            (picks, g)
            for (source, picks, _), g in zip(reads, row_grads)
            if source is leaf and g is not None
        ]
        if not parts:
            continue
        indices = op("concatenate", *[p for p, _ in parts], axis=0)
        values = op("concatenate", *[g for _, g in parts], axis=0)
        rows = IndexedSlices(indices, values, leaf.shape, validate=False)
        merged[i] = rows if merged[i] is None else op("add", merged[i], rows.todense())
    return merged


def _swap_last(x):
    perm = list(range(x.ndim - 2)) + [x.ndim - 1, x.ndim - 2]
    if isinstance(x, SparseTensor):
        return transpose(None, x, perm)
    return op("transpose", x, perm=perm)


def matmul(dense_fn, x1, x2):
    """Sparse-aware matmul; the result is sparse only if both operands are."""
    s1, s2 = isinstance(x1, SparseTensor), isinstance(x2, SparseTensor)
    d1 = x1 if s1 else core.convert_to_tensor(x1)
    d2 = x2 if s2 else core.convert_to_tensor(x2)
    dtype = matmul_dtype(d1, d2)
    if d1.ndim < 2 or d2.ndim < 2:
        return dense_fn(_densify(x1), _densify(x2))
    batch = tuple(np.broadcast_shapes(tuple(d1.shape[:-2]), tuple(d2.shape[:-2])))
    if d1.shape[-1] != d2.shape[-2]:
        raise ValueError(
            f"matmul: incompatible shapes {d1.shape} and {d2.shape} "
            "(last dim of x1 must match second-to-last of x2)"
        )
    if s1 and tuple(d1.shape[:-2]) == batch:
        # sparse @ (dense or densified sparse)
        out = _sparse_matmul_dense(d1, _densify(d2), dtype)
    elif s2 and tuple(d2.shape[:-2]) == batch:
        # (a @ b) = (bᵀ @ aᵀ)ᵀ with the sparse operand on the left
        out = _swap_last(_sparse_matmul_dense(_swap_last(d2), _swap_last(_densify(d1)), dtype))
    else:
        return dense_fn(_densify(x1), _densify(x2))
    if s1 and s2:
        return fromdense(out)
    return out


def dot(dense_fn, x1, x2):
    nd1 = getattr(x1, "ndim", 0)
    nd2 = getattr(x2, "ndim", 0)
    if nd1 == 2 and nd2 == 2:
        # (matmul's dense fallback never runs for two 2-D operands)
        return matmul(dense_fn, x1, x2)
    return dense_fn(_densify(x1), _densify(x2))


# ---------------------------------------------------------------------------
# Counting and encoding
# ---------------------------------------------------------------------------


def _grid(shape):
    """Index rows of every position of ``shape`` in row-major order."""
    if not shape:
        return _zeros((1, 0), INDEX_DTYPE)
    return op("nonzero", op("full", shape=list(shape), dtype="bool", value=1.0))


def _counts(batch_coords, classes, weights, batch_shape, length, dtype):
    """Sparse ``out[b…, c] = sum of weights`` over entries (b…, c)."""
    column = op("reshape", _cast(classes, INDEX_DTYPE), shape=[-1, 1])
    indices = op("concatenate", batch_coords, column, axis=1)
    if weights is None:
        weights = op("full", shape=[column.shape[0]], dtype=dtype, value=1.0)
    else:
        weights = _cast(weights, dtype)
    out = SparseTensor(indices, weights, (*batch_shape, length), validate=False)
    return sum_duplicates(out)


def bincount(dense_fn, x, weights=None, minlength=0, sparse=False):
    """Sparse bincount, for a sparse ``x`` (counting its stored values, as
    jax does) or ``sparse=True``."""
    if isinstance(x, SparseTensor):
        if weights is not None:
            if not isinstance(weights, SparseTensor):
                raise ValueError("`x` and `weights` must both be sparse tensors")
            if weights.indices is not x.indices and (
                weights.indices.shape != x.indices.shape
                or not bool(op("all", op("equal", weights.indices, x.indices)))
            ):
                raise ValueError(
                    "`x` and `weights` sparse tensors must have the same indices"
                )
            weights = weights.values
        x = to_coo(x)
        classes = x.values
        batch_shape = x.shape[:-1]
        batch_coords = _columns(x.indices, list(range(x.ndim - 1)))
    else:
        x = core.convert_to_tensor(x)
        if weights is not None:
            weights = core.convert_to_tensor(_densify(weights))
            weights = op("reshape", weights, shape=[-1])
        classes = op("reshape", x, shape=[-1])
        batch_shape = x.shape[:-1]
        batch_coords = _columns(_grid(x.shape), list(range(x.ndim - 1)))
    if not is_int_dtype(classes.dtype):
        raise TypeError(f"bincount: `x` must be integers, got {classes.dtype}")
    if classes.shape[0] and bool(op("any", op("less", classes, _zeros((), classes.dtype)))):
        raise ValueError("bincount: `x` must be non-negative")
    top = int(op("max", classes)) + 1 if classes.shape[0] else 0
    length = builtins.max(int(minlength), top)
    dtype = "int32" if weights is None else result_type(classes.dtype, weights.dtype)
    return _counts(batch_coords, classes, weights, batch_shape, length, dtype)


def one_hot(dense_fn, x, num_classes, axis=-1, dtype=None, sparse=False):
    """Sparse one-hot: one entry per input position (value 0 for an input
    outside ``[0, num_classes)``, which jax keeps as an explicit zero too)."""
    x = core.convert_to_tensor(_densify(x))
    if not is_int_dtype(x.dtype):
        x = _cast(x, "int32")
    num_classes = int(num_classes)
    axis = canonicalize_axis(int(axis), x.ndim + 1)
    dtype = standardize_dtype(dtype or "float32")
    flat = op("reshape", _cast(x, INDEX_DTYPE), shape=[-1])
    valid = op(
        "logical_and",
        op("greater_equal", flat, _zeros((), INDEX_DTYPE)),
        op("less", flat, _const(num_classes)),
    )
    classes = op("where", valid, flat, _zeros((), INDEX_DTYPE))
    grid = _grid(x.shape)
    left = _columns(grid, list(range(axis)))
    right = _columns(grid, list(range(axis, x.ndim)))
    column = op("reshape", classes, shape=[-1, 1])
    indices = op("concatenate", left, column, right, axis=1)
    shape = list(x.shape)
    shape.insert(axis, num_classes)
    return SparseTensor(
        indices, _cast(valid, dtype), shape, unique=True, validate=False
    )


def multi_hot(dense_fn, x, num_classes, axis=-1, dtype=None, sparse=False):
    x = core.convert_to_tensor(_densify(x))
    reduction_axis = 1 if x.ndim > 1 else 0
    hot = one_hot(None, x, num_classes, axis=axis, dtype="int32")
    hot = _reduce_sum(hot, [reduction_axis], False, "int32")
    dtype = standardize_dtype(dtype or "float32")
    return hot.with_values(
        _cast(op("greater", hot.values, _zeros((), "int32")), dtype)
    )


# ---------------------------------------------------------------------------
# Declaring a function's sparse behaviour
# ---------------------------------------------------------------------------


# The decorators' dispatchers are C callables (``_C.Dispatch``): a Python
# wrapper's *args/**kwargs packing cost as much as a small op on every call of
# add, multiply, sum, reshape, transpose...


def _checking(mode):
    def decorator(handler):
        def wrap(dense_fn):
            return functools.update_wrapper(
                _C.Dispatch(dense_fn, handler, SparseTensor, mode), dense_fn
            )

        return wrap

    return decorator


# ``@on_first_arg(handler)``: ``f(x, ...)`` runs ``handler(f, x, ...)`` for a
# sparse ``x``; ``on_either_arg``: ``f(x1, x2)`` for either operand sparse;
# ``on_listed_args``: ``f([x, ...], ...)`` for any listed one sparse.
on_first_arg = _checking(0)
on_either_arg = _checking(1)
on_listed_args = _checking(2)


def on_sparse_flag(handler):
    """For ops with a ``sparse=`` argument (one_hot, multi_hot)."""

    def wrap(dense_fn):
        @functools.wraps(dense_fn)
        def dispatch(x, *args, **kwargs):
            if kwargs.get("sparse", args[3] if len(args) >= 4 else False):
                return handler(dense_fn, x, *args, **kwargs)
            return dense_fn(x, *args, **kwargs)

        return dispatch

    return wrap


def on_sparse_input_or_flag(handler):
    """bincount: sparse for a sparse ``x`` or ``sparse=True``."""

    def wrap(dense_fn):
        @functools.wraps(dense_fn)
        def dispatch(x, weights=None, minlength=0, sparse=False):
            if sparse or isinstance(x, SparseTensor):
                return handler(dense_fn, x, weights, minlength, sparse)
            return dense_fn(x, weights=weights, minlength=minlength, sparse=sparse)

        return dispatch

    return wrap


# The element-wise kinds, named as the jax backend's decorators
# (keras/src/backend/jax/sparse.py).
_LINEAR_UNARY = _unary_handler(linear=True)
_NONLINEAR_UNARY = _unary_handler(linear=False)
_LINEAR_UNION = _union_handler(linear=True)
_NONLINEAR_UNION = _union_handler(linear=False)


def elementwise_unary(linear):
    return on_first_arg(_LINEAR_UNARY if linear else _NONLINEAR_UNARY)


densifying_unary = on_first_arg(_densifying_unary)


def elementwise_binary_union(linear):
    return on_either_arg(_LINEAR_UNION if linear else _NONLINEAR_UNION)


elementwise_binary_intersection = on_either_arg(multiply)
elementwise_division = on_either_arg(divide)


# ---------------------------------------------------------------------------
# The sparse tensor
# ---------------------------------------------------------------------------


def _operator(handler, dense_op, reflected=False):
    # The sparse rule of the backend function of the same name, applied to
    # Python's operator on the dense tensors (whose operators are the
    # backend's functions).
    def method(self, other):
        if is_foreign_operand(other):
            return NotImplemented
        if reflected:
            return handler(dense_op, other, self)
        return handler(dense_op, self, other)

    return method


class SparseTensor(SparseBase):
    """A COO sparse tensor (``core.SparseBase``: the layout, the arguments,
    the dense form) with a tensor's arithmetic operators, which are the sparse
    ops of the backend functions of the same names."""

    __slots__ = ()

    @classmethod
    def fromdense(cls, x, n_dense=0):
        """The sparse form of dense ``x``: its non-zero entries, or with
        ``n_dense > 0`` its trailing slices that hold a non-zero."""
        return fromdense(x, n_dense=n_dense)

    __add__ = _operator(_LINEAR_UNION, operator.add)
    __radd__ = _operator(_LINEAR_UNION, operator.add, reflected=True)
    __sub__ = _operator(_LINEAR_UNION, operator.sub)
    __rsub__ = _operator(_LINEAR_UNION, operator.sub, reflected=True)
    __mul__ = _operator(multiply, operator.mul)
    __rmul__ = _operator(multiply, operator.mul, reflected=True)
    __truediv__ = _operator(divide, operator.truediv)
    __rtruediv__ = _operator(divide, operator.truediv, reflected=True)
    __matmul__ = _operator(matmul, operator.matmul)
    __rmatmul__ = _operator(matmul, operator.matmul, reflected=True)

    def __neg__(self):
        return _LINEAR_UNARY(operator.neg, self)

    def __abs__(self):
        return _NONLINEAR_UNARY(operator.abs, self)


class IndexedSlices(SparseTensor):
    """A SparseTensor whose indices name whole rows (``indices`` is
    ``[nnz, 1]``): the gradient of a variable that a train step read only
    through row gathers (``sparse @ kernel``), so optimizers update just those
    rows, as TensorFlow's IndexedSlices of the same name. Duplicate rows sum."""

    __slots__ = ()
