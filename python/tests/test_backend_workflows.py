"""End-to-end Keras workflows on KERAS_BACKEND=swift, in process.

Every tensor op here runs in the Swift engine: Sequential/functional/convnet
training, callbacks, `.keras` round trips, seeded randomness, the Variable and
tensor protocols, and errors that must surface as Python exceptions.

Skipped while the native ``_swiftkeras`` module is not built, or when Keras
already runs on another backend in this process.
"""

import os

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

import _swiftkeras  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    x = (d.data[order] / 16.0).astype("float32")
    y = d.target[order].astype("int64")
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(autouse=True)
def _seed_and_tape_check():
    keras.utils.set_random_seed(1234)
    yield
    assert _swiftkeras.tape_depth() == 0, "a tape was left pushed"


def _mlp():
    return keras.Sequential(
        [
            keras.Input((64,)),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(10, activation="softmax"),
        ]
    )


def _is_swift(t):
    return isinstance(t, _swiftkeras.Tensor)


# ---------------------------------------------------------------------------
# workflows
# ---------------------------------------------------------------------------


def test_sequential_mlp_fit_evaluate_predict(digits):
    x, y, xt, yt = digits
    model = _mlp()
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] * 0.5
    loss, acc = model.evaluate(xt, yt, verbose=0)
    assert acc > 0.85, acc
    pred = model.predict(xt, verbose=0)
    assert isinstance(pred, np.ndarray)
    assert pred.shape == (len(xt), 10)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)
    assert _is_swift(model.layers[0].kernel.value)


def test_convnet_fit(digits):
    x, y, xt, yt = digits
    images = x.reshape(-1, 8, 8, 1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(2),
            layers.Conv2D(16, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.25),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    y_onehot = keras.utils.to_categorical(y, 10)
    model.fit(images, y_onehot, epochs=4, batch_size=32, verbose=0)
    _, acc = model.evaluate(
        xt.reshape(-1, 8, 8, 1), keras.utils.to_categorical(yt, 10), verbose=0
    )
    assert acc > 0.8, acc


def test_functional_model_two_branches(digits):
    x, y, xt, yt = digits
    inputs = keras.Input((64,), name="pixels")
    a = layers.Dense(32, activation="relu")(inputs)
    b = layers.Dense(32, activation="tanh")(inputs)
    merged = layers.Concatenate()([a, b])
    outputs = layers.Dense(10, activation="softmax")(merged)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
    )
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    results = model.evaluate(xt, yt, verbose=0, return_dict=True)
    assert results["sparse_categorical_accuracy"] > 0.85, results


def test_validation_split_reports_val_metrics(digits):
    x, y, _, _ = digits
    model = _mlp()
    model.compile(
        optimizer="sgd", loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        x, y, epochs=2, batch_size=64, validation_split=0.2, verbose=0
    )
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(history.history[key]) == 2, key


def test_early_stopping_and_model_checkpoint(digits, tmp_path):
    x, y, _, _ = digits
    model = _mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "best.keras")
    # lr=0 keeps the validation loss flat, so EarlyStopping must stop early.
    model.optimizer.learning_rate = 0.0
    history = model.fit(
        x,
        y,
        epochs=20,
        batch_size=128,
        validation_split=0.2,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=1),
            keras.callbacks.ModelCheckpoint(path, save_best_only=True),
        ],
    )
    assert len(history.history["loss"]) < 20
    assert os.path.exists(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0),
        rtol=1e-6, atol=1e-6,
    )


def test_keras_save_load_identical_predictions(digits, tmp_path):
    x, y, xt, _ = digits
    model = _mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    before = model.predict(xt, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded.predict(xt, verbose=0)
    np.testing.assert_array_equal(before, after)
    # the restored model keeps training
    loaded.fit(x, y, epochs=1, batch_size=64, verbose=0)


def test_train_test_predict_on_batch(digits):
    x, y, _, _ = digits
    model = _mlp()
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    first = model.train_on_batch(x[:64], y[:64])[0]
    for _ in range(20):
        last = model.train_on_batch(x[:64], y[:64])[0]
    assert last < first
    loss, acc = model.test_on_batch(x[:64], y[:64])
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0
    assert model.predict_on_batch(x[:5]).shape == (5, 10)


def test_sgd_step_matches_numpy_gradient():
    # one SGD step on y = x @ w + b with MSE: w -= lr * 2/N * x^T (xw + b - t)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    t = rng.normal(size=(16, 2)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    w = model.layers[0].kernel.numpy()
    b = model.layers[0].bias.numpy()
    model.train_on_batch(x, t)
    err = x @ w + b - t
    grad_w = 2.0 / err.size * x.T @ err
    grad_b = 2.0 / err.size * err.sum(axis=0)
    np.testing.assert_allclose(
        model.layers[0].kernel.numpy(), w - 0.1 * grad_w, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        model.layers[0].bias.numpy(), b - 0.1 * grad_b, rtol=1e-5, atol=1e-6
    )


def test_dropout_layer_trains_and_is_identity_at_inference():
    layer = layers.Dropout(0.5, seed=3)
    x = np.ones((64, 32), "float32")
    out = ops.convert_to_numpy(layer(x, training=True))
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert 0.3 < (out == 0).mean() < 0.7
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), x)
    # two training calls draw different masks (the SeedGenerator advances)
    again = ops.convert_to_numpy(layer(x, training=True))
    assert not np.array_equal(out, again)


# ---------------------------------------------------------------------------
# randomness
# ---------------------------------------------------------------------------


def test_random_with_int_seed_is_reproducible():
    a = ops.convert_to_numpy(keras.random.normal((4, 5), seed=42))
    b = ops.convert_to_numpy(keras.random.normal((4, 5), seed=42))
    c = ops.convert_to_numpy(keras.random.normal((4, 5), seed=43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    u = ops.convert_to_numpy(keras.random.uniform((1000,), 2.0, 3.0, seed=1))
    assert u.min() >= 2.0 and u.max() < 3.0
    assert abs(u.mean() - 2.5) < 0.05
    n = ops.convert_to_numpy(keras.random.normal((4000,), 1.0, 2.0, seed=1))
    assert abs(n.mean() - 1.0) < 0.15 and abs(n.std() - 2.0) < 0.15
    tn = ops.convert_to_numpy(
        keras.random.truncated_normal((4000,), 0.0, 1.0, seed=1)
    )
    assert np.abs(tn).max() <= 2.0 + 1e-6


def test_seed_generator_advances_and_set_random_seed_reproduces():
    gen = keras.random.SeedGenerator(7)
    a = ops.convert_to_numpy(keras.random.uniform((3,), seed=gen))
    b = ops.convert_to_numpy(keras.random.uniform((3,), seed=gen))
    assert not np.array_equal(a, b)
    assert ops.convert_to_numpy(gen.state).dtype == np.uint32

    def init_weights():
        keras.utils.set_random_seed(99)
        return _mlp().layers[0].kernel.numpy()

    np.testing.assert_array_equal(init_weights(), init_weights())


def test_randint_and_categorical():
    r = ops.convert_to_numpy(keras.random.randint((500,), 3, 7, seed=5))
    assert r.dtype == np.int32 and set(np.unique(r)) == {3, 4, 5, 6}
    logits = np.log(np.array([[0.1, 0.9], [0.9, 0.1]], "float32"))
    s = ops.convert_to_numpy(keras.random.categorical(logits, 400, seed=5))
    assert s.shape == (2, 400)
    assert s[0].mean() > 0.8 and s[1].mean() < 0.2


# ---------------------------------------------------------------------------
# Variable and tensor protocol
# ---------------------------------------------------------------------------


def test_variable_is_a_gradient_leaf_iff_trainable():
    v = keras.Variable(np.ones((2, 2), "float32"))
    assert v.value.requires_grad
    v.trainable = False
    assert not v.value.requires_grad
    v.trainable = True
    v.assign(np.full((2, 2), 3.0, "float32"))
    assert v.value.requires_grad
    np.testing.assert_array_equal(v.numpy(), np.full((2, 2), 3.0))
    frozen = keras.Variable(np.zeros(3, "float32"), trainable=False)
    assert not frozen.value.requires_grad
    assert not ops.is_tensor(v) and ops.is_tensor(v.value)
    np.testing.assert_array_equal(np.asarray(v + 1), np.full((2, 2), 4.0))


def test_tensor_protocol_matches_numpy():
    a = np.arange(24, dtype="float32").reshape(2, 3, 4)
    t = ops.convert_to_tensor(a)
    assert t.shape == (2, 3, 4) and t.ndim == 3 and t.dtype == "float32"
    np.testing.assert_array_equal(np.asarray(t), a)
    keys = [
        0, -1, (1, 2), (slice(None), 1), (Ellipsis, 2), (None, 0),
        (slice(None, None, -1),), (0, slice(3, None, -2)),
        (slice(1, 2), Ellipsis, None), np.array([1, 0, 1]),
        (0, [2, 0], slice(1, 3)), (slice(None), [0, 2], [1, 3]),
        (0, slice(None), [1, 3]), (a[..., 0] > 5,),
    ]
    for key in keys:
        np.testing.assert_array_equal(np.asarray(t[key]), a[key], str(key))
    np.testing.assert_array_equal(np.asarray(a + t), a + a)  # ndarray on the left
    np.testing.assert_array_equal(np.asarray(2 ** ops.convert_to_tensor([1, 2])), [2, 4])
    np.testing.assert_array_equal(np.asarray(-t), -a)
    np.testing.assert_array_equal(np.asarray(t.T), a.T)
    assert len(t) == 2 and len(list(t)) == 2
    s = ops.convert_to_tensor(3.5)
    assert float(s) == 3.5 and int(ops.convert_to_tensor(7)) == 7 and bool(s)
    assert [10, 20, 30][ops.convert_to_tensor(1)] == 20
    assert "SwiftTensor" in repr(t) and "23." in repr(t)
    with pytest.raises(ValueError):
        bool(t)
    assert hash(t) == hash(t)


def test_bfloat16_and_dtype_promotion():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([1.5, -2.25, 3.0], dtype=ml_dtypes.bfloat16)
    t = ops.convert_to_tensor(x)
    assert t.dtype == "bfloat16"
    back = ops.convert_to_numpy(t)
    assert back.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(back.astype("float32"), x.astype("float32"))
    assert ops.add(t, 1).dtype == "bfloat16"
    assert ops.add(t, 1.5).dtype == "bfloat16"
    i = ops.convert_to_tensor(np.array([1, 2], "int32"))
    assert ops.add(i, 1).dtype == "int32"
    assert ops.add(i, 1.5).dtype == "float32"
    assert ops.divide(i, i).dtype == "float32"
    assert ops.add(i, np.array([1.0, 2.0], "float16")).dtype == "float16"
    assert ops.convert_to_tensor(np.zeros(2)).dtype == "float32"  # float64 -> floatx
    assert ops.convert_to_tensor([1, 2]).dtype == "int32"
    assert ops.convert_to_tensor(True).dtype == "bool"


# ---------------------------------------------------------------------------
# errors come back as Python exceptions; the interpreter survives
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: ops.add(np.ones((2, 3)), np.ones((4, 5))), ValueError),
        (lambda: ops.matmul(np.ones((2, 3)), np.ones((4, 5))), ValueError),
        (lambda: ops.reshape(np.ones((2, 3)), (4, 4)), ValueError),
        (lambda: ops.concatenate([np.ones((2, 3)), np.ones((2, 4))]), ValueError),
        (lambda: ops.take(np.ones((3, 4)), np.array([0, 5]), axis=0), IndexError),
        (lambda: ops.take(np.ones((3, 4)), np.array([-4]), axis=0), IndexError),
        (lambda: ops.take(np.ones((3, 4)), np.array([0.5]), axis=0), TypeError),
        (lambda: ops.sum(np.ones((2, 3)), axis=5), ValueError),
        (lambda: ops.transpose(np.ones((2, 3)), (0, 0)), ValueError),
        (lambda: ops.convert_to_tensor(np.ones((2, 3)))[5], IndexError),
        (lambda: ops.convert_to_tensor(np.ones((2, 3)))["a"], IndexError),
        (lambda: ops.reshape(np.ones((2, 3)), "abc"), (TypeError, ValueError)),
        (lambda: ops.convert_to_tensor(["a", "b"]), (TypeError, ValueError)),
        (lambda: ops.cast(np.ones(3), "string"), (TypeError, ValueError)),
        (lambda: ops.one_hot(np.array([0, 1]), -3), (ValueError, IndexError)),
        (
            lambda: ops.conv(np.ones((1, 5, 5, 3), "float32"),
                             np.ones((3, 3, 2, 4), "float32")),
            ValueError,
        ),
        (lambda: keras.layers.Dense(3)(np.ones((2, 3, 4, 5, 6), "int8")[0, 0]), None),
    ],
)
def test_bad_input_raises_python_exception(call, error):
    if error is None:  # must simply work (int input promoted to float)
        call()
        return
    with pytest.raises(error):
        call()
    # the engine is still usable afterwards
    np.testing.assert_array_equal(
        ops.convert_to_numpy(ops.add(np.ones(2), 1.0)), [2.0, 2.0]
    )


def test_raw_engine_errors_are_python_exceptions():
    x = ops.convert_to_tensor(np.ones((2, 2), "float32"))
    y = ops.convert_to_tensor(np.ones((2, 2), "int32"))
    # mixed dtypes are promoted with Keras's lattice
    assert _swiftkeras.op("add", x, y).dtype == "float32"
    with pytest.raises(ValueError):
        _swiftkeras.op("matmul", x, ops.ones((3, 3)))
    with pytest.raises((ValueError, NotImplementedError)):
        _swiftkeras.op("no_such_op", x)
    with pytest.raises((TypeError, ValueError)):
        _swiftkeras.op("reshape", x, shape="bad")
    with pytest.raises((TypeError, ValueError)):
        _swiftkeras.op("add", x)  # wrong arity
    assert ops.convert_to_numpy(_swiftkeras.op("add", x, x)).sum() == 8


# ---------------------------------------------------------------------------
# gradients through the tape
# ---------------------------------------------------------------------------


def test_gradients_of_common_ops_match_finite_differences():
    from keras_swift.src.core import convert_to_tensor

    # Keras computes float64 inputs in float32 (result_type maps 64 -> 32
    # bits), so the central differences run in float32 with a wide step.
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(3, 4)).astype("float32")
    cases = {
        "tanh_sum": lambda x: ops.sum(ops.tanh(x)),
        "softmax_ce": lambda x: ops.sum(
            keras.losses.categorical_crossentropy(np.eye(4)[:3], ops.softmax(x))
        ),
        "matmul": lambda x: ops.sum(ops.square(ops.matmul(x, ops.transpose(x)))),
        "slice_concat": lambda x: ops.sum(
            ops.concatenate([x[:, 1:], x[:, :1] * 2.0], axis=1) ** 2
        ),
        "mean_max": lambda x: ops.mean(ops.max(ops.exp(x), axis=1)),
        "where_relu": lambda x: ops.sum(ops.where(x > 0, x * 3.0, ops.relu(x))),
    }
    for name, f in cases.items():
        x = convert_to_tensor(x0)
        x.requires_grad = True
        _swiftkeras.tape_push()
        try:
            y = f(x)
            (g,) = _swiftkeras.gradient(y, [x])
        finally:
            _swiftkeras.tape_pop()
        assert g is not None, name
        eps = 1e-2
        num = np.zeros_like(x0)
        for idx in np.ndindex(x0.shape):
            xp, xm = x0.copy(), x0.copy()
            xp[idx] += eps
            xm[idx] -= eps
            fp = float(f(convert_to_tensor(xp)))
            fm = float(f(convert_to_tensor(xm)))
            num[idx] = (fp - fm) / (2 * eps)
        np.testing.assert_allclose(
            ops.convert_to_numpy(g), num, rtol=2e-2, atol=2e-3, err_msg=name
        )
