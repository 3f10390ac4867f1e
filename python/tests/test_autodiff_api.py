"""The public autodiff API on KERAS_BACKEND=swift: ``keras_swift.GradientTape``
(TensorFlow's shape) and ``keras_swift.value_and_grad`` / ``grad`` (JAX's).

Gradients are checked against central finite differences (in float32: off
TensorFlow, Keras computes float64 as float32, as JAX does) and against the
built-in trainer's own gradients; custom training (a
``train_step`` override, a stateless loop) trains, saves and reloads; higher
order (a gradient penalty) matches finite differences; misuse raises.
"""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

import keras_swift  # noqa: E402
from _swiftkeras import _C  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_tape_check():
    keras.utils.set_random_seed(7)
    yield
    assert _C.tape_depth() == 0, "a tape was left pushed"


def _np(x):
    return None if x is None else ops.convert_to_numpy(x)


# ---------------------------------------------------------------------------
# Three small models
# ---------------------------------------------------------------------------

EPS, RTOL, ATOL = 1e-3, 1e-2, 1e-3  # central differences in float32


def _f32(a):
    return np.asarray(a, "float32")


def _mlp():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            layers.Dense(6, activation="tanh"),
            layers.Dense(3),
        ]
    )
    x = _f32(np.random.default_rng(0).normal(size=(4, 5)))
    y = _f32(np.random.default_rng(1).normal(size=(4, 3)))
    return model, x, y


def _convnet():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.Conv2D(3, 3, activation="tanh"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(2),
        ]
    )
    x = _f32(np.random.default_rng(2).normal(size=(3, 6, 6, 2)))
    y = _f32(np.random.default_rng(3).normal(size=(3, 2)))
    return model, x, y


def _lstm():
    model = keras.Sequential(
        [
            keras.Input((4, 3)),
            layers.LSTM(5),
            layers.Dense(2),
        ]
    )
    x = _f32(np.random.default_rng(4).normal(size=(3, 4, 3)))
    y = _f32(np.random.default_rng(5).normal(size=(3, 2)))
    return model, x, y


MODELS = {"mlp": _mlp, "convnet": _convnet, "lstm": _lstm}
MSE = keras.losses.MeanSquaredError()


def _loss(model, x, y):
    return MSE(y, model(x, training=True))


def _finite_differences(model, x, y, eps=EPS, per_variable=4):
    """Central differences of the loss for a few entries of each trainable
    variable: {variable index: (flat indices, derivatives)}."""
    rng = np.random.default_rng(11)
    out = {}
    for i, v in enumerate(model.trainable_variables):
        base = np.array(v.numpy())
        picks = rng.choice(base.size, size=min(per_variable, base.size), replace=False)
        derivs = []
        for p in picks:
            vals = []
            for sign in (1, -1):
                w = base.copy().reshape(-1)
                w[p] += sign * eps
                v.assign(w.reshape(base.shape))
                vals.append(float(_np(_loss(model, x, y))))
            v.assign(base)
            derivs.append((vals[0] - vals[1]) / (2 * eps))
        out[i] = (picks, np.array(derivs))
    return out


def _trainer_gradients(model, x, y):
    """The gradients the built-in train step hands its optimizer."""
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=MSE)
    seen = []
    model.optimizer.apply = lambda grads, variables=None: seen.append(grads)
    model.train_on_batch(x, y)
    (grads,) = seen
    return [_np(g) for g in grads]


def _check_against_fd(grads, fd):
    for i, (picks, derivs) in fd.items():
        np.testing.assert_allclose(
            np.asarray(grads[i]).reshape(-1)[picks], derivs, rtol=RTOL, atol=ATOL
        )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_both_apis_match_finite_differences_and_the_trainer(name):
    model, x, y = MODELS[name]()
    fd = _finite_differences(model, x, y)
    trainer = _trainer_gradients(model, x, y)

    with keras_swift.GradientTape() as tape:
        loss = _loss(model, x, y)
    tape_grads = [_np(g) for g in tape.gradient(loss, model.trainable_variables)]

    def compute_loss(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return MSE(y, y_pred), non_trainable

    grad_fn = keras_swift.value_and_grad(compute_loss, has_aux=True)
    (value, _), vg_grads = grad_fn(
        [v.value for v in model.trainable_variables],
        model.non_trainable_variables,
        x,
        y,
    )
    vg_grads = [_np(g) for g in vg_grads]
    np.testing.assert_allclose(_np(value), _np(loss), rtol=1e-6)

    assert len(tape_grads) == len(vg_grads) == len(trainer) == len(model.trainable_variables)
    for a, b, c in zip(tape_grads, vg_grads, trainer):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(b, c, rtol=1e-6, atol=1e-7)
    _check_against_fd(tape_grads, fd)
    _check_against_fd(vg_grads, fd)


# ---------------------------------------------------------------------------
# GradientTape semantics
# ---------------------------------------------------------------------------


def _t(values, dtype="float32"):
    return ops.convert_to_tensor(np.asarray(values, dtype))


def test_tape_structured_sources_and_targets():
    v = keras.Variable(np.array([1.0, 2.0], "float32"))
    x = _t([3.0, -1.0])
    with keras_swift.GradientTape() as tape:
        tape.watch(x)
        a = ops.sum(v * v)
        b = v * x  # non-scalar: summed, as TensorFlow does
    grads = tape.gradient({"a": a, "b": [b]}, {"v": v, "xs": (x,)})
    assert set(grads) == {"v", "xs"} and isinstance(grads["xs"], tuple)
    np.testing.assert_allclose(_np(grads["v"]), 2 * np.array([1.0, 2.0]) + [3.0, -1.0])
    np.testing.assert_allclose(_np(grads["xs"][0]), [1.0, 2.0])
    assert not x.requires_grad, "watch() must not leave the caller's tensor a leaf"


def test_output_gradients_weight_the_target():
    x = _t([1.0, 2.0, 3.0])
    with keras_swift.GradientTape() as tape:
        tape.watch(x)
        y = x * x
    (g,) = tape.gradient(y, [x], output_gradients=_t([1.0, 0.0, -2.0]))
    np.testing.assert_allclose(_np(g), [2.0, 0.0, -12.0])


def test_unwatched_and_unconnected_sources_give_none_or_zeros():
    v = keras.Variable(np.ones(2, "float32"))
    frozen = keras.Variable(np.ones(2, "float32"), trainable=False)
    other = keras.Variable(np.ones(3, "float32"))
    x = _t([1.0, 2.0])
    with keras_swift.GradientTape(persistent=True) as tape:
        y = ops.sum(v * x * frozen)
    gv, gx, gf, go = tape.gradient(y, [v, x, frozen, other])
    np.testing.assert_allclose(_np(gv), [1.0, 2.0])
    assert gx is None and gf is None and go is None
    zeros = tape.gradient(y, [other], unconnected_gradients="zero")
    np.testing.assert_array_equal(_np(zeros[0]), np.zeros(3))
    del tape


def test_watch_accessed_variables_false_needs_watch():
    v = keras.Variable(np.ones(2, "float32"))
    w = keras.Variable(np.full(2, 2.0, "float32"))
    with keras_swift.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(w)
        y = ops.sum(v * w)
    gv, gw = tape.gradient(y, [v, w])
    assert gv is None
    np.testing.assert_allclose(_np(gw), [1.0, 1.0])


def test_persistent_tape_gives_several_gradients():
    x = _t([2.0, -1.0])
    with keras_swift.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = x * x
        z = y * y
    np.testing.assert_allclose(_np(tape.gradient(z, x)), 4 * np.array([8.0, -1.0]))
    np.testing.assert_allclose(_np(tape.gradient(y, x)), [4.0, -2.0])
    np.testing.assert_allclose(_np(tape.gradient(z, y)), 2 * np.array([4.0, 1.0]))
    assert _C.tape_depth() == 1
    del tape
    assert _C.tape_depth() == 0


def test_nested_tapes_follow_tensorflow():
    x = _t([1.0, 2.0])
    # What ran inside a nested tape stays differentiable by the outer one.
    with keras_swift.GradientTape() as outer:
        outer.watch(x)
        with keras_swift.GradientTape() as inner:
            y = ops.sum(x * x * x)
        del inner
    np.testing.assert_allclose(_np(outer.gradient(y, x)), [3.0, 12.0])
    # A persistent tape nested in a recording one: one differentiable set.
    with keras_swift.GradientTape() as outer:
        outer.watch(x)
        with keras_swift.GradientTape(persistent=True) as inner:
            inner.watch(x)
            y = ops.sum(x * x * x)
        g = inner.gradient(y, x)
        with pytest.raises(RuntimeError, match="one differentiable set"):
            inner.gradient(y, x)
    np.testing.assert_allclose(_np(outer.gradient(ops.sum(g), x)), [6.0, 12.0])


def test_stop_recording_makes_a_constant():
    x = _t([3.0])
    with keras_swift.GradientTape(persistent=True) as tape:
        tape.watch(x)
        with tape.stop_recording():
            c = x * x
            # gradient() inside stop_recording works and is not recorded.
            inner = tape.gradient(ops.sum(x * 4.0), x)
        y = ops.sum(c * x)
    assert inner is None  # x * 4 ran unrecorded
    np.testing.assert_allclose(_np(tape.gradient(y, x)), [9.0])  # c is constant
    del tape


def test_gradient_inside_a_non_persistent_block_stops_recording():
    x = _t([2.0])
    with keras_swift.GradientTape() as tape:
        tape.watch(x)
        y = ops.sum(x * x * x)
        g = tape.gradient(y, x)
        ops.sum(x * 2.0)  # not recorded anywhere any more
    np.testing.assert_allclose(_np(g), [12.0])


def test_gradient_penalty_matches_finite_differences():
    """d/dW of mean(||d model(x)/dx||^2), taken with nested tapes and with
    nested ``grad``, against central differences of the first-order
    penalty."""
    model = keras.Sequential(
        [
            keras.Input((3,)),
            layers.Dense(4, activation="tanh"),
            layers.Dense(1),
        ]
    )
    x = _f32(np.random.default_rng(9).normal(size=(5, 3)))

    def penalty():
        xt = ops.convert_to_tensor(x)
        with keras_swift.GradientTape() as inner:
            inner.watch(xt)
            pred = model(xt)
        g = inner.gradient(pred, xt)
        return ops.mean(ops.sum(g * g, axis=1))

    with keras_swift.GradientTape() as outer:
        gp = penalty()
    tape_grads = [_np(g) for g in outer.gradient(gp, model.trainable_variables)]
    assert tape_grads[-1] is None and tape_grads[0] is not None

    def input_grad(trainable, x):
        return keras_swift.grad(
            lambda xs: ops.sum(model.stateless_call(trainable, [], xs)[0])
        )(x)

    def gp_fn(trainable):
        g = input_grad(trainable, ops.convert_to_tensor(x))
        return ops.mean(ops.sum(g * g, axis=1))

    value, vg_grads = keras_swift.value_and_grad(gp_fn)([v.value for v in model.trainable_variables])
    np.testing.assert_allclose(_np(value), _np(gp), rtol=1e-6)

    eps, rng = EPS, np.random.default_rng(3)
    for i, v in enumerate(model.trainable_variables):
        base = np.array(v.numpy())
        for p in rng.choice(base.size, size=min(3, base.size), replace=False):
            vals = []
            for sign in (1, -1):
                w = base.copy().reshape(-1)
                w[p] += sign * eps
                v.assign(w.reshape(base.shape))
                vals.append(float(_np(penalty())))
            v.assign(base)
            fd = (vals[0] - vals[1]) / (2 * eps)
            for grads in (tape_grads, vg_grads):
                # The penalty does not depend on the output bias: the tape
                # says None (as TensorFlow), grad says zeros (as JAX).
                g = np.zeros(base.shape) if grads[i] is None else grads[i]
                np.testing.assert_allclose(
                    np.asarray(g).reshape(-1)[p], fd, rtol=RTOL, atol=ATOL
                )


def test_second_derivative_through_intermediates():
    # x*x*x keeps an intermediate (x*x) whose history the outer tape needs.
    x = _t([0.5, -1.0, 2.0])
    with keras_swift.GradientTape() as t2:
        t2.watch(x)
        with keras_swift.GradientTape() as t1:
            t1.watch(x)
            y = x * x * x
        dy = t1.gradient(y, x)
    d2y = t2.gradient(dy, x)
    np.testing.assert_allclose(_np(dy), 3 * _np(x) ** 2)
    np.testing.assert_allclose(_np(d2y), 6 * _np(x))
    d2 = keras_swift.grad(lambda a: ops.sum(keras_swift.grad(lambda b: ops.sum(b * b * b))(a)))
    np.testing.assert_allclose(_np(d2(x)), 6 * _np(x))


def test_sparse_input_gives_row_sparse_kernel_gradient():
    """As in the built-in train step, a Variable read only through the rows
    of a sparse product gets an IndexedSlices; equal to the dense input's."""
    from keras_swift.src.sparse import IndexedSlices
    from keras_swift.src.sparse import SparseTensor

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 6)) * (rng.random((4, 6)) < 0.3)).astype("float32")
    layer = layers.Dense(3, use_bias=False)
    layer.build((None, 6))
    grads = []
    for inputs in (SparseTensor.fromdense(x), x):
        with keras_swift.GradientTape() as tape:
            loss = ops.sum(ops.square(layer(inputs)))
        grads.append(tape.gradient(loss, layer.kernel))
    assert isinstance(grads[0], IndexedSlices) and not isinstance(grads[1], IndexedSlices)
    np.testing.assert_allclose(_np(grads[0].todense()), _np(grads[1]), rtol=1e-6, atol=1e-6)
    # value_and_grad (JAX's shape) stays dense.
    g = keras_swift.grad(lambda k: ops.sum(ops.square(ops.matmul(SparseTensor.fromdense(x), k))))(
        layer.kernel
    )
    assert not isinstance(g, SparseTensor)
    np.testing.assert_allclose(_np(g), _np(grads[1]), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# value_and_grad semantics
# ---------------------------------------------------------------------------


def test_value_and_grad_argnums_aux_and_nests():
    def f(a, b, scale):
        return ops.sum(a["w"] * b[0]) * scale + ops.sum(b[1]), "aux"

    a = {"w": np.array([1.0, 2.0], "float32")}
    b = [_t([3.0, 4.0]), _t([5.0])]
    (value, aux), (ga, gb) = keras_swift.value_and_grad(f, argnums=(0, 1), has_aux=True)(a, b, 2.0)
    assert aux == "aux"
    np.testing.assert_allclose(_np(value), 2 * 11.0 + 5.0)
    np.testing.assert_allclose(_np(ga["w"]), [6.0, 8.0])
    np.testing.assert_allclose(_np(gb[0]), [2.0, 4.0])
    np.testing.assert_allclose(_np(gb[1]), [1.0])
    # grad: gradients only; an argument fun ignores gets zeros, as in JAX.
    g = keras_swift.grad(lambda p, q: ops.sum(p * p), argnums=1)(_t([1.0]), _t([1.0, 1.0]))
    np.testing.assert_array_equal(_np(g), [0.0, 0.0])
    assert not b[0].requires_grad


def test_value_and_grad_drives_stateless_training():
    """The JAX guide's loop: stateless_call + optimizer.stateless_apply."""
    model = keras.Sequential([keras.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(1)])
    optimizer = keras.optimizers.Adam(0.05)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]

    def compute_loss_and_updates(trainable, non_trainable, x, y):
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x)
        return MSE(y, y_pred), non_trainable

    grad_fn = keras_swift.value_and_grad(compute_loss_and_updates, has_aux=True)
    # The first step takes the Variables themselves, as in the guide.
    state = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)
    losses = []
    for _ in range(60):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        state = (trainable, non_trainable, opt_vars)
        losses.append(float(_np(loss)))
    assert losses[-1] < 0.1 * losses[0], losses
    for variable, value in zip(model.trainable_variables, state[0]):
        variable.assign(value)
    np.testing.assert_allclose(_np(MSE(y, model(x))), losses[-1], rtol=0.5)


# ---------------------------------------------------------------------------
# A custom train_step
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="test_autodiff_api")
class TapeModel(keras.Model):
    def train_step(self, data):
        x, y = data
        with keras_swift.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def test_custom_train_step_trains_evaluates_saves_and_reloads(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int64")
    inputs = keras.Input((6,))
    h = layers.Dense(16, activation="relu")(inputs)
    outputs = layers.Dense(2, activation="softmax")(h)
    model = TapeModel(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0], history.history
    assert history.history["accuracy"][-1] > 0.85
    loss, acc = model.evaluate(x, y, verbose=0)
    assert acc > 0.85
    path = tmp_path / "tape_model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, TapeModel)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    reloaded.fit(x, y, epochs=1, batch_size=64, verbose=0)  # still trains


# ---------------------------------------------------------------------------
# Misuse raises clearly
# ---------------------------------------------------------------------------


def test_misuse_raises():
    x = _t([1.0])
    with pytest.raises(RuntimeError, match="needs a tape that recorded"):
        keras_swift.GradientTape().gradient(ops.sum(x), x)

    with keras_swift.GradientTape() as tape:
        tape.watch(x)
        y = ops.sum(x * x)
    tape.gradient(y, x)
    with pytest.raises(RuntimeError, match="only be called once"):
        tape.gradient(y, x)

    with keras_swift.GradientTape() as tape:
        tape.watch(x)
        y = ops.sum(x * x)
    with pytest.raises(TypeError, match="sources must be tensors"):
        tape.gradient(y, [x, np.ones(1)])
    with pytest.raises(TypeError, match="target must be a tensor"):
        tape.gradient(1.0, x)
    with pytest.raises(ValueError, match="output_gradients"):
        tape.gradient(y, x, output_gradients=[_t(1.0), _t(1.0)])
    with pytest.raises(TypeError, match="watch"):
        tape.watch("x")
    tape.gradient(y, x)  # the failures above left the tape usable

    with pytest.raises(ValueError, match="stop_recording"):
        with tape.stop_recording():
            pass
    with pytest.raises(ValueError, match="already recording"):
        with keras_swift.GradientTape() as tape:
            with tape:
                pass

    with pytest.raises(TypeError, match="scalar output"):
        keras_swift.value_and_grad(lambda a: a * 2)(_t([1.0, 2.0]))
    with pytest.raises(TypeError, match="floating-point inputs"):
        keras_swift.grad(lambda a: ops.sum(a))(np.array([1, 2], "int32"))
    with pytest.raises(TypeError, match="pair"):
        keras_swift.value_and_grad(lambda a: ops.sum(a), has_aux=True)(_t([1.0]))
    with pytest.raises(TypeError, match="argnums"):
        keras_swift.grad(lambda a: ops.sum(a), argnums=2)(_t([1.0]))
    with pytest.raises(TypeError, match="argnums"):
        keras_swift.grad(lambda a: ops.sum(a), argnums="0")


def test_unrelated_open_tape_blocks_an_older_tapes_gradient():
    x = _t([1.0])
    with keras_swift.GradientTape() as first:
        first.watch(x)
        y = ops.sum(x * x)
    with keras_swift.GradientTape() as second:
        with pytest.raises(RuntimeError, match="innermost"):
            first.gradient(y, x)
    del second
    # Once the later tape is gone, the first one's record is on top again.
    np.testing.assert_allclose(_np(first.gradient(y, x)), [2.0])


def test_a_failing_block_releases_its_tape():
    x = _t([1.0])
    with pytest.raises(ZeroDivisionError):
        with keras_swift.GradientTape() as tape:
            tape.watch(x)
            1 / 0
    assert _C.tape_depth() == 0
    with pytest.raises(RuntimeError):
        tape.gradient(ops.sum(x), x)
