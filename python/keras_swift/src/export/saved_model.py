"""TensorFlow SavedModel export for the swift backend.

``model.export(path, format="tf_saved_model")`` and ``keras.export.ExportArchive`` build
on Keras's ``SavedModelExportArchive`` (``keras_swift_hook`` makes this module's class
the backend's archive). Each endpoint's function is traced once into an engine graph
(``graph.trace``) with the tracked variables' values as graph inputs, and every engine op
is lowered to TensorFlow ops (``_Lowering``, one table for this target as ``onnx`` has
one for ONNX) inside a ``tf.function`` that reads the archive's ``tf.Variable`` copies of
those variables. The SavedModel therefore holds real variables (``variables``,
``trainable_variables`` on the reloaded object), serves with ``tf.saved_model.load`` or
``keras.layers.TFSMLayer`` (under the tensorflow backend), and takes any batch size
(dims of the signature left ``None``, as ``graph`` describes). Variables the function
assigns (e.g. a training-mode BatchNormalization) are assigned in the SavedModel too.
Variables of layers not tracked are constants of the graph, as jax2tf makes them on JAX.

Needs TensorFlow (``pip install tensorflow-cpu``); without it the archive raises
``ImportError`` saying so. An op with no lowering raises ``NotImplementedError``
naming it.
"""

import inspect

import numpy as np

from keras.src import backend
from keras.src import tree
from keras.src.export.saved_model_export_archive import (
    SavedModelExportArchive as KerasSavedModelExportArchive,
)

from keras_swift.src.engine import _C
from keras_swift.src.export.graph import BATCH, GraphWalk, listify, per_dim, trace


def require_tensorflow(what):
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            f"{what} on the swift backend needs TensorFlow: `pip install tensorflow-cpu` "
            "(or `tensorflow`)."
        ) from e
    return tf


class SavedModelExportArchive(KerasSavedModelExportArchive):
    def __init__(self):
        tf = require_tensorflow("Exporting a SavedModel")
        # Keras's __init__ admits only its own backends; the rest of it is this.
        self._endpoint_names = []
        self._endpoint_signatures = {}
        self.tensorflow_version = tf.__version__
        self._tf_trackable = tf.__internal__.tracking.AutoTrackable()
        self._tf_trackable.variables = []
        self._tf_trackable.trainable_variables = []
        self._tf_trackable.non_trainable_variables = []
        self._backend_init()

    def _backend_init(self):
        self._backend_variables = []
        self._tf_variables = {}  # id(Keras variable) -> its tf.Variable

    def _convert_to_tf_variable(self, variable):
        tf = require_tensorflow("Exporting a SavedModel")
        copy = self._tf_variables.get(id(variable))
        if copy is None:
            copy = tf.Variable(
                np.asarray(variable.numpy()),
                dtype=variable.dtype,
                trainable=variable.trainable,
                name=variable.name,
            )
            self._tf_variables[id(variable)] = copy
        return copy

    def _backend_track_layer(self, layer):
        known = {id(v) for v in self._backend_variables}
        for group in ("trainable_variables", "non_trainable_variables"):
            new = [v for v in getattr(layer, group) if id(v) not in known]
            known.update(id(v) for v in new)
            self._backend_variables += new
            setattr(self._tf_trackable, group,
                    list(getattr(self._tf_trackable, group)) + [self._convert_to_tf_variable(v) for v in new])
        self._tf_trackable.variables = (
            list(self._tf_trackable.trainable_variables)
            + list(self._tf_trackable.non_trainable_variables)
        )

    def add_variable_collection(self, name, variables):
        if isinstance(variables, (list, tuple, set)):
            # Keras's own method stores them as they are; the SavedModel needs tf.Variables.
            variables = [self._convert_to_tf_variable(v) if isinstance(v, backend.Variable) else v
                         for v in variables]
        super().add_variable_collection(name, variables)

    def _backend_add_endpoint(self, name, fn, input_signature, **kwargs):
        if kwargs:
            raise ValueError(
                f"The swift backend's add_endpoint takes no extra arguments; got {sorted(kwargs)}."
            )
        tf = require_tensorflow("Exporting a SavedModel")
        variables = list(self._backend_variables)
        traced = trace(fn, input_signature, variables)
        copies = [self._convert_to_tf_variable(v) for v in variables]
        # The variable read for each state input of the graph.
        readers = {}
        for i, j in enumerate(traced.state_inputs):
            readers.setdefault(j, copies[i])

        def stateful_fn(*args):
            state = [readers[j].read_value() for j in range(traced.n_state)]
            flat = [tf.convert_to_tensor(a) for a in tree.flatten(list(args))]
            outs = _Lowering(tf, traced, state + flat).walk()
            for i, new in zip(traced.assigned, outs[traced.n_outputs:]):
                copies[i].assign(tf.cast(new, copies[i].dtype))
            return tree.pack_sequence_as(traced.output_structure, outs[:traced.n_outputs])

        parameters = list(inspect.signature(fn).parameters.values())
        stateful_fn.__signature__ = inspect.Signature(parameters=parameters[: len(input_signature)])
        return tf.function(stateful_fn, input_signature=input_signature, autograph=False)


def _table(tf):
    """Engine op -> TensorFlow function, for those whose inputs need only a cast to the
    output's dtype."""
    m = tf.math
    return {
        "add": m.add, "subtract": m.subtract, "multiply": m.multiply, "divide": m.divide,
        "power": m.pow, "maximum": m.maximum, "minimum": m.minimum,
        "negative": m.negative, "abs": m.abs, "sign": m.sign, "relu": tf.nn.relu, "exp": m.exp,
        "log": m.log, "sqrt": m.sqrt, "tanh": m.tanh, "sigmoid": m.sigmoid, "erf": m.erf,
        "floor": m.floor, "ceil": m.ceil, "reciprocal": m.reciprocal, "sin": m.sin, "cos": m.cos,
        "softplus": m.softplus, "softsign": tf.nn.softsign, "round": m.round,
        "square": m.square, "rsqrt": m.rsqrt, "relu6": tf.nn.relu6, "silu": tf.nn.silu,
        # tf.nn.selu's constants are Keras's.
        "selu": tf.nn.selu, "expm1": m.expm1, "log1p": m.log1p, "stop_gradient": tf.stop_gradient,
    }


def _compare_table(tf):
    m = tf.math
    return {"equal": m.equal, "not_equal": m.not_equal, "less": m.less,
            "less_equal": m.less_equal, "greater": m.greater, "greater_equal": m.greater_equal}


def _logical_table(tf):
    m = tf.math
    return {"logical_and": m.logical_and, "logical_or": m.logical_or,
            "logical_xor": m.logical_xor}


def _reduce_table(tf):
    return {"sum": tf.reduce_sum, "mean": tf.reduce_mean, "max": tf.reduce_max,
            "min": tf.reduce_min, "prod": tf.reduce_prod}


class _Lowering(GraphWalk):
    TARGET = "TensorFlow"

    def __init__(self, tf, traced, inputs):
        """``inputs``: a TensorFlow tensor per graph input (the state's, then the batch's)."""
        super().__init__(traced.graph, range(traced.n_state, len(traced.inputs)))
        self.tf = tf
        for i, entry in enumerate(self.desc["inputs"]):
            self.bind(entry["value"], inputs[i], traced.inputs[i])
        for i, entry in enumerate(self.desc["constants"]):
            t = _C.graph_constant(self.graph, i)
            self.bind(entry["value"], tf.constant(np.asarray(t)), t)
        firsts = [inputs[i] for i in range(traced.n_state, len(inputs))]
        self._batch_source = firsts[0] if firsts else None
        self.same, self.compares = _table(tf), _compare_table(tf)
        self.logicals, self.reductions = _logical_table(tf), _reduce_table(tf)

    def tf_dtype(self, v):
        return self.tf.as_dtype(self.dtype(v).name)

    def cast(self, x, v, to):
        """``x`` (engine value ``v``) cast to the engine value ``to``'s dtype."""
        return x if self.dtype(v) == self.dtype(to) else self.tf.cast(x, self.tf_dtype(to))

    def shape_tensor(self, shape):
        """A symbolic shape (``graph``) as an int32 tensor."""
        tf = self.tf
        if shape and shape[0] is BATCH:
            batch = tf.shape(self._batch_source)[:1]
            return tf.concat([batch, tf.constant(shape[1:], tf.int32)], 0)
        return tf.constant(shape, tf.int32)

    # -- GraphWalk ------------------------------------------------------------------

    def lowering(self, op):
        lower = getattr(self, "op_" + op, None)
        if lower is not None:
            return lower
        if op in self.same:
            fn = self.same[op]
            return lambda names, ins, outs, attrs: fn(
                *[self.cast(x, v, outs[0]) for x, v in zip(names, ins)])
        if op in self.compares:
            fn = self.compares[op]

            def compare(names, ins, outs, attrs):
                common = self.tf.as_dtype(np.result_type(*[self.dtype(v) for v in ins]).name)
                return fn(*[self.tf.cast(x, common) for x in names])
            return compare
        if op in self.logicals:
            fn = self.logicals[op]
            return lambda names, ins, outs, attrs: fn(*[self.tf.cast(x, self.tf.bool) for x in names])
        if op in self.reductions:
            fn = self.reductions[op]

            def reduce(names, ins, outs, attrs):
                axes = attrs.get("axes")
                return fn(self.cast(names[0], ins[0], outs[0]),
                          axis=None if axes is None else listify(axes),
                          keepdims=bool(attrs.get("keepdims", False)))
            return reduce
        return None

    def add_bias(self, result, bias, bias_id, out_id):
        return result + self.cast(bias, bias_id, out_id)

    def activate(self, activation, result):
        return self.same[activation](result)

    # -- formulas -------------------------------------------------------------------

    def op_logical_not(self, names, ins, outs, attrs):
        return self.tf.logical_not(self.tf.cast(names[0], self.tf.bool))

    def op_elu(self, names, ins, outs, attrs):
        x = names[0]
        return self.tf.where(x > 0, x, float(attrs["alpha"]) * self.tf.math.expm1(x))

    def op_leaky_relu(self, names, ins, outs, attrs):
        return self.tf.nn.leaky_relu(names[0], alpha=float(attrs["negative_slope"]))

    def op_gelu(self, names, ins, outs, attrs):
        return self.tf.nn.gelu(names[0], approximate=bool(attrs.get("approximate", True)))

    def op_clip(self, names, ins, outs, attrs):
        x, dt = names[0], self.tf_dtype(ins[0])
        lo, hi = float(attrs.get("min", "-inf")), float(attrs.get("max", "inf"))
        if lo != -np.inf:
            x = self.tf.maximum(x, self.tf.constant(lo, dt))
        if hi != np.inf:
            x = self.tf.minimum(x, self.tf.constant(hi, dt))
        return x

    def op_cast(self, names, ins, outs, attrs):
        return self.tf.cast(names[0], self.tf_dtype(outs[0]))

    def op_where(self, names, ins, outs, attrs):
        cond = self.tf.cast(names[0], self.tf.bool)
        return self.tf.where(cond, self.cast(names[1], ins[1], outs[0]),
                             self.cast(names[2], ins[2], outs[0]))

    def op_softmax(self, names, ins, outs, attrs):
        return self.tf.nn.softmax(names[0], axis=int(attrs.get("axis", -1)))

    def op_log_softmax(self, names, ins, outs, attrs):
        return self.tf.nn.log_softmax(names[0], axis=int(attrs.get("axis", -1)))

    def op_moments(self, names, ins, outs, attrs):
        axes = attrs.get("axes")
        axes = list(range(len(self.shape(ins[0])))) if axes is None else listify(axes)
        mean, var = self.tf.nn.moments(names[0], axes=axes, keepdims=bool(attrs.get("keepdims", False)))
        return [mean, var]

    def op_argmax(self, names, ins, outs, attrs):
        x, axis = names[0], attrs.get("axis")
        if axis is None:
            x, axis = self.tf.reshape(x, [-1]), 0
        r = self.tf.argmax(x, axis=int(axis), output_type=self.tf.int64)
        if attrs.get("keepdims", False):
            r = self.tf.expand_dims(r, int(axis))
        return self.tf.cast(r, self.tf_dtype(outs[0]))

    def op_matmul(self, names, ins, outs, attrs):
        tf = self.tf
        a, b = (self.cast(x, v, outs[0]) for x, v in zip(names, ins))
        vec_a, vec_b = len(self.shape(ins[0])) == 1, len(self.shape(ins[1])) == 1
        # tf.linalg.matmul wants matrices (it broadcasts their batch dims as numpy).
        a = tf.expand_dims(a, 0) if vec_a else a
        b = tf.expand_dims(b, -1) if vec_b else b
        y = tf.linalg.matmul(a, b)
        y = tf.squeeze(y, -1) if vec_b else y
        return tf.squeeze(y, -2) if vec_a else y

    # Shapes.

    def op_reshape(self, names, ins, outs, attrs):
        target = self.reshape_target(listify(attrs["shape"]), ins[0])
        return self.tf.reshape(names[0], self.shape_tensor(target))

    def op_broadcast_to(self, names, ins, outs, attrs):
        tf = self.tf
        target = tf.constant(self.broadcast_target(listify(attrs["shape"]), ins[0]), tf.int32)
        return tf.broadcast_to(names[0], tf.broadcast_dynamic_shape(tf.shape(names[0]), target))

    def op_full(self, names, ins, outs, attrs):
        shape = self.full_target(listify(attrs["shape"]), outs)
        value = self.tf.constant(attrs.get("value", 0.0), self.tf_dtype(outs[0]))
        return self.tf.fill(self.shape_tensor(shape), value)

    def op_transpose(self, names, ins, outs, attrs):
        perm = attrs.get("perm")
        return self.tf.transpose(names[0], None if perm is None else listify(perm))

    def op_expand_dims(self, names, ins, outs, attrs):
        rank = len(self.shape(outs[0]))
        x = names[0]
        for axis in sorted(a % rank for a in listify(attrs.get("axis", attrs.get("axes")))):
            x = self.tf.expand_dims(x, axis)
        return x

    def op_squeeze(self, names, ins, outs, attrs):
        axes = attrs.get("axis", attrs.get("axes"))
        return self.tf.squeeze(names[0], None if axes is None else listify(axes))

    def op_concatenate(self, names, ins, outs, attrs):
        parts = [self.cast(x, v, outs[0]) for x, v in zip(names, ins)]
        return self.tf.concat(parts, axis=int(attrs.get("axis", 0)))

    def op_stack(self, names, ins, outs, attrs):
        parts = [self.cast(x, v, outs[0]) for x, v in zip(names, ins)]
        return self.tf.stack(parts, axis=int(attrs.get("axis", 0)))

    def op_strided_slice(self, names, ins, outs, attrs):
        begin, end, strides = (listify(attrs[k]) for k in ("begin", "end", "strides"))
        ends = self.slice_ends(ins[0], begin, end, strides)
        end_mask = sum(1 << d for d, e in enumerate(ends) if e is None)
        return self.tf.strided_slice(names[0], begin, [0 if e is None else e for e in ends],
                                     strides, end_mask=end_mask)

    def op_take(self, names, ins, outs, attrs):
        tf = self.tf
        x, idx = names
        axis = attrs.get("axis")
        if axis is None:
            x, axis = tf.reshape(x, [-1]), 0
        idx = tf.cast(idx, tf.int64)
        # Negative indices count from the end, as in numpy (tf.gather rejects them).
        idx = tf.where(idx < 0, idx + tf.shape(x, out_type=tf.int64)[int(axis)], idx)
        return tf.gather(x, idx, axis=int(axis))

    def op_one_hot(self, names, ins, outs, attrs):
        return self.tf.one_hot(self.tf.cast(names[0], self.tf.int64), int(attrs["num_classes"]),
                               axis=int(attrs.get("axis", -1)), dtype=self.tf_dtype(outs[0]))

    def op_pad(self, names, ins, outs, attrs):
        tf = self.tf
        pads = listify(attrs["pads"])
        pairs = [[b, a] for b, a in zip(pads[0::2], pads[1::2])]
        mode = attrs.get("mode", "constant")
        x = names[0]
        if mode == "edge":
            # No TF mode repeats the edge: gather with clamped indices, axis by axis.
            for d, (b, a) in enumerate(pairs):
                if b or a:
                    n = tf.shape(x)[d]
                    x = tf.gather(x, tf.clip_by_value(tf.range(-b, n + a), 0, n - 1), axis=d)
            return x
        value = tf.constant(attrs.get("value", 0.0), self.tf_dtype(ins[0]))
        return tf.pad(x, pairs, mode=mode.upper(), constant_values=value)

    def op_dot_product_attention(self, names, ins, outs, attrs):
        tf = self.tf
        q, k, v = names
        logits = tf.linalg.matmul(q, k, transpose_b=True) * float(attrs["scale"])
        if attrs.get("causal"):
            rows, cols = tf.shape(logits)[-2], tf.shape(logits)[-1]
            keep = tf.cast(tf.linalg.band_part(tf.ones([rows, cols]), -1, 0), tf.bool)
            logits = tf.where(keep, logits, tf.constant(-np.inf, logits.dtype))
        return tf.linalg.matmul(tf.nn.softmax(logits, axis=-1), v)

    # Random samples: TensorFlow's stateless samplers, a pure function of the same seed as
    # the engine's (the seed generator's state is a variable the SavedModel advances), so
    # each call draws anew. Their bits are TensorFlow's, not the engine's Philox stream.

    def _random(self, sampler, names, outs, attrs, **params):
        tf = self.tf
        seed = names[0] if names else tf.constant(listify(attrs["seed"]))
        shape = self.shape_tensor(self.full_target(listify(attrs["shape"]), outs))
        return sampler(shape, seed=tf.cast(seed, tf.int64), dtype=self.tf_dtype(outs[0]), **params)

    def op_random_uniform(self, names, ins, outs, attrs):
        return self._random(self.tf.random.stateless_uniform, names, outs, attrs,
                            minval=float(attrs["minval"]), maxval=float(attrs["maxval"]))

    def op_random_normal(self, names, ins, outs, attrs):
        return self._random(self.tf.random.stateless_normal, names, outs, attrs,
                            mean=float(attrs["mean"]), stddev=float(attrs["stddev"]))

    def op_random_truncated_normal(self, names, ins, outs, attrs):
        return self._random(self.tf.random.stateless_truncated_normal, names, outs, attrs,
                            mean=float(attrs["mean"]), stddev=float(attrs["stddev"]))

    # Convolution and pooling (channels-last, as the engine).

    def op_conv(self, names, ins, outs, attrs):
        tf = self.tf
        x, w = names
        n = len(self.shape(ins[0])) - 2
        groups = int(attrs.get("groups", 1))
        conv = {
            "strides": per_dim(attrs.get("strides", [1]), n),
            "dilations": per_dim(attrs.get("dilation", [1]), n),
            "padding": attrs.get("padding", "valid").upper(),
        }
        if groups == 1:
            return tf.nn.convolution(x, w, **conv)
        # TensorFlow's CPU kernels run no grouped convolution: one per group.
        xs, ws = tf.split(x, groups, axis=-1), tf.split(w, groups, axis=-1)
        return tf.concat([tf.nn.convolution(a, b, **conv) for a, b in zip(xs, ws)], axis=-1)

    op_conv2d = op_conv

    def _pool(self, kind, names, ins, attrs):
        n = len(self.shape(ins[0])) - 2
        pool = per_dim(attrs["pool_size"], n)
        strides = per_dim(attrs.get("strides") or pool, n)
        # TensorFlow's SAME average divides by the in-bounds count, as the engine.
        return self.tf.nn.pool(names[0], pool, kind, strides=strides,
                               padding=attrs.get("padding", "valid").upper())

    def op_max_pool(self, names, ins, outs, attrs):
        return self._pool("MAX", names, ins, attrs)

    def op_avg_pool(self, names, ins, outs, attrs):
        return self._pool("AVG", names, ins, attrs)

    op_max_pool2d = op_max_pool
    op_avg_pool2d = op_avg_pool

    # Recurrent layers: Keras's cell, unrolled over the traced number of steps (a recurrent
    # layer keeps its traced length, as in ONNX), so LiteRT gets builtin ops only where a
    # tf.scan would need its Flex delegate for the TensorList ops.

    def _unroll(self, step, x, states, go_backwards):
        tf = self.tf
        steps = tf.unstack(x, axis=1)
        if go_backwards:
            # Keras returns the steps in the order it ran them (reversed).
            steps = steps[::-1]
        outputs = []
        for x_t in steps:
            states = step(states, x_t)
            outputs.append(states[0])
        return [tf.stack(outputs, axis=1)] + list(states)

    def op_lstm(self, names, ins, outs, attrs):
        tf = self.tf
        x, h0, c0, kernel, recurrent = names[:5]
        projected = tf.linalg.matmul(x, kernel)
        if len(names) > 5:
            projected += names[5]

        def step(carry, z_x):
            h, c = carry
            i, f, g, o = tf.split(z_x + tf.linalg.matmul(h, recurrent), 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        return self._unroll(step, projected, (h0, c0), attrs.get("go_backwards", False))

    def op_gru(self, names, ins, outs, attrs):
        tf = self.tf
        x, h0, kernel, recurrent = names[:4]
        projected = tf.linalg.matmul(x, kernel)
        recurrent_bias = None
        if len(names) > 4:
            bias = names[4]
            if len(self.shape(ins[4])) == 2:
                # reset_after: the input's bias row, then the recurrent one.
                projected += bias[0]
                recurrent_bias = bias[1]
            else:
                projected += bias

        def step(carry, x_proj):
            (h,) = carry
            h_proj = tf.linalg.matmul(h, recurrent)
            if recurrent_bias is not None:
                h_proj += recurrent_bias
            x_z, x_r, x_h = tf.split(x_proj, 3, axis=-1)
            h_z, h_r, h_h = tf.split(h_proj, 3, axis=-1)
            z = tf.sigmoid(x_z + h_z)
            r = tf.sigmoid(x_r + h_r)
            candidate = tf.tanh(x_h + r * h_h)
            return (z * h + (1 - z) * candidate,)

        return self._unroll(step, projected, (h0,), attrs.get("go_backwards", False))
