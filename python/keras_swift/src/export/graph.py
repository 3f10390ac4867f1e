"""What every export target shares: the trace of an inference function and the walk of
its engine graph.

``trace`` runs a function once on a sample batch while the engine records it
(``_C.trace_begin``/``trace_end``); ``GraphWalk`` reads the graph back with
``_C.graph_describe`` and visits its ops in order, replaying each (``_C.op``) for the
dtypes and shapes it had in the trace and tracking which values depend on the batch. A
target (ONNX, TensorFlow) subclasses ``GraphWalk`` with one lowering per engine op.

Batch size: the trace runs on ``TRACE_BATCH`` rows and the lowered graph takes any. The
ops whose attributes hold a traced shape get it back as a *symbolic shape*: a list of
ints in which ``BATCH`` stands for the run's batch size and ``-1`` for a size the run
infers. A ``reshape`` of a value computed from the inputs infers the first target dim
that ``TRACE_BATCH`` divides (einsum folds the batch into other dims), or takes dim 0
from the run's batch when the target already has a -1; a ``full`` whose dim 0 is
``TRACE_BATCH`` takes the run's batch; ``broadcast_to`` keeps the input's sizes; slices
that run to the end of an axis stay open-ended. A reshape target with a static size that
``TRACE_BATCH`` (13) divides before the dim holding the batch would be mistaken for it.

Other dynamic dimensions (``None`` in the signature past dim 0) are traced at
``TRACE_DYNAMIC``; the ops that follow them at run time are the elementwise ones, matmul,
convolution and pooling, reductions and concatenation. A reshape, ``full`` or recurrent
layer over such a dim keeps its traced size.
"""

import numpy as np

from keras.src import tree
from keras.src.backend import standardize_dtype

from keras_swift.src.core import convert_to_tensor
from keras_swift.src.engine import _C
from keras_swift.src.tensor import SwiftTensor

# Rows of the sample batch the trace runs on. Odd and unusual so that a static dimension
# of the model rarely equals it (such a dim in a reshape of a batch-dependent value would
# be taken for the batch).
TRACE_BATCH = 13
# The traced size of another dimension the signature leaves dynamic (None).
TRACE_DYNAMIC = 11
# In a symbolic shape: the run's batch size.
BATCH = None
# Engine ops that may carry a bias input and an `activation` attribute (an epilogue).
EPILOGUE_OPS = ("conv", "matmul")
# Graph steps that only mark values for gradients (a variable's assigned value becomes a
# leaf): nothing to compute in an exported graph, which takes no gradient.
_TAPE_STEPS = ("set_requires_grad", "tape_push", "tape_pop")


class Trace:
    """An inference function recorded as an engine graph.

    The graph's inputs are the values of ``variables`` (``state_inputs[i]`` is the graph
    input holding variable ``i``'s value; variables sharing one value share the input)
    and then the flattened arguments; its outputs are the function's results
    (``n_outputs``, packed as ``output_structure``), then the new values of the
    variables it assigned (their indices: ``assigned``). A variable not listed is a
    constant of the graph.
    """

    def __init__(self, graph, inputs, state_inputs, n_state, output_structure, n_outputs,
                 assigned):
        self.graph = graph
        self.inputs = inputs  # the graph inputs' traced values: the state's, then the sample
        self.sample = inputs[n_state:]
        self.state_inputs = state_inputs
        self.n_state = n_state
        self.output_structure = output_structure
        self.n_outputs = n_outputs
        self.assigned = assigned


def trace(fn, input_signature, variables=()):
    """Record ``fn(*args)`` for args built from ``input_signature`` (a list, one
    structure of specs per positional argument; specs need ``shape`` and ``dtype``).

    Variables ``fn`` assigns get their values back afterwards: exporting has no effect
    on the model.
    """
    flat_specs = tree.flatten(input_signature)
    sample = [_sample_input(spec) for spec in flat_specs]
    variables = list(variables)
    values = [v._value for v in variables]
    if any(t is None for t in values):
        raise ValueError("Export needs every variable of the model to hold a value.")
    state, state_inputs = [], []
    for t in values:
        index = next((j for j, s in enumerate(state) if s is t), None)
        if index is None:
            index = len(state)
            state.append(t)
        state_inputs.append(index)
    _C.trace_begin()
    try:
        for t in state + sample:
            _C.trace_input(t)
        args = tree.pack_sequence_as(list(input_signature), sample)
        result = fn(*args)
        leaves = tree.flatten(result)
        outputs = [convert_to_tensor(t) if not isinstance(t, SwiftTensor) else t for t in leaves]
        assigned = [i for i, v in enumerate(variables) if v._value is not values[i]]
        graph = _C.trace_end(outputs + [variables[i]._value for i in assigned])
    except BaseException:
        _C.trace_abort()
        _restore(variables, values)
        raise
    _restore(variables, values)
    structure = tree.map_structure(lambda _: 0, result)
    return Trace(graph, state + sample, state_inputs, len(state), structure, len(outputs), assigned)


def _unfused(nodes):
    """``nodes`` with each ``fused_elementwise`` node (FusedElementwise.swift: a chain of
    elementwise ops the engine runs block by block) written back as the ops it stands for,
    and each conv fused with its max pool (Conv.swift: ``max_pool_size``) as the conv, then
    the pool. Values that the fused node does not output get ids of their own (tuples, which
    no engine value id equals)."""
    for k, n in enumerate(nodes):
        if n["kind"] == "op" and n["op"] == "conv" and "max_pool_size" in n["attrs"]:
            attrs = dict(n["attrs"])
            pool = {"pool_size": attrs.pop("max_pool_size"), "padding": {"value": "valid"}}
            if "max_pool_strides" in attrs:
                pool["strides"] = attrs.pop("max_pool_strides")
            convolved = ("pooled", k)
            yield {**n, "attrs": attrs, "outputs": [convolved]}
            yield {"kind": "op", "op": "max_pool", "attrs": pool, "inputs": [convolved], "outputs": n["outputs"]}
            continue
        if n["kind"] != "op" or n["op"] != "fused_elementwise":
            yield n
            continue
        attrs = {name: a["value"] for name, a in n["attrs"].items()}
        ops = attrs["ops"].split(",")
        operands, ins = attrs["operands"], n["inputs"]
        ids = [("fused", k, j) for j in range(len(ops))]
        for j, v in zip(attrs["results"], n["outputs"]):
            ids[j] = v

        def ref(r):
            return ins[r] if r < len(ins) else ids[r - len(ins)]

        for j, op in enumerate(ops):
            a, b = operands[2 * j], operands[2 * j + 1]
            yield {"kind": "op", "op": op, "attrs": {},
                   "inputs": [ref(a)] + ([ref(b)] if b >= 0 else []), "outputs": [ids[j]]}


def _restore(variables, values):
    for v, t in zip(variables, values):
        if v._value is not t:
            v._take_value(t)


def _sample_input(spec):
    # Dim 0 is the batch, symbolic in the exported model, whatever size the signature gives.
    shape = [TRACE_BATCH if i == 0 else (TRACE_DYNAMIC if d is None else d)
             for i, d in enumerate(spec.shape)]
    dtype = getattr(spec, "dtype", None) or "float32"
    dtype = standardize_dtype(getattr(dtype, "name", dtype))
    if "int" in dtype or dtype == "bool":
        data = np.zeros(shape, dtype=dtype)
    else:
        data = np.random.default_rng(0).uniform(-1, 1, shape).astype(dtype)
    return convert_to_tensor(data, dtype=dtype)


class GraphWalk:
    """A pass over a traced graph in its order, emitting one target's ops.

    A subclass sets ``TARGET`` (its name in errors), binds a symbol (whatever the target
    names a value by) to every graph input and constant with ``bind``, and returns a
    lowering for an engine op from ``lowering(op)``: a callable ``(names, ins, outs,
    attrs) -> symbol or list of symbols``, where ``names`` are the inputs' symbols and
    ``ins``/``outs`` the engine value ids (for ``dtype``/``shape``). A conv or matmul the
    engine fused with its bias and activation (Epilogue.swift) is lowered as the bare op,
    then ``add_bias`` and ``activate``; a ``fused_elementwise`` chain as its ops, one by one
    (``_unfused``).
    """

    TARGET = None

    def __init__(self, graph, batch_inputs):
        """``batch_inputs``: the positions of the graph inputs that hold batch rows."""
        self.graph = graph
        self.desc = _C.graph_describe(graph)
        self.name = {}  # engine value id -> the target's symbol
        self.value = {}  # engine value id -> the value the trace computed
        self.batch = set()  # value ids computed from the batch inputs
        for i, entry in enumerate(self.desc["inputs"]):
            if i in batch_inputs:
                self.batch.add(entry["value"])

    def bind(self, value_id, symbol, traced):
        self.name[value_id] = symbol
        self.value[value_id] = traced

    def dtype(self, v):
        return np.dtype(self.value[v].dtype)

    def shape(self, v):
        return list(self.value[v].shape)

    # -- the walk -------------------------------------------------------------------

    def walk(self):
        schemas = _schema_defaults()
        for n in _unfused(self.desc["nodes"]):
            if n["kind"] in _TAPE_STEPS:
                continue
            if n["kind"] != "op":
                raise NotImplementedError(
                    f"{self.TARGET} export: the traced inference graph holds a {n['kind']} "
                    f"step, which has no {self.TARGET} form."
                )
            op = n["op"]
            given = {k: a["value"] for k, a in n["attrs"].items()}
            attrs = dict(schemas.get(op, {}))
            attrs.update(given)
            ins, outs = n["inputs"], n["outputs"]
            # Replaying the op gives each output's dtype and shape as traced.
            results = _C.op(op, *[self.value[v] for v in ins], **given)
            if not isinstance(results, tuple):
                results = (results,)
            for v, r in zip(outs, results):
                self.value[v] = r
            if any(v in self.batch for v in ins):
                self.batch.update(outs)
            lower = self.lowering(op)
            if lower is None:
                raise NotImplementedError(
                    f"{self.TARGET} export on the swift backend has no lowering for the "
                    f"engine op '{op}' (used by this model)."
                )
            names = [self.name[v] for v in ins]
            bias = None
            activation = attrs.pop("activation", "none") if op in EPILOGUE_OPS else "none"
            if op in EPILOGUE_OPS and len(ins) > 2:
                bias, names, ins = (names[2], ins[2]), names[:2], ins[:2]
            result = lower(names, ins, outs, attrs)
            if bias is not None:
                result = self.add_bias(result, bias[0], bias[1], outs[0])
            if activation != "none":
                result = self.activate(activation, result)
            result = result if isinstance(result, list) else [result]
            for v, r in zip(outs, result):
                self.name[v] = r
        return [self.name[entry["value"]] for entry in self.desc["outputs"]]

    def lowering(self, op):
        raise NotImplementedError

    def add_bias(self, result, bias, bias_id, out_id):
        raise NotImplementedError

    def activate(self, activation, result):
        raise NotImplementedError

    # -- symbolic shapes (see the module docstring) ---------------------------------

    def reshape_target(self, shape, v):
        """The target of a reshape of value ``v`` to the traced ``shape``."""
        shape = list(shape)
        if v in self.batch and -1 not in shape:
            # The batch may be folded into any dim (einsum's reshapes): let the run infer
            # the first dim the traced batch divides.
            for d, n in enumerate(shape):
                if n and n % TRACE_BATCH == 0:
                    return shape[:d] + [-1] + shape[d + 1:]
        return self.batch_shape(shape, v in self.batch)

    def batch_shape(self, shape, dependent):
        """``shape`` with dim 0 the run's batch where it stands for it."""
        shape = list(shape)
        if dependent and shape and shape[0] == TRACE_BATCH:
            return [BATCH] + shape[1:]
        return shape

    def full_target(self, shape, outs):
        """The shape of a ``full``; its output follows the batch when dim 0 is it."""
        dependent = bool(self.batch) and bool(shape) and shape[0] == TRACE_BATCH
        if dependent:
            self.batch.update(outs)
        return self.batch_shape(shape, dependent)

    def broadcast_target(self, shape, v):
        """A ``broadcast_to`` target where 1 keeps ``v``'s size, batch-sized or not."""
        in_shape = self.shape(v)
        lead = len(shape) - len(in_shape)
        return [1 if d >= lead and in_shape[d - lead] == n else n for d, n in enumerate(shape)]

    def slice_ends(self, v, begin, end, strides):
        """A strided slice's ends, None where it runs to the end (or start) of the axis
        whatever the axis's size in the run."""
        shape = self.shape(v)
        ends = []
        for d, (b, e, s) in enumerate(zip(begin, end, strides)):
            if (s > 0 and e >= shape[d]) or (s < 0 and e < 0):
                e = None
            ends.append(e)
        return ends


def listify(v):
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]


def per_dim(v, n):
    v = listify(v)
    return v * n if len(v) == 1 else v


_DEFAULTS = None


def _schema_defaults():
    """Per op, its attributes' defaults from the engine's schema."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = {
            name: {a["name"]: a["default"] for a in schema["attrs"] if "default" in a}
            for name, schema in _C.op_schemas().items()
        }
    return _DEFAULTS
