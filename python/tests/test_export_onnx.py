"""model.export(format="onnx") on the swift backend, checked with ONNX Runtime."""

import numpy as np
import pytest
from swift_env import require_swift

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

keras = require_swift()

from keras import layers  # noqa: E402

from keras_swift.src import export as swift_export  # noqa: E402

import export_models  # noqa: E402
from export_models import rand as _rand  # noqa: E402

# A batch size unlike the trace's, so a batch dimension frozen into the graph fails.
RUN_BATCH = 3
assert RUN_BATCH != swift_export.TRACE_BATCH


def _export_and_run(model, tmp_path, inputs, **kwargs):
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False, **kwargs)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
    for i in session.get_inputs():
        assert i.shape[0] == "batch"
    return session.run(None, feeds)


def _check(model, tmp_path, inputs, **kwargs):
    expected = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    got = _export_and_run(model, tmp_path, inputs, **kwargs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def _check_built(built, tmp_path, **kwargs):
    model, make_inputs = built
    _check(model, tmp_path, make_inputs(RUN_BATCH), **kwargs)


def test_mlp(tmp_path):
    _check_built(export_models.mlp(), tmp_path)


def test_convnet_with_batchnorm(tmp_path):
    _check_built(export_models.convnet_with_batchnorm(), tmp_path)


def test_two_inputs_two_outputs(tmp_path):
    _check_built(export_models.two_inputs_two_outputs(), tmp_path)


def test_embedding(tmp_path):
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        layers.Embedding(11, 4),
        layers.GlobalAveragePooling1D(),
        layers.Dense(2),
    ])
    x = np.random.default_rng(5).integers(0, 11, size=(RUN_BATCH, 5)).astype("int32")
    _check(model, tmp_path, [x])


@pytest.mark.parametrize("layer", [layers.LSTM, layers.GRU])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_recurrent(tmp_path, layer, go_backwards):
    _check_built(export_models.recurrent(layer, go_backwards), tmp_path)


def test_unsupported_op_names_it(tmp_path):
    class Cumulative(layers.Layer):
        def call(self, x):
            return keras.ops.cumsum(x, axis=1)

    model = keras.Sequential([keras.Input((4,)), Cumulative()])
    model.predict(_rand(2, 4), verbose=0)
    with pytest.raises(NotImplementedError, match="'cumsum'"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)


def test_graph_control_flow_names_itself(tmp_path):
    class Branches(layers.Layer):
        def call(self, x):
            return keras.ops.cond(keras.ops.sum(x) > 0, lambda: x * 2.0, lambda: -x)

    model = keras.Sequential([keras.Input((4,)), Branches()])
    model.predict(_rand(2, 4), verbose=0)
    with pytest.raises(NotImplementedError, match="holds a cond step"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention(tmp_path, causal):
    _check_built(export_models.multi_head_attention(causal), tmp_path)


def test_activations_conv1d_and_pooling(tmp_path):
    x = keras.Input((9, 4))
    h = layers.Conv1D(6, 3, padding="same", activation="elu")(x)
    h = layers.DepthwiseConv1D(2, activation="selu")(h)
    h = layers.MaxPooling1D(2, padding="same")(h)
    parts = [layers.Activation(a)(h) for a in ("leaky_relu", "silu", "relu6", "softplus", "exponential")]
    h = layers.Concatenate(axis=-1)(parts)
    out = layers.Dense(3, activation="log_softmax")(layers.GlobalMaxPooling1D()(h))
    model = keras.Model(x, out)
    _check(model, tmp_path, [_rand(RUN_BATCH, 9, 4, seed=9)])


@pytest.mark.parametrize("opset", [13, 17])
def test_older_opsets(tmp_path, opset):
    # Before opset 18 the Reduce* ops (but ReduceSum) take their axes as an attribute.
    model = keras.Sequential([
        keras.Input((4, 3)),
        layers.GRU(5, return_sequences=True),
        layers.LayerNormalization(),
        layers.GlobalMaxPooling1D(),
    ])
    _check(model, tmp_path, [_rand(RUN_BATCH, 4, 3, seed=10)], opset_version=opset)
    import onnx

    assert onnx.load(str(tmp_path / "model.onnx")).opset_import[0].version == opset


def test_conv3d_grouped_conv_and_padding(tmp_path):
    model = keras.Sequential([
        keras.Input((4, 5, 6, 2)),
        layers.Conv3D(4, 2, padding="same", dilation_rate=1),
        layers.MaxPooling3D(2, padding="same"),
        layers.Reshape((2 * 3, 3, 4)),
        layers.ZeroPadding2D(((1, 0), (0, 2))),
        layers.Conv2D(6, 3, groups=2, dilation_rate=2, padding="same"),
        layers.GlobalAveragePooling2D(),
    ])
    _check(model, tmp_path, [_rand(RUN_BATCH, 4, 5, 6, 2, seed=11)])


def test_input_signature_with_a_fixed_batch_still_exports_a_dynamic_one(tmp_path):
    model = keras.Sequential([keras.Input((6,)), layers.Reshape((2, 3)), layers.Flatten(), layers.Dense(2)])
    signature = [keras.InputSpec(shape=(5, 6), dtype="float32")]
    _check(model, tmp_path, [_rand(RUN_BATCH, 6, seed=12)], input_signature=signature)


def test_dynamic_spatial_and_sequence_dims(tmp_path):
    model, inputs = export_models.dynamic_dims()
    # Keras's ONNX exporter wants a model that has been called.
    model.predict(next(inputs(1)), verbose=0)
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for x in inputs(RUN_BATCH):
        got = session.run(None, dict(zip([i.name for i in session.get_inputs()], x)))[0]
        np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_graph_describe_and_constants():
    from keras_swift.src.engine import _C

    x = keras.ops.convert_to_tensor(np.ones((2, 3), "float32"))
    w = keras.ops.convert_to_tensor(np.arange(6, dtype="float32").reshape(3, 2))
    _C.trace_begin()
    try:
        _C.trace_input(x)
        y = keras.ops.matmul(x, w)
        graph = _C.trace_end([y])
    except BaseException:
        _C.trace_abort()
        raise
    d = _C.graph_describe(graph)
    assert [n["op"] for n in d["nodes"]] == ["matmul"]
    assert d["inputs"][0]["shape"] == [2, 3] and d["outputs"][0]["shape"] == [2, 2]
    assert d["constants"] == [{"value": d["nodes"][0]["inputs"][1], "dtype": "float32", "shape": [3, 2]}]
    np.testing.assert_array_equal(np.asarray(_C.graph_constant(graph, 0)), np.asarray(w))
    with pytest.raises(IndexError, match="out of range"):
        _C.graph_constant(graph, 1)
    with pytest.raises(TypeError):
        _C.graph_describe("not a graph")


def _chain(x):
    from keras import ops

    y = ops.exp(x * 0.5) - ops.sqrt(ops.abs(x) + 1.0)
    return ops.maximum(y, x) / (ops.square(x) + 2.0) + ops.tanh(y)


def test_a_fused_elementwise_chain_lowers_to_its_ops(tmp_path):
    from keras_swift.src.engine import _C

    # The engine's graph runs the chain as fused_elementwise nodes (Program.fusingElementwise).
    x = keras.ops.convert_to_tensor(_rand(2, 5, seed=13))
    _C.trace_begin()
    try:
        _C.trace_input(x)
        graph = _C.trace_end([_chain(x)])
    except BaseException:
        _C.trace_abort()
        raise
    assert "fused_elementwise" in [n["op"] for n in _C.graph_describe(graph)["nodes"]]
    inp = keras.Input((5,))
    model = keras.Model(inp, layers.Dense(4)(layers.Lambda(_chain)(inp)))
    _check(model, tmp_path, [_rand(RUN_BATCH, 5, seed=14)])
