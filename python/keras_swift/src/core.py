"""Core backend functions: engine calls, conversion, dtypes, control flow.

Everything that computes goes through ``op`` (one engine op by name). numpy is
used only at the boundary: turning user data into engine tensors and engine
tensors into arrays.
"""

import builtins
import contextlib
import functools
import warnings

import numpy as np

from keras.src import tree
from keras.src.backend.common import standardize_dtype
from keras.src.backend.common.backend_utils import canonicalize_axis
from keras.src.backend.common.dtypes import result_type as _result_type
from keras.src.backend.common.keras_tensor import KerasTensor
from keras.src.backend.common.stateless_scope import StatelessScope
from keras.src.backend.common.symbolic_scope import SymbolicScope
from keras.src.backend.common.variables import Variable as KerasVariable
from keras.src.backend.config import floatx
from keras_swift.src import IS_THREAD_SAFE  # noqa: F401
from keras_swift.src import SUPPORTS_COMPLEX_DTYPES  # noqa: F401
from keras_swift.src import SUPPORTS_RAGGED_TENSORS  # noqa: F401
from keras_swift.src import SUPPORTS_SPARSE_TENSORS  # noqa: F401
from keras_swift.src import control_flow
from keras_swift.src.dtypes import BITS_DTYPES
from keras_swift.src.dtypes import NUMPY_DTYPES
from keras_swift.src.tensor import SparseTensor
from keras_swift.src.tensor import SwiftTensor  # noqa: F401
from keras_swift.src.tensor import _C
from keras_swift.src.tensor import numpy_view

ENGINE_DTYPES = frozenset(NUMPY_DTYPES)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------------------
# Engine calls
# ---------------------------------------------------------------------------


# op(name, *inputs, **attrs) runs one engine op and returns its first output.
# It is the C function itself: a Python wrapper building the inputs tuple and
# attrs dict cost more than a small op.
op = _C.call


def engine_op(name, *, constant_time=False, **attrs):
    """Binds a backend function whose body is ``op(name, *inputs, **attrs)``
    once its inputs are tensors to that engine op, called from C.

    ``attrs`` maps each parameter after the tensor inputs to its engine
    attribute; the function's own parameters give the order. A call whose
    inputs are already engine tensors skips the Python frame; every other
    call (conversion, sparse input, bad arguments) runs the function itself.
    A ``constant_time`` op (its output is a description, not computed) keeps
    the GIL, whose release would cost more than the op.
    """

    def bind(fn):
        code = fn.__code__
        params = code.co_varnames[: code.co_argcount]
        n_inputs = len(params) - len(attrs)
        bound = _C.Op(
            fn, name, params, tuple(attrs[p] for p in params[n_inputs:]),
            constant_time=constant_time,
        )
        return functools.update_wrapper(bound, fn)

    return bind


def op_multi(name, inputs, attrs=None):
    """Run one engine op and return all its outputs (a tuple)."""
    return _C.op(name, inputs, attrs)


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


# ---------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------


def is_tensor(x):
    return isinstance(x, _C.Tensor)


def from_numpy(a, dtype):
    """Copy a numpy array (already of ``dtype``'s numpy type) into the engine."""
    if not a.flags.c_contiguous:  # (np.ascontiguousarray would make 0-d 1-d)
        a = a.copy(order="C")
    if dtype in BITS_DTYPES:
        a = a.view(BITS_DTYPES[dtype])
    return _C.from_buffer(a, dtype)


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
    if isinstance(x, SparseTensor):
        return _sparse().convert(x, dtype, bool(sparse))
    if isinstance(x, KerasTensor):
        raise ValueError(
            "A KerasTensor is symbolic: it's a placeholder for a shape and a "
            "dtype. It doesn't have any actual numerical value. You cannot "
            f"convert it to a swift tensor. Received: x={x}"
        )
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
    if isinstance(x, SparseTensor):
        return np.array(numpy_view(x.todense()))
    if isinstance(x, (list, tuple)):
        return np.array([convert_to_numpy(e) for e in x])
    return np.array(x)


def _sparse():
    from keras_swift.src import sparse

    return sparse


def shape(x):
    return tuple(x.shape)


def cast(x, dtype):
    if isinstance(x, _C.Tensor) and x.dtype == dtype:
        return x  # the common no-op, before standardize_dtype's cost
    if isinstance(x, KerasVariable):
        x = x.value
    if isinstance(x, SparseTensor):  # stays sparse, as on jax and tensorflow
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
                if is_tensor(x1) or isinstance(x1, SparseTensor):
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
            if is_tensor(x):
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


def _knp():
    from keras_swift.src.ops import numpy as knp

    return knp


def _selector(x, integer):
    """A traced cond's selector: ``x`` as bool (or, ``integer``, as an integer index)."""
    x = convert_to_tensor(x)
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
    knp = _knp()
    if not isinstance(elements, (list, tuple)):
        elements = convert_to_tensor(elements)
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
        xs_flat = [convert_to_tensor(elem) for elem in tree.flatten(xs)]
        n = int(length) if length is not None else xs_flat[0].shape[0]

    init_flat = [convert_to_tensor(i) for i in tree.flatten(init)]
    carry = pack_output(init_flat)
    knp = _knp()
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
    knp = _knp()
    elems_flat = [convert_to_tensor(e) for e in tree.flatten(elems)]
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
    loop_vars = tree.map_structure(convert_to_tensor, loop_vars)

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
        isinstance(lower, (SwiftTensor, KerasVariable)) or isinstance(upper, (SwiftTensor, KerasVariable))
    ):
        # Tensor bounds in a trace: a graph loop rather than reading them on the host.
        ref = upper if isinstance(upper, (SwiftTensor, KerasVariable)) else lower
        dtype = standardize_dtype(ref.dtype)
        if "int" in dtype:
            lower = convert_to_tensor(lower, dtype)
            upper = convert_to_tensor(upper, dtype)
            one = convert_to_tensor(1, dtype)

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
    x = convert_to_tensor(x)
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
            i for i, a in enumerate(args) if isinstance(a, (SwiftTensor, KerasVariable))
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
