"""ONNX export for the swift backend.

``model.export(path, format="onnx")`` (``keras_swift_hook`` routes Keras's ``export_onnx``
here): the model's inference call ``model(inputs, training=False)`` is
traced into an engine graph on a sample batch, the graph is read back with
``_C.graph_describe`` and every engine op is lowered to ONNX nodes with the ``onnx``
helper API. Variables are not graph inputs while tracing, so the engine records them as
constants; they become initializers. The default opset is ``DEFAULT_OPSET`` (18, the
newest whose ops these lowerings use; from 18 the ``Reduce*`` ops take their axes as an
input, before it an attribute); ``opset_version`` may ask for ``MIN_OPSET`` (13) or newer.

Batch size: dim 0 of every input and output is the symbolic ``"batch"``; other
dimensions the signature leaves dynamic (``None``) are named in the ONNX inputs. How the
traced shapes in op attributes follow them is ``graph``'s docstring. ONNX Runtime rejects
other sizes where a reshape, ``full`` or recurrent layer kept a traced size.

An op with no lowering raises ``NotImplementedError`` naming it.
"""

import math

import numpy as np

from keras.src import tree

from keras_swift.src.engine import _C
from keras_swift.src.export.graph import BATCH, GraphWalk, listify as _listify
from keras_swift.src.export.graph import per_dim as _per_dim
from keras_swift.src.export.graph import trace

DEFAULT_OPSET = 18
MIN_OPSET = 13


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

    names = _input_names(tree.flatten(input_signature))
    traced = trace(lambda *args: model(*args, training=False), input_signature)
    model_proto = _Lowering(onnx, traced, names, tree.flatten(input_signature)).build(opset)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(filepath))


def _input_names(specs):
    names = [getattr(s, "name", None) or f"input_{i}" for i, s in enumerate(specs)]
    if len(set(names)) != len(names):
        names = [f"input_{i}" for i in range(len(specs))]
    return names


# Engine op -> ONNX op for those that map one to one with no attributes.
_SAME = {
    "add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow",
    "maximum": "Max", "minimum": "Min", "matmul": "MatMul",
    "negative": "Neg", "abs": "Abs", "sign": "Sign", "relu": "Relu", "exp": "Exp",
    "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf",
    "floor": "Floor", "ceil": "Ceil", "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos",
    "softplus": "Softplus", "softsign": "Softsign", "round": "Round", "stop_gradient": "Identity",
}
_COMPARE = {
    "equal": "Equal", "less": "Less", "less_equal": "LessOrEqual",
    "greater": "Greater", "greater_equal": "GreaterOrEqual",
}
_LOGICAL = {"logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}
_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
           "prod": "ReduceProd"}
# Keras's SELU constants (ONNX's defaults are rounded).
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


class _Lowering(GraphWalk):
    TARGET = "ONNX"

    def __init__(self, onnx, traced, names, specs):
        super().__init__(traced.graph, range(len(names)))
        self.onnx = onnx
        self.helper = onnx.helper
        self.input_names = names
        self.specs = specs
        # Whether the signature leaves a dimension other than the batch dynamic.
        self.dynamic = any(d is None for spec in specs for d in list(spec.shape)[1:])
        self.nodes = []
        self.initializers = []
        self.counter = 0
        for i, entry in enumerate(self.desc["inputs"]):
            self.bind(entry["value"], names[i], traced.sample[i])
        for i, entry in enumerate(self.desc["constants"]):
            t = _C.graph_constant(self.graph, i)
            self.bind(entry["value"], self.initializer(np.asarray(t), "const"), t)
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

    def shape_tensor(self, shape):
        """A symbolic shape (``graph``) as an int64 tensor."""
        if shape and shape[0] is BATCH:
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
        self.walk()
        return self.finish(opset)

    def lowering(self, op):
        lower = getattr(self, "op_" + op, None)
        if lower is not None:
            return lower
        if op in _REDUCE:
            return lambda names, ins, outs, attrs: self.reduce(_REDUCE[op], names[0], attrs)
        if op in _COMPARE or op in _LOGICAL:
            return lambda names, ins, outs, attrs: self.compare(op, names, ins)
        if op in _SAME:
            def same(names, ins, outs, attrs):
                out_dtype = self.dtype(outs[0])
                args = [self.cast(nm, self.dtype(v), out_dtype) for nm, v in zip(names, ins)]
                return self.node(_SAME[op], args)
            return same
        return None

    def add_bias(self, result, bias, bias_id, out_id):
        return self.node("Add", [result, self.cast(bias, self.dtype(bias_id), self.dtype(out_id))])

    def activate(self, activation, result):
        return self.node(_SAME[activation], [result])

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
        target = self.reshape_target(_listify(attrs["shape"]), ins[0])
        return self.node("Reshape", [names[0], self.shape_tensor(target)])

    def op_broadcast_to(self, names, ins, outs, attrs):
        # Expand broadcasts both ways: a 1 keeps the input's size.
        shape = self.broadcast_target(_listify(attrs["shape"]), ins[0])
        return self.node("Expand", [names[0], self.ints(shape)])

    def op_full(self, names, ins, outs, attrs):
        shape = self.full_target(_listify(attrs["shape"]), outs)
        dt = self.dtype(outs[0])
        value = self.onnx.numpy_helper.from_array(np.asarray([attrs.get("value", 0.0)], dtype=dt))
        return self.node("ConstantOfShape", [self.shape_tensor(shape)], value=value)

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
        begin, end, strides = (_listify(attrs[k]) for k in ("begin", "end", "strides"))
        big = np.iinfo(np.int64).max
        ends = [e if e is not None else (big if s > 0 else -big)
                for e, s in zip(self.slice_ends(ins[0], begin, end, strides), strides)]
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
