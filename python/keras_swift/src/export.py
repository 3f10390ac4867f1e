"""Model export for the swift backend.

ONNX (``model.export(path, format="onnx")``; ``keras_swift_hook`` routes Keras's
``export_onnx`` here): the model's inference call ``model(inputs, training=False)`` is
traced into an engine graph on a sample batch, the graph is read back with
``_C.graph_describe`` and every engine op is lowered to ONNX nodes with the ``onnx``
helper API. Variables are not graph inputs while tracing, so the engine records them as
constants; they become initializers. The default opset is ``DEFAULT_OPSET`` (18, the
newest whose ops these lowerings use; from 18 the ``Reduce*`` ops take their axes as an
input, before it an attribute); ``opset_version`` may ask for ``MIN_OPSET`` (13) or newer.

Batch size: dim 0 of every input and output is the symbolic ``"batch"``. The trace runs
on ``TRACE_BATCH`` rows. A ``reshape`` of a value computed from the inputs lets the run
infer the first target dim that ``TRACE_BATCH`` divides (einsum folds the batch into
other dims), or takes dim 0 from the run's batch when the target already has a -1; a
``full`` whose dim 0 is ``TRACE_BATCH`` takes the run's batch; ``broadcast_to`` keeps
the input's sizes; slices that run to the end of an axis stay open-ended. A reshape
target with a static size that ``TRACE_BATCH`` (13) divides before the dim holding the
batch would be mistaken for it.

Other dynamic dimensions (``None`` in the signature past dim 0) are traced at
``TRACE_DYNAMIC`` and named in the ONNX inputs; the ops that follow them at run time are
the elementwise ones, matmul, convolution and pooling, reductions and concatenation (as
in convnets with global pooling and dense layers over sequences). A reshape, ``full`` or
recurrent layer over such a dim keeps its traced size, and ONNX Runtime rejects other
sizes there.

An op with no lowering raises ``NotImplementedError`` naming it.

SavedModel export is not available: Keras's ``export_saved_model`` converts the model
through TensorFlow, JAX or PyTorch tracing.
"""

import math

import numpy as np

from keras.src import tree
from keras.src.backend import standardize_dtype

from keras_swift.src.core import convert_to_tensor
from keras_swift.src.engine import _C

DEFAULT_OPSET = 18
MIN_OPSET = 13
# Rows of the sample batch the trace runs on. Odd and unusual so that a static dimension
# of the model rarely equals it (such a dim in a reshape of a batch-dependent value would
# be taken for the batch).
TRACE_BATCH = 13
# The traced size of another dimension the signature leaves dynamic (None).
TRACE_DYNAMIC = 11

_UNSUPPORTED = (
    "`export_saved_model` only currently supports the tensorflow, jax and torch "
    "backends. The swift backend cannot export a SavedModel: save the model "
    "with `model.save(...)` (.keras) and export it from one of those backends."
)


class SavedModelExportArchive:
    def track(self, resource):
        raise NotImplementedError(_UNSUPPORTED)

    def add_endpoint(self, name, fn, input_signature=None, **kwargs):
        raise NotImplementedError(_UNSUPPORTED)

    def track_and_add_endpoint(self, name, resource, input_signature, **kwargs):
        raise NotImplementedError(_UNSUPPORTED)


def export_onnx(model, filepath, input_signature, opset_version=None):
    """Write ``model``'s inference graph to ``filepath`` as ONNX.

    ``input_signature`` is Keras's (``export_utils.get_input_signature``): a list of
    ``InputSpec``s (or of one nested structure of them), batch dims ``None``.
    """
    try:
        import onnx
    except ImportError as e:
        raise ImportError(
            "Exporting to ONNX on the swift backend needs the `onnx` package: "
            "`pip install onnx` (and `onnxruntime` to run the result)."
        ) from e
    opset = DEFAULT_OPSET if opset_version is None else int(opset_version)
    if opset < MIN_OPSET:
        raise ValueError(f"The swift backend exports ONNX opset {MIN_OPSET} or newer, got {opset}.")

    flat_specs = tree.flatten(input_signature)
    names = _input_names(flat_specs)
    sample = [_sample_input(spec) for spec in flat_specs]

    _C.trace_begin()
    try:
        for t in sample:
            _C.trace_input(t)
        args = tree.pack_sequence_as(input_signature, sample)
        result = model(args[0], training=False) if len(args) == 1 else model(*args, training=False)
        outputs = [convert_to_tensor(t) for t in tree.flatten(result)]
        graph = _C.trace_end(outputs)
    except BaseException:
        _C.trace_abort()
        raise
    model_proto = _Lowering(onnx, graph, sample, names, flat_specs).build(opset)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(filepath))


def _input_names(specs):
    names = [getattr(s, "name", None) or f"input_{i}" for i, s in enumerate(specs)]
    if len(set(names)) != len(names):
        names = [f"input_{i}" for i in range(len(specs))]
    return names


def _sample_input(spec):
    # Dim 0 is the batch, symbolic in the ONNX model, whatever size the signature gives.
    shape = [TRACE_BATCH if i == 0 else (TRACE_DYNAMIC if d is None else d)
             for i, d in enumerate(spec.shape)]
    dtype = standardize_dtype(getattr(spec, "dtype", None) or "float32")
    if "int" in dtype:
        data = np.zeros(shape, dtype=dtype)
    else:
        data = np.random.default_rng(0).uniform(-1, 1, shape).astype(dtype)
    return convert_to_tensor(data, dtype=dtype)


# Engine op -> ONNX op for those that map one to one with no attributes.
_SAME = {
    "add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow",
    "maximum": "Max", "minimum": "Min", "matmul": "MatMul",
    "negative": "Neg", "abs": "Abs", "sign": "Sign", "relu": "Relu", "exp": "Exp",
    "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf",
    "floor": "Floor", "ceil": "Ceil", "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos",
    "softplus": "Softplus", "softsign": "Softsign", "round": "Round",
}
# Engine ops that may carry a bias input and an `activation` attribute (an epilogue).
_EPILOGUE_OPS = ("conv", "matmul")
_COMPARE = {
    "equal": "Equal", "less": "Less", "less_equal": "LessOrEqual",
    "greater": "Greater", "greater_equal": "GreaterOrEqual",
}
_LOGICAL = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}
_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
           "prod": "ReduceProd"}
# Keras's SELU constants (ONNX's defaults are rounded).
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


class _Lowering:
    def __init__(self, onnx, graph, sample, names, specs):
        self.onnx = onnx
        self.helper = onnx.helper
        self.desc = _C.graph_describe(graph)
        self.graph = graph
        self.input_names = names
        self.specs = specs
        # Whether the signature leaves a dimension other than the batch dynamic.
        self.dynamic = any(d is None for spec in specs for d in list(spec.shape)[1:])
        self.nodes = []
        self.initializers = []
        self.name = {}  # engine value id -> ONNX tensor name
        self.value = {}  # engine value id -> the value the trace computed (for specs)
        self.batch = set()  # value ids computed from the inputs
        self.counter = 0
        for i, entry in enumerate(self.desc["inputs"]):
            self.name[entry["value"]] = names[i]
            self.value[entry["value"]] = sample[i]
            self.batch.add(entry["value"])
        for i, entry in enumerate(self.desc["constants"]):
            t = _C.graph_constant(graph, i)
            self.value[entry["value"]] = t
            self.name[entry["value"]] = self.initializer(np.asarray(t), "const")
        self._batch_size = None

    # -- building blocks ------------------------------------------------------------

    def fresh(self, hint):
        self.counter += 1
        return f"{hint}_{self.counter}"

    def initializer(self, array, hint="c"):
        name = self.fresh(hint)
        array = np.asarray(array)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, values):
        return self.initializer(np.asarray(values, dtype=np.int64), "ints")

    def scalar(self, x, dtype):
        return self.initializer(np.asarray(x, dtype=dtype), "scalar")

    def node(self, op, inputs, n_out=1, outputs=None, **attrs):
        outs = outputs or [self.fresh(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op, inputs, outs, name=self.fresh("n"), **attrs))
        return outs[0] if n_out == 1 and outputs is None else outs

    def dtype(self, v):
        return np.dtype(self.value[v].dtype)

    def shape(self, v):
        return list(self.value[v].shape)

    def onnx_type(self, dtype):
        return self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def cast(self, name, from_dtype, to_dtype):
        if np.dtype(from_dtype) == np.dtype(to_dtype):
            return name
        return self.node("Cast", [name], to=self.onnx_type(to_dtype))

    def batch_size(self):
        """A 1-element int64 tensor: the batch size of the run."""
        if self._batch_size is None:
            shape = self.node("Shape", [self.input_names[0]])
            self._batch_size = self.node("Slice", [shape, self.ints([0]), self.ints([1])])
        return self._batch_size

    def dynamic_shape(self, shape, dependent):
        """``shape`` as an int64 tensor, dim 0 the run's batch size where it stands for it."""
        if dependent and shape and shape[0] == TRACE_BATCH:
            if len(shape) == 1:
                return self.batch_size()
            return self.node("Concat", [self.batch_size(), self.ints(shape[1:])], axis=0)
        return self.ints(shape)

    def nchw(self, name, rank):
        return self.node("Transpose", [name], perm=[0, rank - 1] + list(range(1, rank - 1)))

    def nhwc(self, name, rank):
        return self.node("Transpose", [name], perm=[0] + list(range(2, rank)) + [1])

    # -- the lowering ---------------------------------------------------------------

    def build(self, opset):
        self.opset = opset
        schemas = _schema_defaults()
        for n in self.desc["nodes"]:
            if n["kind"] != "op":
                raise NotImplementedError(
                    f"ONNX export: the traced inference graph holds a {n['kind']} step, "
                    "which has no ONNX form."
                )
            op = n["op"]
            attrs = dict(schemas.get(op, {}))
            attrs.update({k: a["value"] for k, a in n["attrs"].items()})
            ins, outs = n["inputs"], n["outputs"]
            # Replaying the op gives each output's dtype and shape as traced.
            results = _C.op(
                op, *[self.value[v] for v in ins], **{k: a["value"] for k, a in n["attrs"].items()}
            )
            if not isinstance(results, tuple):
                results = (results,)
            for v, r in zip(outs, results):
                self.value[v] = r
            if any(v in self.batch for v in ins):
                self.batch.update(outs)
            lower = getattr(self, "op_" + op, None)
            if lower is None and op not in _SAME and op not in _COMPARE and op not in _LOGICAL \
                    and op not in _REDUCE:
                raise NotImplementedError(
                    f"ONNX export on the swift backend has no lowering for the engine op "
                    f"'{op}' (used by this model)."
                )
            names = [self.name[v] for v in ins]
            # A conv or matmul the engine fused with its bias and activation (the graph pass
            # of Epilogue.swift) goes back to the three ONNX nodes.
            bias = None
            activation = attrs.pop("activation", "none") if op in _EPILOGUE_OPS else "none"
            if op in _EPILOGUE_OPS and len(ins) > 2:
                bias, names, ins = (names[2], ins[2]), names[:2], ins[:2]
            if lower is not None:
                result = lower(names, ins, outs, attrs)
            elif op in _REDUCE:
                result = self.reduce(_REDUCE[op], names[0], attrs)
            elif op in _COMPARE or op in _LOGICAL:
                result = self.compare(op, names, ins)
            else:
                out_dtype = self.dtype(outs[0])
                args = [self.cast(nm, self.dtype(v), out_dtype) for nm, v in zip(names, ins)]
                result = self.node(_SAME[op], args)
            if bias is not None:
                result = self.node("Add", [result, self.cast(bias[0], self.dtype(bias[1]), self.dtype(outs[0]))])
            if activation != "none":
                result = self.node(_SAME[activation], [result])
            result = result if isinstance(result, list) else [result]
            for v, r in zip(outs, result):
                self.name[v] = r
        return self.finish(opset)

    def finish(self, opset):
        h = self.helper
        inputs = []
        for i, entry in enumerate(self.desc["inputs"]):
            dims = list(self.specs[i].shape)
            shape = ["batch"] + [f"{self.input_names[i]}_dim{d}" if dims[d] is None else n
                                 for d, n in enumerate(entry["shape"]) if d > 0]
            inputs.append(h.make_tensor_value_info(self.input_names[i], self.onnx_type(entry["dtype"]), shape))
        outputs = []
        for i, entry in enumerate(self.desc["outputs"]):
            name = f"output_{i}"
            self.node("Identity", [self.name[entry["value"]]], outputs=[name])
            shape = list(entry["shape"])
            if self.dynamic:
                # Sizes that follow another dynamic dim are not tracked: leave them open.
                shape = [None] * len(shape)
            if entry["value"] in self.batch and shape:
                shape[0] = "batch"
            outputs.append(h.make_tensor_value_info(name, self.onnx_type(entry["dtype"]), shape))
        graph = h.make_graph(self.nodes, "keras_swift", inputs, outputs, self.initializers)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)],
                             producer_name="keras-swift")
        model.ir_version = min(model.ir_version, 10)
        return model

    def compare(self, op, names, ins):
        a, b = ins
        if op in _LOGICAL:
            args = [self.cast(nm, self.dtype(v), np.bool_) for nm, v in zip(names, ins)]
            return self.node(_LOGICAL[op], args)
        common = np.result_type(self.dtype(a), self.dtype(b))
        args = [self.cast(nm, self.dtype(v), common) for nm, v in zip(names, ins)]
        return self.node(_COMPARE[op], args)

    def reduce(self, onnx_op, x, attrs, keepdims=None):
        axes = attrs.get("axes")
        keep = int(bool(attrs.get("keepdims", False)) if keepdims is None else keepdims)
        if axes is None:
            return self.node(onnx_op, [x], keepdims=keep)
        if onnx_op == "ReduceSum" or self.opset >= 18:
            return self.node(onnx_op, [x, self.ints(_listify(axes))], keepdims=keep)
        return self.node(onnx_op, [x], axes=_listify(axes), keepdims=keep)

    def split(self, x, size, n, axis):
        """``x`` cut into ``n`` equal parts of ``size`` along ``axis``."""
        return self.node("Split", [x, self.ints([size // n] * n)], n_out=n, axis=axis)

    # Unary ops with a formula.

    def op_not_equal(self, names, ins, outs, attrs):
        return self.node("Not", [self.compare("equal", names, ins)])

    def op_logical_not(self, names, ins, outs, attrs):
        return self.node("Not", [self.cast(names[0], self.dtype(ins[0]), np.bool_)])

    def op_square(self, names, ins, outs, attrs):
        return self.node("Mul", [names[0], names[0]])

    def op_rsqrt(self, names, ins, outs, attrs):
        return self.node("Reciprocal", [self.node("Sqrt", names)])

    def op_relu6(self, names, ins, outs, attrs):
        dt = self.dtype(ins[0])
        return self.node("Clip", [names[0], self.scalar(0, dt), self.scalar(6, dt)])

    def op_silu(self, names, ins, outs, attrs):
        return self.node("Mul", [names[0], self.node("Sigmoid", names)])

    def op_selu(self, names, ins, outs, attrs):
        return self.node("Selu", names, alpha=_SELU_ALPHA, gamma=_SELU_SCALE)

    def op_elu(self, names, ins, outs, attrs):
        return self.node("Elu", names, alpha=float(attrs["alpha"]))

    def op_leaky_relu(self, names, ins, outs, attrs):
        return self.node("LeakyRelu", names, alpha=float(attrs["negative_slope"]))

    def op_expm1(self, names, ins, outs, attrs):
        return self.node("Sub", [self.node("Exp", names), self.scalar(1, self.dtype(ins[0]))])

    def op_log1p(self, names, ins, outs, attrs):
        return self.node("Log", [self.node("Add", [names[0], self.scalar(1, self.dtype(ins[0]))])])

    def op_gelu(self, names, ins, outs, attrs):
        x, dt = names[0], self.dtype(ins[0])
        if attrs.get("approximate", True):
            cube = self.node("Mul", [self.node("Mul", [x, x]), x])
            inner = self.node("Add", [x, self.node("Mul", [cube, self.scalar(0.044715, dt)])])
            t = self.node("Tanh", [self.node("Mul", [inner, self.scalar(math.sqrt(2 / math.pi), dt)])])
        else:
            t = self.node("Erf", [self.node("Mul", [x, self.scalar(1 / math.sqrt(2), dt)])])
        half_x = self.node("Mul", [x, self.scalar(0.5, dt)])
        return self.node("Mul", [half_x, self.node("Add", [t, self.scalar(1, dt)])])

    def op_clip(self, names, ins, outs, attrs):
        x, dt = names[0], self.dtype(ins[0])
        lo, hi = float(attrs.get("min", "-inf")), float(attrs.get("max", "inf"))
        if lo != -math.inf:
            x = self.node("Max", [x, self.scalar(lo, dt)])
        if hi != math.inf:
            x = self.node("Min", [x, self.scalar(hi, dt)])
        return self.node("Identity", [x])

    def op_cast(self, names, ins, outs, attrs):
        return self.node("Cast", names, to=self.onnx_type(self.dtype(outs[0])))

    def op_where(self, names, ins, outs, attrs):
        out = self.dtype(outs[0])
        cond = self.cast(names[0], self.dtype(ins[0]), np.bool_)
        return self.node("Where", [cond, self.cast(names[1], self.dtype(ins[1]), out),
                                   self.cast(names[2], self.dtype(ins[2]), out)])

    def op_softmax(self, names, ins, outs, attrs):
        return self.node("Softmax", names, axis=int(attrs.get("axis", -1)))

    def op_log_softmax(self, names, ins, outs, attrs):
        return self.node("LogSoftmax", names, axis=int(attrs.get("axis", -1)))

    def op_moments(self, names, ins, outs, attrs):
        axes = attrs.get("axes")
        keep = bool(attrs.get("keepdims", False))
        x = names[0]
        axes_in = [] if axes is None else [self.ints(_listify(axes))]
        mean = self.reduce("ReduceMean", x, attrs, keepdims=1)
        centred = self.node("Sub", [x, mean])
        var = self.reduce("ReduceMean", self.node("Mul", [centred, centred]), attrs, keepdims=1)
        if keep:
            return [mean, var]
        if axes is None:
            return [self.node("Reshape", [mean, self.ints([])]), self.node("Reshape", [var, self.ints([])])]
        return [self.node("Squeeze", [mean] + axes_in), self.node("Squeeze", [var] + axes_in)]

    def op_argmax(self, names, ins, outs, attrs):
        x, axis = names[0], attrs.get("axis")
        if axis is None:
            x, axis = self.node("Reshape", [x, self.ints([-1])]), 0
        r = self.node("ArgMax", [x], axis=int(axis), keepdims=int(bool(attrs.get("keepdims", False))))
        return self.cast(r, np.int64, self.dtype(outs[0]))

    # Shapes.

    def op_reshape(self, names, ins, outs, attrs):
        shape = _listify(attrs["shape"])
        if ins[0] in self.batch and -1 not in shape:
            # The batch may be folded into any dim (einsum's reshapes): let the run infer
            # the first dim the traced batch divides.
            for d, n in enumerate(shape):
                if n and n % TRACE_BATCH == 0:
                    return self.node("Reshape", [names[0], self.ints(shape[:d] + [-1] + shape[d + 1:])])
        return self.node("Reshape", [names[0], self.dynamic_shape(shape, ins[0] in self.batch)])

    def op_broadcast_to(self, names, ins, outs, attrs):
        shape = _listify(attrs["shape"])
        # Expand broadcasts both ways: a 1 keeps the input's size, batch-sized or not.
        in_shape = self.shape(ins[0])
        lead = len(shape) - len(in_shape)
        shape = [1 if d >= lead and in_shape[d - lead] == n else n for d, n in enumerate(shape)]
        return self.node("Expand", [names[0], self.ints(shape)])

    def op_full(self, names, ins, outs, attrs):
        shape = _listify(attrs["shape"])
        dt = self.dtype(outs[0])
        value = self.onnx.numpy_helper.from_array(np.asarray([attrs.get("value", 0.0)], dtype=dt))
        dependent = bool(self.batch) and shape and shape[0] == TRACE_BATCH
        if dependent:
            self.batch.update(outs)
        return self.node("ConstantOfShape", [self.dynamic_shape(shape, dependent)], value=value)

    def op_transpose(self, names, ins, outs, attrs):
        perm = attrs.get("perm")
        rank = len(self.shape(ins[0]))
        perm = list(reversed(range(rank))) if perm is None else [p % rank for p in _listify(perm)]
        return self.node("Transpose", names, perm=perm)

    def op_expand_dims(self, names, ins, outs, attrs):
        axes = _listify(attrs.get("axis", attrs.get("axes")))
        return self.node("Unsqueeze", [names[0], self.ints(axes)])

    def op_squeeze(self, names, ins, outs, attrs):
        axes = attrs.get("axis", attrs.get("axes"))
        if axes is None:
            return self.node("Squeeze", names)
        return self.node("Squeeze", [names[0], self.ints(_listify(axes))])

    def op_concatenate(self, names, ins, outs, attrs):
        out = self.dtype(outs[0])
        args = [self.cast(nm, self.dtype(v), out) for nm, v in zip(names, ins)]
        return self.node("Concat", args, axis=int(attrs.get("axis", 0)))

    def op_stack(self, names, ins, outs, attrs):
        axis = int(attrs.get("axis", 0))
        rank = len(self.shape(outs[0]))
        axis = axis % rank
        out = self.dtype(outs[0])
        parts = [self.node("Unsqueeze", [self.cast(nm, self.dtype(v), out), self.ints([axis])])
                 for nm, v in zip(names, ins)]
        return self.node("Concat", parts, axis=axis)

    def op_strided_slice(self, names, ins, outs, attrs):
        shape = self.shape(ins[0])
        begin, end, strides = (_listify(attrs[k]) for k in ("begin", "end", "strides"))
        big = np.iinfo(np.int64).max
        ends = []
        for d, (b, e, s) in enumerate(zip(begin, end, strides)):
            if s > 0 and e >= shape[d]:
                e = big  # to the end of the axis, whatever its size in the run
            elif s < 0 and e < 0:
                e = -big
            ends.append(e)
        axes = list(range(len(begin)))
        return self.node("Slice", [names[0], self.ints(begin), self.ints(ends), self.ints(axes),
                                   self.ints(strides)])

    def op_take(self, names, ins, outs, attrs):
        x, idx = names
        axis = attrs.get("axis")
        if axis is None:
            x, axis = self.node("Reshape", [x, self.ints([-1])]), 0
        idx = self.cast(idx, self.dtype(ins[1]), np.int64)
        return self.node("Gather", [x, idx], axis=int(axis))

    def op_one_hot(self, names, ins, outs, attrs):
        dt = self.dtype(outs[0])
        idx = self.cast(names[0], self.dtype(ins[0]), np.int64)
        values = self.initializer(np.asarray([0, 1], dtype=dt), "onehot")
        return self.node("OneHot", [idx, self.ints([int(attrs["num_classes"])]), values],
                         axis=int(attrs.get("axis", -1)))

    def op_pad(self, names, ins, outs, attrs):
        mode = attrs.get("mode", "constant")
        modes = {"constant": "constant", "reflect": "reflect", "edge": "edge"}
        if mode not in modes:
            raise NotImplementedError(f"ONNX export: pad mode '{mode}' has no ONNX form.")
        pads = _listify(attrs["pads"])
        onnx_pads = pads[0::2] + pads[1::2]
        value = self.scalar(attrs.get("value", 0.0), self.dtype(ins[0]))
        return self.node("Pad", [names[0], self.ints(onnx_pads), value], mode=modes[mode])

    # Convolution and pooling (the engine is channels-last, ONNX channels-first).

    def _spatial_pads(self, in_sizes, kernel, strides, dilation, padding):
        """The pads attribute; "same" with a stride over a dynamic size pads at run time."""
        if padding == "valid":
            return {"pads": [0] * (2 * len(in_sizes))}
        if self.dynamic and any(s > 1 for s in strides):
            # Keras's "same" puts the odd pixel after, as SAME_UPPER.
            return {"auto_pad": "SAME_UPPER"}
        before, after = [], []
        for n, k, s, d in zip(in_sizes, kernel, strides, dilation):
            eff = (k - 1) * d + 1
            total = max((math.ceil(n / s) - 1) * s + eff - n, 0)
            before.append(total // 2)
            after.append(total - total // 2)
        # A stride of 1 pads by the kernel's extent alone, whatever the size.
        return {"pads": before + after}

    def op_dot_product_attention(self, names, ins, outs, attrs):
        q, k, v = names
        dtype = self.dtype(ins[0])
        logits = self.node("Mul", [self.node("MatMul", [q, self.node("Transpose", [k], perm=[0, 1, 3, 2])]),
                                   self.scalar(attrs["scale"], dtype)])
        if attrs.get("causal"):
            t, s = self.shape(ins[0])[2], self.shape(ins[1])[2]
            if self.dynamic:
                raise NotImplementedError(
                    "ONNX export: causal attention over a dynamic sequence length is not supported yet."
                )
            keep = self.initializer(np.tril(np.ones((t, s), dtype=bool)), "causal")
            logits = self.node("Where", [keep, logits, self.scalar(-np.inf, dtype)])
        return self.node("MatMul", [self.node("Softmax", [logits], axis=-1), v])

    def op_conv(self, names, ins, outs, attrs):
        x_shape, k_shape = self.shape(ins[0]), self.shape(ins[1])
        rank, n = len(x_shape), len(x_shape) - 2
        kernel = k_shape[:n]
        strides = _per_dim(attrs.get("strides", [1]), n)
        dilation = _per_dim(attrs.get("dilation", [1]), n)
        pads = self._spatial_pads(x_shape[1:-1], kernel, strides, dilation, attrs.get("padding", "valid"))
        w = self.node("Transpose", [names[1]], perm=[n + 1, n] + list(range(n)))
        y = self.node("Conv", [self.nchw(names[0], rank), w], kernel_shape=kernel, strides=strides,
                      dilations=dilation, group=int(attrs.get("groups", 1)), **pads)
        return self.nhwc(y, rank)

    op_conv2d = op_conv

    def _pool(self, onnx_op, names, ins, attrs, **extra):
        x_shape = self.shape(ins[0])
        rank, n = len(x_shape), len(x_shape) - 2
        pool = _per_dim(attrs["pool_size"], n)
        strides = _per_dim(attrs.get("strides") or pool, n)
        pads = self._spatial_pads(x_shape[1:-1], pool, strides, [1] * n, attrs.get("padding", "valid"))
        y = self.node(onnx_op, [self.nchw(names[0], rank)], kernel_shape=pool, strides=strides,
                      **pads, **extra)
        return self.nhwc(y, rank)

    def op_max_pool(self, names, ins, outs, attrs):
        return self._pool("MaxPool", names, ins, attrs)

    def op_avg_pool(self, names, ins, outs, attrs):
        # The engine divides by the in-bounds count under "same" padding.
        return self._pool("AveragePool", names, ins, attrs, count_include_pad=0)

    op_max_pool2d = op_max_pool
    op_avg_pool2d = op_avg_pool

    # Recurrent layers: ONNX LSTM/GRU.

    def _gates(self, w, size, order, n_gates, transpose_to):
        """Keras (in, n*U) gate blocks reordered, transposed and given a direction axis."""
        parts = self.split(w, size, n_gates, -1)
        if order is not None:
            parts = [parts[i] for i in order]
        joined = self.node("Concat", parts, axis=-1) if n_gates > 1 else parts[0]
        if transpose_to:
            joined = self.node("Transpose", [joined], perm=[1, 0])
        return self.node("Unsqueeze", [joined, self.ints([0])])

    def _recurrent(self, onnx_op, names, ins, attrs, n_gates, order, bias_rows):
        x = names[0]
        if attrs.get("go_backwards", False):
            # Keras returns the steps in the order it ran them (reversed).
            big = np.iinfo(np.int64).max
            x = self.node("Slice", [x, self.ints([-1]), self.ints([-big]), self.ints([1]), self.ints([-1])])
        n_state = 2 if onnx_op == "LSTM" else 1
        states = names[1:1 + n_state]
        kernel, recurrent = names[1 + n_state], names[2 + n_state]
        units = self.shape(ins[2 + n_state])[0]
        dt = self.dtype(ins[0])
        size = n_gates * units
        w = self._gates(kernel, size, order, n_gates, True)
        r = self._gates(recurrent, size, order, n_gates, True)
        if len(names) > 3 + n_state:
            b = names[3 + n_state]
            if bias_rows == 2 and len(self.shape(ins[3 + n_state])) == 2:
                rows = self.split(b, 2, 2, 0)
                rows = [self.node("Squeeze", [rw, self.ints([0])]) for rw in rows]
                wb = self._gates(rows[0], size, order, n_gates, False)
                rb = self._gates(rows[1], size, order, n_gates, False)
            else:
                wb = self._gates(b, size, order, n_gates, False)
                rb = self.initializer(np.zeros((1, n_gates * units), dtype=dt), "rb")
            bias = self.node("Concat", [wb, rb], axis=1)
        else:
            bias = self.initializer(np.zeros((1, 2 * n_gates * units), dtype=dt), "bias")
        # Time-major (layout 0): ONNX Runtime runs no batch-first recurrent op.
        x = self.node("Transpose", [x], perm=[1, 0, 2])
        init = [self.node("Unsqueeze", [s, self.ints([0])]) for s in states]
        extra = {"linear_before_reset": 1} if onnx_op == "GRU" else {}
        outs = self.node(onnx_op, [x, w, r, bias, ""] + init, n_out=1 + n_state, hidden_size=units, **extra)
        y = self.node("Transpose", [self.node("Squeeze", [outs[0], self.ints([1])])], perm=[1, 0, 2])
        return [y] + [self.node("Squeeze", [s, self.ints([0])]) for s in outs[1:]]

    def op_lstm(self, names, ins, outs, attrs):
        # Keras gates i, f, c, o; ONNX i, o, f, c.
        return self._recurrent("LSTM", names, ins, attrs, 4, [0, 3, 1, 2], 1)

    def op_gru(self, names, ins, outs, attrs):
        # Keras (reset_after) gates z, r, h as ONNX; its bias rows are input and recurrent.
        return self._recurrent("GRU", names, ins, attrs, 3, None, 2)


def _listify(v):
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]


def _per_dim(v, n):
    v = _listify(v)
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
