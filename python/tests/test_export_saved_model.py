"""model.export(format="tf_saved_model"/"litert"/"openvino") and keras.export.ExportArchive
on the swift backend, checked by running the result with TensorFlow, its LiteRT
interpreter or OpenVINO (each test skips without what it needs)."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402

from keras_swift.src.export import graph as export_graph  # noqa: E402

import export_models  # noqa: E402
from export_models import rand as _rand  # noqa: E402

needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                              reason="needs tensorflow")

# Batch sizes unlike the trace's, so a batch dimension frozen into the graph fails.
RUN_BATCHES = (3, 1)
assert export_graph.TRACE_BATCH not in RUN_BATCHES


def _flat(x):
    if isinstance(x, dict):
        return [x[k] for k in sorted(x)]
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _check(model, make_inputs, tmp_path):
    """Export ``model``, reload it with TensorFlow and compare its ``serve`` endpoint with
    ``model.predict`` at each of ``RUN_BATCHES``. ``make_inputs(n)``: a dict, or a list
    of one array per model input."""
    import tensorflow as tf

    path = str(tmp_path / "saved")
    model.export(path, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(path)
    assert len(reloaded.variables) == len(model.variables)
    for batch in RUN_BATCHES:
        inputs = make_inputs(batch)
        if isinstance(inputs, list) and len(inputs) == 1:
            inputs = inputs[0]
        expected = _flat(model.predict(inputs, verbose=0))
        got = _flat(reloaded.serve(inputs))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            np.testing.assert_allclose(np.asarray(g), e, rtol=1e-5, atol=1e-5)
    return path


@needs_tf
def test_mlp(tmp_path):
    _check(*export_models.mlp(), tmp_path)


@needs_tf
def test_convnet_with_batchnorm(tmp_path):
    _check(*export_models.convnet_with_batchnorm(), tmp_path)


@needs_tf
@pytest.mark.parametrize("layer", [layers.LSTM, layers.GRU])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_recurrent(tmp_path, layer, go_backwards):
    _check(*export_models.recurrent(layer, go_backwards), tmp_path)


@needs_tf
def test_two_inputs_two_outputs(tmp_path):
    _check(*export_models.two_inputs_two_outputs(), tmp_path)


@needs_tf
def test_embedding_and_dict_inputs(tmp_path):
    ids = keras.Input((5,), dtype="int32", name="ids")
    extra = keras.Input((2,), name="extra")
    h = layers.GlobalAveragePooling1D()(layers.Embedding(11, 4)(ids))
    model = keras.Model({"ids": ids, "extra": extra}, layers.Dense(2)(layers.Concatenate()([h, extra])))
    ids_data = np.random.default_rng(5).integers(0, 11, size=(8, 5)).astype("int32")
    _check(model, lambda n: {"ids": ids_data[:n], "extra": _rand(n, 2, seed=5)}, tmp_path)


@needs_tf
@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention(tmp_path, causal):
    _check(*export_models.multi_head_attention(causal), tmp_path)


@needs_tf
def test_dynamic_spatial_and_sequence_dims(tmp_path):
    import tensorflow as tf

    model, inputs = export_models.dynamic_dims()
    path = str(tmp_path / "saved")
    model.export(path, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(path)
    for x in inputs(RUN_BATCHES[0]):
        np.testing.assert_allclose(reloaded.serve(x).numpy(), model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-5)


@needs_tf
def test_export_archive_endpoints_state_and_collections(tmp_path):
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), layers.Dense(3), layers.BatchNormalization()])
    model.predict(_rand(2, 4), verbose=0)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = [keras.InputSpec(shape=(None, 4), dtype="float32")]
    archive.add_endpoint("infer", lambda x: model(x, training=False), input_signature=spec)
    archive.add_endpoint("train", lambda x: model(x, training=True), input_signature=spec)
    archive.add_variable_collection("dense_weights", model.layers[0].weights)
    before = [np.asarray(v) for v in model.non_trainable_variables]
    path = str(tmp_path / "archive")
    archive.write_out(path, verbose=False)
    # Tracing the training endpoint left the model's moving statistics as they were.
    for b, v in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(b, np.asarray(v))

    reloaded = tf.saved_model.load(path)
    x = _rand(RUN_BATCHES[0], 4, seed=9)
    np.testing.assert_allclose(reloaded.infer(x).numpy(), model.predict(x, verbose=0), atol=1e-5)
    assert len(reloaded.dense_weights) == 2
    assert len(reloaded.trainable_variables) == len(model.trainable_variables)
    # The training endpoint normalises with the batch's statistics and updates the
    # reloaded moving mean as the model's own training call does.
    np.testing.assert_allclose(reloaded.train(x).numpy(), np.asarray(model(x, training=True)), atol=1e-5)
    assert len(reloaded.non_trainable_variables) == len(model.non_trainable_variables) == 2
    for copy, v in zip(reloaded.non_trainable_variables, model.non_trainable_variables):
        assert not np.allclose(copy.numpy(), before[0 if "mean" in v.name else 1])
        np.testing.assert_allclose(copy.numpy(), np.asarray(v), atol=1e-6)
    assert "serving_default" in reloaded.signatures


@needs_tf
def test_tfsm_layer_under_tensorflow(tmp_path):
    """The SavedModel loads as a ``keras.layers.TFSMLayer`` in a tensorflow-backend
    process (TFSMLayer needs that backend)."""
    model = keras.Sequential([keras.Input((5, 3)), layers.GRU(4), layers.Dense(2)])
    x = _rand(RUN_BATCHES[0], 5, 3, seed=10)
    path = str(tmp_path / "saved")
    model.export(path, format="tf_saved_model", verbose=False)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import json, numpy as np, keras
        layer = keras.layers.TFSMLayer({path!r}, call_endpoint="serve")
        y = keras.ops.convert_to_numpy(layer(np.load({str(tmp_path / 'x.npy')!r})))
        print(json.dumps(y.tolist()))
    """)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]), dtype="float32")
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@needs_tf
def test_unsupported_op_names_it(tmp_path):
    class Cumulative(layers.Layer):
        def call(self, x):
            return keras.ops.cumsum(x, axis=1)

    model = keras.Sequential([keras.Input((4,)), Cumulative()])
    with pytest.raises(NotImplementedError, match="TensorFlow export .* 'cumsum'"):
        model.export(str(tmp_path / "m"), format="tf_saved_model", verbose=False)


def test_without_tensorflow_the_error_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    with pytest.raises(ImportError, match="pip install tensorflow-cpu"):
        model.export(str(tmp_path / "m"), format="tf_saved_model", verbose=False)


@needs_tf
def test_litert(tmp_path):
    import tensorflow as tf

    model = keras.Sequential([
        keras.Input((6, 3)),
        layers.Conv1D(4, 3, padding="same", activation="relu"),
        layers.LSTM(5, return_sequences=True),
        layers.GRU(3),
        layers.Dense(2, activation="softmax"),
    ])
    path = str(tmp_path / "model.tflite")
    model.export(path, format="litert", verbose=False)
    interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    (name,) = interpreter.get_signature_list()["serving_default"]["inputs"]
    for batch in RUN_BATCHES:
        x = _rand(batch, 6, 3, seed=batch)
        (got,) = runner(**{name: x}).values()
        np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@needs_tf
@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_openvino(tmp_path):
    import openvino as ov

    model = keras.Sequential([
        keras.Input((8, 8, 2)),
        layers.Conv2D(3, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(2),
    ])
    path = str(tmp_path / "model.xml")
    model.export(path, format="openvino", verbose=False)
    compiled = ov.Core().compile_model(path, "CPU")
    for batch in RUN_BATCHES:
        x = _rand(batch, 8, 8, 2, seed=batch)
        np.testing.assert_allclose(compiled(x)[0], model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
