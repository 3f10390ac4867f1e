"""``backend.core``: conversions, control flow, Variable, shape inference.

Control flow and shape inference are defined here, above the numpy ops they
call; the rest comes from the layers below.
"""

import builtins

from keras.src import tree
from keras.src.backend.common import standardize_dtype
from keras.src.backend.common.backend_utils import canonicalize_axis
from keras.src.backend.common.keras_tensor import KerasTensor
from keras.src.backend.common.stateless_scope import StatelessScope
from keras.src.backend.common.variables import Variable as KerasVariable
from keras.src.backend.common.symbolic_scope import SymbolicScope
from keras.src.backend.config import floatx
from keras_swift.src import IS_THREAD_SAFE
from keras_swift.src import SUPPORTS_COMPLEX_DTYPES
from keras_swift.src import SUPPORTS_RAGGED_TENSORS
from keras_swift.src import SUPPORTS_SPARSE_TENSORS
from keras_swift.src import control_flow
from keras_swift.src import core
from keras_swift.src.core import ENGINE_DTYPES
from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.core import custom_gradient
from keras_swift.src.core import device_scope
from keras_swift.src.core import no_grad
from keras_swift.src.core import random_seed_dtype
from keras_swift.src.core import remat
from keras_swift.src.core import scatter
from keras_swift.src.core import scatter_update
from keras_swift.src.core import shape
from keras_swift.src.core import slice
from keras_swift.src.core import slice_update
from keras_swift.src.core import stop_gradient
from keras_swift.src.engine import _C
from keras_swift.src.engine import op
from keras_swift.src.ops import numpy as knp
from keras_swift.src.sparse import SparseTensor
from keras_swift.src.sparse import convert_to_tensor
from keras_swift.src.sparse import is_tensor
from keras_swift.src.variable import Variable

__all__ = [
    "IS_THREAD_SAFE",
    "SUPPORTS_COMPLEX_DTYPES",
    "SUPPORTS_RAGGED_TENSORS",
    "SUPPORTS_SPARSE_TENSORS",
    "Variable",
    "associative_scan",
    "cast",
    "compute_output_spec",
    "cond",
    "convert_to_numpy",
    "convert_to_tensor",
    "custom_gradient",
    "device_scope",
    "fori_loop",
    "is_tensor",
    "map",
    "random_seed_dtype",
    "remat",
    "scan",
    "scatter",
    "scatter_update",
    "shape",
    "slice",
    "slice_update",
    "stop_gradient",
    "switch",
    "unstack",
    "vectorized_map",
    "while_loop",
]


# ---------------------------------------------------------------------------
# Shape inference: Keras calls compute_output_spec for every op, layer and
# model build that sees a KerasTensor (ops/operation.py, layers/layer.py,
# trainers/trainer.py's _symbolic_build). The engine has no shape-only mode,
# so, as the numpy and torch backends do, run fn eagerly on placeholder tensors.
# ---------------------------------------------------------------------------


def compute_output_spec(fn, *args, **kwargs):
    with StatelessScope(), SymbolicScope(), no_grad():

        def has_none_shape(x):
            return isinstance(x, KerasTensor) and None in x.shape

        none_in_shape = builtins.any(
            builtins.map(has_none_shape, tree.flatten((args, kwargs)))
        )

        def to_tensor(x, fill_value):
            if isinstance(x, KerasTensor):
                shape = [fill_value if d is None else d for d in x.shape]
                dtype = x.dtype if x.dtype in ENGINE_DTYPES else floatx()
                if x.sparse:  # one zero entry (none if the shape is empty)
                    nse = 1 if builtins.all(shape) else 0
                    return SparseTensor(
                        op("full", shape=[nse, len(shape)], dtype="int64", value=0.0),
                        op("full", shape=[nse], dtype=dtype, value=0.0),
                        shape,
                        unique=True,
                        validate=False,
                    )
                return op("full", shape=shape, dtype=dtype, value=0.0)
            return x

        args_1, kwargs_1 = tree.map_structure(
            lambda x: to_tensor(x, 83), (args, kwargs)
        )
        outputs = outputs_1 = fn(*args_1, **kwargs_1)

        if none_in_shape:
            args_2, kwargs_2 = tree.map_structure(
                lambda x: to_tensor(x, 89), (args, kwargs)
            )
            outputs_2 = fn(*args_2, **kwargs_2)
            flat_out = []
            for x1, x2 in zip(tree.flatten(outputs_1), tree.flatten(outputs_2)):
                if core.is_tensor(x1) or isinstance(x1, SparseTensor):
                    shape = [
                        d1 if d1 == d2 else None
                        for d1, d2 in zip(x1.shape, x2.shape)
                    ]
                    flat_out.append(
                        KerasTensor(
                            shape,
                            x1.dtype,
                            sparse=isinstance(x1, SparseTensor),
                        )
                    )
                else:
                    flat_out.append(x1)
            outputs = tree.pack_sequence_as(outputs_1, flat_out)

        def to_keras_tensor(x):
            if core.is_tensor(x):
                return KerasTensor(x.shape, standardize_dtype(x.dtype))
            if isinstance(x, SparseTensor):
                return KerasTensor(
                    x.shape, standardize_dtype(x.dtype), sparse=True
                )
            return x

        return tree.map_structure(to_keras_tensor, outputs)


# ---------------------------------------------------------------------------
# Control flow (eager Python loops; a tape records straight through them)
# ---------------------------------------------------------------------------


def _selector(x, integer):
    """A traced cond's selector: ``x`` as bool (or, ``integer``, as an integer index)."""
    x = core.convert_to_tensor(x)
    dtype = standardize_dtype(x.dtype)
    if integer:
        return x if dtype == "bool" or "int" in dtype else cast(x, "int32")
    return x if dtype == "bool" else cast(x, "bool")


def cond(pred, true_fn, false_fn):
    if control_flow.traceable(pred):
        # A compiled step is tracing: a graph cond, both branches recorded (control_flow.py).
        return control_flow.cond(_selector(pred, integer=False), [false_fn, true_fn])
    if pred:
        return true_fn()
    return false_fn()


def vectorized_map(function, elements):
    if not isinstance(elements, (list, tuple)):
        elements = core.convert_to_tensor(elements)
        return knp.stack([function(x) for x in elements])
    batch_size = elements[0].shape[0]
    outputs = [
        function([x[index] for x in elements]) for index in range(batch_size)
    ]
    return tree.map_structure(lambda *ys: knp.stack(ys), *outputs)


def map(f, xs):
    def g(_, x):
        return (), f(x)

    _, ys = scan(g, (), xs)
    return ys


def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    # Ref: jax.lax.scan
    if not callable(f):
        raise TypeError(f"`f` should be a callable. Received: f={f}")
    if not isinstance(unroll, bool):
        if not isinstance(unroll, int) or unroll < 1:
            raise ValueError(
                "`unroll` must be an positive integer or boolean. "
                f"Received: unroll={unroll}"
            )
    if xs is None and length is None:
        raise ValueError("Got no `xs` to scan over and `length` not provided.")

    input_is_sequence = tree.is_nested(xs)
    output_is_sequence = tree.is_nested(init)

    def pack_input(x):
        return tree.pack_sequence_as(xs, x) if input_is_sequence else x[0]

    def pack_output(x):
        return tree.pack_sequence_as(init, x) if output_is_sequence else x[0]

    if xs is None:
        xs_flat = []
        n = int(length)
    else:
        xs_flat = [core.convert_to_tensor(elem) for elem in tree.flatten(xs)]
        n = int(length) if length is not None else xs_flat[0].shape[0]

    init_flat = [core.convert_to_tensor(i) for i in tree.flatten(init)]
    carry = pack_output(init_flat)
    dummy_y = [knp.zeros_like(i) for i in init_flat]

    ys = []
    steps = builtins.reversed(range(n)) if reverse else range(n)
    for i in steps:
        xs_slice = [x[i] for x in xs_flat]
        packed_xs = pack_input(xs_slice) if xs_slice else None
        carry, y = f(carry, packed_xs)
        ys.append(y if y is not None else dummy_y)
    if reverse:
        ys.reverse()
    if not ys:
        return carry, ys
    stacked_y = tree.map_structure(lambda *ys: knp.stack(ys), *ys)
    return carry, stacked_y


def associative_scan(f, elems, reverse=False, axis=0):
    # Ref: jax.lax.associative_scan (the recursive odd/even scheme).
    if not callable(f):
        raise TypeError(f"`f` should be a callable. Received: f={f}")
    elems_flat = [core.convert_to_tensor(e) for e in tree.flatten(elems)]
    if reverse:
        elems_flat = [knp.flip(e, (axis,)) for e in elems_flat]

    def combine(a_flat, b_flat):
        a = tree.pack_sequence_as(elems, a_flat)
        b = tree.pack_sequence_as(elems, b_flat)
        return tree.flatten(f(a, b))

    num_elems = int(elems_flat[0].shape[axis])
    if not builtins.all(
        int(e.shape[axis]) == num_elems for e in elems_flat[1:]
    ):
        raise ValueError(
            "Array inputs to associative_scan must have the same "
            "first dimension. (saw: {})".format([e.shape for e in elems_flat])
        )

    def slice_axis(x, start=0, stop=None, step=1):
        idx = [builtins.slice(None)] * x.ndim
        idx[axis] = builtins.slice(start, stop, step)
        return x[tuple(idx)]

    def interleave(a, b):
        # a: [a0, a1, ...] (n or n + 1 items), b: [b0, b1, ...] (n items)
        # -> [a0, b0, a1, b1, ...]
        ax = axis % a.ndim
        n = b.shape[ax]
        head = slice_axis(a, 0, n)
        pairs = knp.stack([head, b], axis=ax + 1)
        shape = list(a.shape)
        shape[ax] = 2 * n
        out = knp.reshape(pairs, shape)
        if a.shape[ax] > n:
            out = knp.concatenate([out, slice_axis(a, n)], axis=ax)
        return out

    def scan_rec(elems):
        n = elems[0].shape[axis]
        if n < 2:
            return elems
        reduced = combine(
            [slice_axis(e, 0, -1, 2) for e in elems],
            [slice_axis(e, 1, None, 2) for e in elems],
        )
        odd = scan_rec(reduced)
        if n % 2 == 0:
            even = combine(
                [slice_axis(e, 0, -1) for e in odd],
                [slice_axis(e, 2, None, 2) for e in elems],
            )
        else:
            even = combine(odd, [slice_axis(e, 2, None, 2) for e in elems])
        even = [
            knp.concatenate([slice_axis(e, 0, 1), r], axis=axis)
            for e, r in zip(elems, even)
        ]
        return [interleave(e, o) for e, o in zip(even, odd)]

    scans = scan_rec(elems_flat)
    if reverse:
        scans = [knp.flip(s, (axis,)) for s in scans]
    return tree.pack_sequence_as(elems, scans)


def while_loop(cond, body, loop_vars, maximum_iterations=None):
    is_tuple = isinstance(loop_vars, (tuple, list))
    loop_vars = tuple(loop_vars) if is_tuple else (loop_vars,)
    loop_vars = tree.map_structure(core.convert_to_tensor, loop_vars)

    def run(loop_vars, current_iter):
        while cond(*loop_vars) and (
            maximum_iterations is None or current_iter < maximum_iterations
        ):
            loop_vars = body(*loop_vars)
            if not isinstance(loop_vars, (list, tuple)):
                loop_vars = (loop_vars,)
            loop_vars = tuple(loop_vars)
            current_iter += 1
        return loop_vars

    if _C.trace_active():
        # A compiled step is tracing: a graph loop (control_flow.py).
        limit = None if maximum_iterations is None else int(maximum_iterations)
        loop_vars = control_flow.while_loop(cond, body, loop_vars, limit, run)
    else:
        loop_vars = run(loop_vars, 0)
    return loop_vars if is_tuple else loop_vars[0]


def fori_loop(lower, upper, body_fun, init_val):
    if _C.trace_active() and (
        isinstance(lower, (_C.Tensor, KerasVariable)) or isinstance(upper, (_C.Tensor, KerasVariable))
    ):
        # Tensor bounds in a trace: a graph loop rather than reading them on the host.
        ref = upper if isinstance(upper, (_C.Tensor, KerasVariable)) else lower
        dtype = standardize_dtype(ref.dtype)
        if "int" in dtype:
            lower = core.convert_to_tensor(lower, dtype)
            upper = core.convert_to_tensor(upper, dtype)
            one = core.convert_to_tensor(1, dtype)

            def step(i, val):
                return op("add", i, one), body_fun(i, val)

            _, val = while_loop(lambda i, _: op("less", i, upper), step, (lower, init_val))
            return val
    val = init_val
    for i in range(int(lower), int(upper)):
        val = body_fun(i, val)
    return val


def switch(index, branches, *operands):
    if branches and control_flow.traceable(index):
        # A compiled step is tracing: a graph cond over every branch (control_flow.py).
        return control_flow.cond(_selector(index, integer=True), list(branches), operands)
    index = int(convert_to_numpy(index))
    index = builtins.min(builtins.max(index, 0), len(branches) - 1)
    return branches[index](*operands)


def unstack(x, num=None, axis=0):
    x = core.convert_to_tensor(x)
    axis = canonicalize_axis(axis, x.ndim)
    if num is not None and num != x.shape[axis]:
        raise ValueError(
            f"unstack: num={num} does not match dimension {axis} of shape "
            f"{x.shape}"
        )
    idx = [builtins.slice(None)] * x.ndim
    out = []
    for i in range(x.shape[axis]):
        idx[axis] = i
        out.append(x[tuple(idx)])
    return out

