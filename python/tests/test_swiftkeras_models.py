"""Models trained and saved by Keras on the swift backend run with no Python: through the
`keras-swift` command line (Sources/KerasSwiftCLI) and from C through the model ABI
(Examples/c/predict_model.c against libSwiftKerasC, te_model.h), predicting what Keras
predicts within 1e-5. Built into .build-test/debug by `swift build`; set KERAS_SWIFT_BIN_DIR to
use another build (scripts/test.sh uses its AddressSanitizer build, and sets
KERAS_SWIFT_BIN_SANITIZE=address so that the C program links the same ASan runtime)."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HEADER_DIR = REPO / "Sources" / "TensorEngineC" / "include"
SWIFT_BIN_DIR = Path(os.environ.get("KERAS_SWIFT_BIN_DIR", REPO / ".build-test" / "debug"))
CLI = SWIFT_BIN_DIR / "keras-swift"
# An ASan build's library needs its executable built with Swift's clang and -fsanitize=address.
SANITIZE = os.environ.get("KERAS_SWIFT_BIN_SANITIZE")


def _mlp():
    return keras.Sequential([keras.Input((6,)), layers.Dense(16, activation="relu"), layers.Dropout(0.2),
                             layers.Dense(3, activation="softmax")])


def _convnet():
    return keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, padding="same", activation="relu"),
                             layers.BatchNormalization(), layers.MaxPooling2D(2), layers.Conv2D(4, 3),
                             layers.GlobalAveragePooling2D(), layers.Dense(3, activation="softmax")])


def _recurrent():
    inp = keras.Input((5, 3))
    x = layers.LSTM(4, return_sequences=True)(inp)
    x = layers.Bidirectional(layers.GRU(3))(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax")(x))


def _two_in_two_out():
    a, b = keras.Input((6,), name="a"), keras.Input((4, 3), name="b")
    shared = layers.Dense(4, activation="tanh")
    ha, hb = shared(a), shared(layers.Dense(6)(layers.Flatten()(layers.Conv1D(2, 2, padding="same")(b))))
    merged = layers.Concatenate()([ha, hb, layers.Multiply()([ha, hb])])
    return keras.Model([a, b], [layers.Dense(3, activation="softmax", name="cls")(merged),
                                layers.Dense(1, name="reg")(layers.Add()([ha, hb]))])


def _attention():
    inp = keras.Input((5, 6))
    x = layers.MultiHeadAttention(num_heads=2, key_dim=3)(inp, inp)
    x = layers.LayerNormalization()(layers.Add()([inp, x]))
    return keras.Model(inp, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(x)))


def _nested():
    inner = keras.Sequential([keras.Input((6,)), layers.Dense(5, activation="relu"), layers.Dense(4)])
    head_in = keras.Input((4,))
    head = keras.Model(head_in, layers.Dense(3)(head_in))
    inp = keras.Input((6,))
    body = keras.Model(inp, layers.Add()([head(inner(inp)), layers.Dense(3)(inp)]))
    return keras.Sequential([keras.Input((6,)), body, layers.Softmax()])


MODELS = {"mlp": _mlp, "convnet": _convnet, "recurrent": _recurrent, "two_in_two_out": _two_in_two_out,
          "attention": _attention, "nested": _nested}


def _data(model, rng, n):
    return [rng.normal(size=(n,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each model trained for two epochs on the swift backend, saved, with an input batch and
    Keras's predictions for it."""
    folder = tmp_path_factory.mktemp("swiftkeras_models")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    out = {}
    for name, build in MODELS.items():
        model = build()
        xs = _data(model, rng, 32)
        ys = [rng.integers(0, 3, size=(32,)) if o.shape[-1] == 3 else rng.normal(size=(32, 1)).astype("float32")
              for o in model.outputs]
        model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy" if o.shape[-1] == 3 else "mse"
                                              for o in model.outputs])
        model.fit(xs if len(xs) > 1 else xs[0], ys if len(ys) > 1 else ys[0], epochs=2, batch_size=8, verbose=0)
        path = folder / f"{name}.keras"
        model.save(path)
        x_test = _data(model, rng, 4)
        want = model.predict(x_test if len(x_test) > 1 else x_test[0], verbose=0)
        want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
        inputs = []
        for i, x in enumerate(x_test):
            inputs.append(folder / f"{name}.in{i}.npy")
            np.save(inputs[-1], x)
        out[name] = (path, inputs, want)
    return out


def _require(path, what):
    if not path.exists():
        pytest.skip(f"{path} is not built ({what}; scripts/test.sh builds it, or set KERAS_SWIFT_BIN_DIR)")


@pytest.mark.parametrize("name", list(MODELS))
def test_keras_swift_predict_matches_keras(trained, name, tmp_path):
    _require(CLI, "the keras-swift tool")
    path, inputs, want = trained[name]
    out = tmp_path / ("out.npz" if len(want) > 1 else "out.npy")
    run = subprocess.run([str(CLI), "predict", str(path), *map(str, inputs), "-o", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    if len(want) == 1:
        got = [np.load(out)]
    else:
        with np.load(out) as z:
            got = [z[k] for k in z.files]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_keras_swift_summary_and_errors(trained, tmp_path):
    _require(CLI, "the keras-swift tool")
    path, inputs, _ = trained["two_in_two_out"]
    text = subprocess.run([str(CLI), "summary", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Total params:" in text and "(Concatenate)" in text and "Connected to" in text
    # Too few inputs, and a model with a Lambda layer: an error message, not a crash.
    bad = subprocess.run([str(CLI), "predict", str(path), str(inputs[0]), "-o", str(tmp_path / "o.npz")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "takes 2 input" in bad.stderr
    lam = keras.Sequential([keras.Input((3,)), layers.Lambda(lambda t: t * 2)])
    lam.save(tmp_path / "lambda.keras")
    bad = subprocess.run([str(CLI), "summary", str(tmp_path / "lambda.keras")], capture_output=True, text=True)
    assert bad.returncode == 1 and "Lambda" in bad.stderr


@pytest.fixture(scope="module")
def predict_model_exe(tmp_path_factory):
    cc = shutil.which("clang") if SANITIZE else shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    _require(SWIFT_BIN_DIR / "libSwiftKerasC.so", "the SwiftKerasC library")
    exe = tmp_path_factory.mktemp("c") / "predict_model"
    sanitize = [f"-fsanitize={SANITIZE}"] if SANITIZE else []
    subprocess.run([cc, "-O1", "-Wall", "-Werror", *sanitize, str(REPO / "Examples" / "c" / "predict_model.c"), f"-I{HEADER_DIR}",
                    f"-L{SWIFT_BIN_DIR}", "-lSwiftKerasC", "-lpthread", f"-Wl,-rpath,{SWIFT_BIN_DIR}", "-o", str(exe)],
                   check=True)
    return exe


@pytest.mark.parametrize("name", list(MODELS))
def test_c_example_predicts_like_keras(trained, predict_model_exe, name, tmp_path):
    path, inputs, want = trained[name]
    run = subprocess.run([str(predict_model_exe), str(path), str(tmp_path), *map(str, inputs)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "concurrent predictions agree" in run.stdout
    for i, w in enumerate(want):
        np.testing.assert_allclose(np.load(tmp_path / f"output_{i}.npy"), w, atol=1e-5, rtol=0)
    missing = subprocess.run([str(predict_model_exe), str(tmp_path / "nope.keras"), str(tmp_path), *map(str, inputs)],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "nope.keras" in missing.stderr


@pytest.mark.parametrize("name", ["convnet", "recurrent", "attention"])
def test_models_trained_by_swift_load_in_keras(trained, name, tmp_path):
    """`keras-swift fit` trains a Keras-saved model from fresh weights (BatchNorm's moving
    statistics, LSTM/GRU/Bidirectional, MultiHeadAttention) with no Python; Keras loads the
    result and predicts what `keras-swift predict` predicts."""
    _require(CLI, "the keras-swift tool")
    path, inputs, _ = trained[name]
    rng = np.random.default_rng(1)
    model = keras.models.load_model(path)
    x = _data(model, rng, 24)[0]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", rng.integers(0, 3, size=(24,)).astype("int32"))
    out = tmp_path / "swift_trained.keras"
    run = subprocess.run([str(CLI), "fit", str(path), "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy"),
                          "--loss", "sparse_categorical_crossentropy", "--metrics", "accuracy", "--epochs", "2",
                          "--batch-size", "8", "--init", "--seed", "3", "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Epoch 2/2" in run.stdout and "accuracy:" in run.stdout
    loaded = keras.models.load_model(out)
    before = [np.asarray(w) for w in model.weights]
    after = [np.asarray(w) for w in loaded.weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), "fit left every weight as it was"
    if name == "convnet":
        bn = next(layer for layer in loaded.layers if isinstance(layer, layers.BatchNormalization))
        assert not np.allclose(np.asarray(bn.moving_mean), 0), "moving mean never updated"
    pred = tmp_path / "pred.npy"
    subprocess.run([str(CLI), "predict", str(out), str(inputs[0]), "-o", str(pred)], check=True)
    np.testing.assert_allclose(loaded.predict(np.load(inputs[0]), verbose=0), np.load(pred), atol=1e-5, rtol=0)


def test_swift_digits_convnet_example_loads_in_keras(tmp_path):
    """Examples/DigitsConvnet builds and trains a convnet with SwiftKeras layers and saves a
    .keras file; Keras loads it and predicts what Swift predicted."""
    exe = SWIFT_BIN_DIR / "DigitsConvnet"
    _require(exe, "the DigitsConvnet example")
    out = tmp_path / "digits.keras"
    run = subprocess.run([str(exe), "--epochs", "2", "-o", str(out), "--export", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "test accuracy" in run.stdout
    model = keras.models.load_model(out)
    assert [type(layer).__name__ for layer in model.layers][:3] == ["Conv2D", "BatchNormalization", "MaxPooling2D"]
    got = model.predict(np.load(tmp_path / "x_test.npy"), verbose=0)
    np.testing.assert_allclose(got, np.load(tmp_path / "y_swift.npy"), atol=1e-5, rtol=0)


def _regularized():
    reg, con = keras.regularizers, keras.constraints
    return keras.Sequential([
        keras.Input((6,)),
        layers.Dense(8, activation="relu", kernel_regularizer=reg.L1L2(0.001, 0.01), bias_regularizer=reg.L2(0.01),
                     activity_regularizer=reg.L1(0.01), kernel_constraint=con.MaxNorm(0.8)),
        layers.ActivityRegularization(l1=0.001, l2=0.01),
        layers.Dense(6, activation="tanh", kernel_regularizer=reg.OrthogonalRegularizer(0.05),
                     kernel_constraint=con.MinMaxNorm(0.2, 0.9, rate=0.5)),
        layers.BatchNormalization(gamma_regularizer=reg.L2(0.02), beta_constraint=con.NonNeg()),
        layers.Dense(3, activation="softmax", kernel_constraint=con.UnitNorm(), bias_constraint=con.NonNeg()),
    ])


OPTIMIZERS = {
    "adam_schedule": lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=3,
                                                                                               decay_rate=0.8)),
    "rmsprop_centered": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_compiled_model_continues_in_swift_as_in_keras(tmp_path, opt):
    """A model Keras compiled and trained (weight and activity regularizers, constraints, an
    optimizer with a learning-rate schedule or variable) continues training in `keras-swift
    fit` from its saved compile state as it continues in Keras: the same epoch losses
    (penalties included), and the file Swift saves loads compiled in Keras with the same
    weights and optimizer variables."""
    _require(CLI, "the keras-swift tool")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(24, 6)).astype("float32")
    y = rng.integers(0, 3, size=(24,)).astype("int32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    model = _regularized()
    model.compile(optimizer=OPTIMIZERS[opt](), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    model.save(tmp_path / "a.keras")
    want = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0).history

    out, hist = tmp_path / "b.keras", tmp_path / "h.json"
    run = subprocess.run([str(CLI), "fit", str(tmp_path / "a.keras"), "--x", str(tmp_path / "x.npy"), "--y",
                          str(tmp_path / "y.npy"), "--epochs", "2", "--batch-size", "8", "--no-shuffle", "-o", str(out),
                          "--history", str(hist)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "uncompiled" not in run.stderr and "eagerly" not in run.stderr, run.stderr
    import json
    got = json.loads(hist.read_text())
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=0, atol=5e-5)
    np.testing.assert_allclose(got["accuracy"], want["accuracy"], rtol=0, atol=1e-6)

    loaded = keras.models.load_model(out)
    assert loaded.compiled and type(loaded.optimizer) is type(model.optimizer)
    # Keras numbers an optimizer's name per process ("adam_6"); Swift writes the class's ("adam").
    assert {**loaded.optimizer.get_config(), "name": None} == {**model.optimizer.get_config(), "name": None}
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 9
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-4, err_msg=a.path)
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5, err_msg=b.path)
    # One more step in Keras from each: the same loss.
    a = loaded.train_on_batch(x[:8], y[:8])
    b = model.train_on_batch(x[:8], y[:8])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_compile_swift_cannot_restore_loads_uncompiled(tmp_path):
    """A compile_config naming an optimizer SwiftKeras lacks: `keras-swift fit` without --loss
    says so (one warning naming it, then a clear error), with --loss it trains."""
    _require(CLI, "the keras-swift tool")
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adafactor(), loss="mse")
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", np.ones((4, 3), "float32"))
    np.save(tmp_path / "y.npy", np.ones((4, 2), "float32"))
    args = [str(CLI), "fit", str(tmp_path / "m.keras"), "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy"),
            "-o", str(tmp_path / "o.keras")]
    run = subprocess.run(args, capture_output=True, text=True)
    assert run.returncode == 1 and "Adafactor" in run.stderr and "give --loss" in run.stderr, run.stderr
    run = subprocess.run(args + ["--loss", "mse"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert type(keras.models.load_model(tmp_path / "o.keras").optimizer).__name__ == "Adam"
