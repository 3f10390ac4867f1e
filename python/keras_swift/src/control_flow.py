"""``cond``, ``switch`` and ``while_loop`` on a tensor predicate while a compiled step traces.

Outside a trace they are plain Python (``ops/core.py``). While a trace records, a predicate
read on the host would make the step unreplayable, so they become engine control flow
instead (``_C.trace_cond_*``, ``_C.trace_while_*``; docs/graph-format.md, "Control flow"):

- ``cond``/``switch``: every branch runs (for real, each recorded into its own block); the
  engine picks the taken one's results. Variables a branch assigns are results too: each
  assignment is logged (``Variable._direct_assign`` writes to the innermost log), the
  variables are set back before the next branch runs, a branch that did not assign one
  yields its old value, and after the cond each is assigned the cond's output.
- ``while_loop``: the condition and body run once, recorded; the engine runs the other
  iterations from the recorded blocks. The loop carries the loop variables and every
  variable the body assigns (found on a first pass, which is then dropped and recorded
  again with them carried).

What cannot be recorded (branches returning different structures, dtypes or shapes, an
exception in a branch that is not taken) makes the step unreplayable: it then runs
eagerly, with the one warning ``CompiledStep`` gives, never wrongly. As with
``jax.jit``, Python side effects of every branch happen once, at trace time.
"""

import math

from keras.src import tree
from keras.src.backend.common.variables import Variable as KerasVariable
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.engine import _C

# Innermost last: {id(variable): (variable, its value before the block)} for the variables
# assigned while a branch or loop body is recorded.
ASSIGN_LOGS = []


def traceable(x):
    """Whether ``x`` is a predicate or index the trace can branch on: a one-value tensor."""
    if isinstance(x, KerasVariable):
        x = x.value
    return isinstance(x, _C.Tensor) and math.prod(x.shape) == 1 and _C.trace_active()


def cond(selector, branches, operands=()):
    """Runs ``branches[selector]`` (a one-value bool or integer tensor, clamped to the
    branches), recording every branch."""
    taken, recording = _C.trace_cond_begin(selector, len(branches))
    if not recording:
        return branches[taken](*operands)
    log = {}
    ASSIGN_LOGS.append(log)
    outs, ends = [], []
    try:
        for k, fn in enumerate(branches):
            if k:
                _C.trace_cond_next()
                _restore(log)
            try:
                out = fn(*operands)
            except Exception as e:
                if k == taken:
                    raise
                _C.trace_unreplayable(
                    f"a branch of cond/switch that the traced step did not take raised "
                    f"{type(e).__name__}: {e}"
                )
                out = None
            outs.append(out)
            ends.append({key: var._value for key, (var, _) in log.items()})
    except BaseException:
        _C.trace_unreplayable("a cond/switch branch raised an exception while tracing")
        _C.trace_block_abort()
        ASSIGN_LOGS.pop()
        raise
    ASSIGN_LOGS.pop()
    variables = [var for var, _ in log.values()]
    values = [[end.get(id(var), old) for var, old in log.values()] for end in ends]
    # Set back before the cond, so that an enclosing log sees the values it had.
    _restore(log)
    columns = _result_columns(outs)
    if columns is None:
        _C.trace_unreplayable(
            "the branches of a cond/switch return different structures or values "
            "that are not tensors of one dtype and shape"
        )
        _C.trace_cond_end([], len(branches))
        return _take(outs[taken], variables, values[taken])
    kinds, tensors = columns
    flat = [t for k in range(len(branches)) for t in [c[k] for c in tensors] + values[k]]
    results = _C.trace_cond_end(flat, len(branches))
    if results is None:
        return _take(outs[taken], variables, values[taken])
    n = len(tensors)
    for var, t in zip(variables, results[n:]):
        var._direct_assign(t)
    it = iter(results[:n])
    leaves = [next(it) if kind == "tensor" else kind[1] for kind in kinds]
    return tree.pack_sequence_as(outs[taken], leaves)


def while_loop(cond_fn, body_fn, loop_vars, maximum_iterations, eager_loop):
    """Records a loop over ``loop_vars`` (a tuple of tensors, maybe nested). ``eager_loop
    (loop_vars, done)`` runs the rest of it in Python (``done`` iterations ran) where it
    cannot be recorded."""
    flat = tree.flatten(loop_vars)
    n = len(flat)
    carried = []  # variables the body assigns, carried through the loop
    while True:
        before = [var._value for var in carried]
        params = _C.trace_while_begin(flat + before)
        if params is None:
            return eager_loop(loop_vars, 0)
        for var, p in zip(carried, params[n:]):
            var._value = p
            if var.trainable:
                p.requires_grad = True
        state = tree.pack_sequence_as(loop_vars, list(params[:n]))
        log = {}
        ASSIGN_LOGS.append(log)
        try:
            pred = cond_fn(*state)
            if isinstance(pred, KerasVariable):
                pred = pred.value
            if not isinstance(pred, _C.Tensor):
                # A condition decided in Python, not by the loop's values: a Python loop,
                # recorded as it runs.
                _C.trace_block_abort()
                ASSIGN_LOGS.pop()
                _set_back(carried, before, log)
                return eager_loop(loop_vars, 0)
            if log:
                _C.trace_unreplayable("a while_loop condition assigns a variable")
            holds = _C.trace_while_body(pred)
            try:
                new = body_fn(*state)
            except Exception as e:
                if holds:
                    raise
                _C.trace_unreplayable(
                    f"a while_loop body raised {type(e).__name__} where the traced step did "
                    f"not run it: {e}"
                )
                new = None
            more = [var for var, _ in log.values() if not any(var is c for c in carried)]
            if more and new is not None:
                # Record again, carrying them.
                _C.trace_block_abort()
                ASSIGN_LOGS.pop()
                _set_back(carried, before, log)
                carried += more
                continue
        except BaseException:
            _C.trace_unreplayable("a while_loop raised an exception while tracing")
            _C.trace_block_abort()
            ASSIGN_LOGS.pop()
            _set_back(carried, before, log)
            raise
        ASSIGN_LOGS.pop()
        break
    new_flat = _loop_state(new, loop_vars)
    if new_flat is None:
        if new is not None:
            _C.trace_unreplayable(
                "a while_loop body returns another structure than the loop carries, or values "
                "that are not tensors"
            )
        results = _C.trace_while_end([], None)
    else:
        results = _C.trace_while_end(new_flat + [var._value for var in carried], maximum_iterations)
    if results is None and holds and (maximum_iterations is None or maximum_iterations > 0):
        # Not replayable any more: finish eagerly from the first iteration's state; the
        # variables keep its values, and an enclosing log learns the ones they had.
        if ASSIGN_LOGS:
            for var, old in zip(carried, before):
                ASSIGN_LOGS[-1].setdefault(id(var), (var, old))
            for key, entry in log.items():
                ASSIGN_LOGS[-1].setdefault(key, entry)
        return eager_loop(tuple(new) if isinstance(new, (list, tuple)) else (new,), 1)
    _set_back(carried, before, log)
    if results is None:
        return loop_vars
    for var, t in zip(carried, results[n:]):
        var._direct_assign(t)
    return tree.pack_sequence_as(loop_vars, list(results[:n]))


def _loop_state(new, loop_vars):
    """The body's result as a flat list of tensors matching ``loop_vars``, or None."""
    if new is None:
        return None
    new = tuple(new) if isinstance(new, (list, tuple)) else (new,)
    try:
        tree.assert_same_structure(new, loop_vars)
        return [convert_to_tensor(x) for x in tree.flatten(new)]
    except Exception:
        return None


def _restore(log):
    for var, old in log.values():
        var._value = old


def _set_back(carried, before, log):
    """Variables as they were before the loop: those it carried and those its body assigned."""
    _restore(log)
    for var, old in zip(carried, before):
        var._value = old


def _take(out, variables, values):
    """The taken branch's results, as an eager cond gives them."""
    for var, value in zip(variables, values):
        var._direct_assign(value)
    return out


def _result_columns(outs):
    """Per leaf of the branches' results: ``("static", value)`` where every branch gives
    the same Python value (or None), else ``"tensor"`` with the branches' tensors in
    ``tensors``. None when they cannot be one cond's outputs."""
    try:
        for out in outs[1:]:
            tree.assert_same_structure(outs[0], out)
    except Exception:
        return None
    kinds, tensors = [], []
    for column in zip(*[tree.flatten(out) for out in outs]):
        if all(_static(x) and type(x) is type(column[0]) and x == column[0] for x in column):
            kinds.append(("static", column[0]))
            continue
        if any(x is None for x in column):
            return None
        try:
            tensors.append([convert_to_tensor(x) for x in column])
        except Exception:
            return None
        kinds.append("tensor")
    return kinds, tensors


def _static(x):
    return x is None or isinstance(x, (bool, int, float, str))
