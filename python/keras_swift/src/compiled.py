"""Compiled steps: a step function traced into an engine graph and replayed in one C call.

The first call for an input signature (the structure, dtypes and shapes of the batch and
of the state variables) runs the step eagerly while the engine records every op call and
tape step into a graph (``_C.trace_begin``/``trace_end``). The inputs of the graph are the
state variables' values and the batch; its outputs are the step's results and the new
values of every variable the step assigned. Later calls with the same signature run the
graph (``_C.graph_run``, without the GIL) and assign those values.

A batch holding sparse tensors runs eagerly. As with ``jax.jit``, Python values are
fixed at trace time: a Python number the step turns
into a tensor is a constant of the graph. What a graph cannot replay (a tensor's values
read on the host, a custom gradient, a result that is not a tensor) makes that step run
eagerly from then on, with one warning naming the cause; it is never replayed wrong.
"""

import warnings

from keras.src import tree

from keras_swift.src.core import convert_to_tensor
from keras_swift.src.engine import _C
from keras_swift.src.sparse import SparseTensor
from keras_swift.src.tensor import SwiftTensor


def _signature(leaves):
    return tuple(
        (t.dtype, t.shape) if isinstance(t, SwiftTensor) else ("py", type(t).__name__, repr(t))
        for t in leaves
    )


class CompiledStep:
    """``fn(data)`` traced once per signature and replayed as an engine graph.

    ``variables`` returns the Keras Variables the step may read or assign (the model's,
    the optimizer's, the metrics'): their values are graph inputs, so a replay sees
    their current values, and those the step assigns are graph outputs.
    """

    def __init__(self, fn, variables, name):
        self.fn = fn
        self.variables = variables
        self.name = name
        self.graphs = {}
        # Why the step runs eagerly (None while it compiles).
        self.eager_reason = None

    def __call__(self, data):
        if self.eager_reason is not None or _C.trace_active():
            # A step called from within another trace is recorded there as it runs.
            return self.fn(data)
        prepared = self._prepare(data)
        if prepared is None:
            return self.fn(data)
        sig, batch, variables, values = prepared
        entry = self.graphs.get(sig)
        if entry is None:
            return self._trace(sig, data, batch, variables, values)
        graph, out_struct, n_out, assigned, donatable = entry
        inputs = _graph_inputs(values, batch)
        if donatable:
            del prepared, values
            outs = _run_donating(graph, inputs, variables, donatable)
        else:
            outs = _C.graph_run(graph, inputs)
        # The graph ends each assigned value as _direct_assign would (detached, flagged).
        for i, t in zip(assigned, outs[n_out:]):
            variables[i]._take_value(t)
        return tree.pack_sequence_as(out_struct, list(outs[:n_out]))

    def lookup(self, data):
        """``(graph, inputs)``: the graph traced for ``data``'s signature and what it takes
        for that batch (the state's current values, then the batch's tensors, each tensor
        once); None when no graph was traced for it or the batch runs eagerly. The graph's
        outputs are the step's results (flattened), then the new values of the variables
        it assigns. For running a step outside Python: ``graph_save`` the graph and feed
        it these inputs from Swift or C."""
        prepared = self._prepare(data)
        if prepared is None or prepared[0] not in self.graphs:
            return None
        sig, batch, _, values = prepared
        return self.graphs[sig][0], _graph_inputs(values, batch)

    def _prepare(self, data):
        """``(signature, batch leaves, variables, their values)``, or None when ``data``
        must run eagerly."""
        flat = tree.flatten_with_path(data)
        paths, leaves = tuple(p for p, _ in flat), [x for _, x in flat]
        if any(isinstance(x, SparseTensor) for x in leaves):
            # A sparse batch changes its number of entries, and so its signature, from
            # batch to batch, and densifying it would lose its row-sparse gradients.
            return None
        batch = [convert_to_tensor(x) if _is_array(x) else x for x in leaves]
        variables = list(self.variables())
        # The stored tensors, not `.value`, which may cast under autocast: a cast inside
        # the step is then recorded from the input.
        values = [v._value for v in variables]
        if any(t is None for t in values):
            return None
        # Which leaves are the same tensor is part of the signature too: the graph takes
        # each tensor once.
        sig = (paths, _signature(batch), _signature(values), _aliasing(values + batch))
        return sig, batch, variables, values

    def _trace(self, sig, data, batch, variables, values):
        _C.trace_begin()
        try:
            for t in _graph_inputs(values, batch):
                _C.trace_input(t)
            result = self.fn(tree.pack_sequence_as(data, batch))
            if len(list(self.variables())) != len(variables):
                # The step built layers (created variables): trace again on the next call,
                # when the state is complete.
                _C.trace_abort()
                return result
            out_leaves = tree.flatten(result)
            assigned = [i for i, v in enumerate(variables) if v._value is not values[i]]
            # A value the graph also returns (a result, or another variable's new value)
            # is never donated.
            returned = {id(t) for t in out_leaves + [variables[i]._value for i in assigned]}
            donatable = [i for i in assigned if id(values[i]) not in returned]
            if not all(isinstance(t, SwiftTensor) for t in out_leaves):
                _C.trace_abort()
                self._give_up("the step returns a value that is not a tensor")
                return result
            try:
                graph = _C.trace_end(out_leaves + [variables[i]._value for i in assigned])
            except NotImplementedError as e:
                self._give_up(str(e))
                return result
        except BaseException:
            _C.trace_abort()
            raise
        self.graphs[sig] = (graph, tree.map_structure(lambda _: 0, result), len(out_leaves), assigned, donatable)
        return result

    def _give_up(self, reason):
        self.eager_reason = reason
        self.graphs.clear()
        warnings.warn(
            f"keras_swift: {self.name} runs eagerly instead of compiled: {reason}. "
            "Pass jit_compile=False to compile() to silence this.",
            stacklevel=3,
        )


def _run_donating(graph, inputs, variables, donatable):
    """Runs ``graph`` on ``inputs`` (a list), donating the old values of the variables
    in ``donatable`` (indices into ``variables``), which the step replaces: the engine
    may then write their new values over the old buffers. A value is handed over only
    where the inputs list holds its only reference once the variable lets go of it (a
    value the caller kept, ``v.value`` in a list, is only read). On failure the
    variables whose values were not handed over get them back; a donated value is gone."""
    position = {id(t): k for k, t in enumerate(inputs)}
    donate = [False] * len(inputs)
    slot = {}
    for i in donatable:
        slot[i] = position[id(variables[i]._value)]
        donate[slot[i]] = True
        variables[i]._value = None
    try:
        return _C.graph_run(graph, inputs, donate)
    except BaseException as e:
        lost = 0
        for i, k in slot.items():
            if inputs[k] is None:
                lost += 1
            else:
                variables[i]._value = inputs[k]
        if lost:
            e.add_note(f"keras_swift: {lost} variable(s) had handed their values to the failed step and hold none now")
        raise


def _is_array(x):
    return x is not None and not isinstance(x, (str, bytes, bool, int, float))


def _aliasing(leaves):
    first = {}
    return tuple(first.setdefault(id(t), i) for i, t in enumerate(leaves))


def _graph_inputs(values, batch):
    return _unique(values + [t for t in batch if isinstance(t, SwiftTensor)])


def _unique(tensors):
    seen, out = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
