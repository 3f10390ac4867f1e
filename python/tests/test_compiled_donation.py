"""Compiled steps donate the old values of the variables they assign: the engine may write
the new values over the old buffers, but never where anything else can see an old value.
"""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402

import _swiftkeras  # noqa: E402


@pytest.fixture(autouse=True)
def _checks():
    yield
    assert not _swiftkeras.trace_active(), "a trace was left active"
    assert _swiftkeras.tape_depth() == 0


def _address(t):
    return np.asarray(t).ctypes.data


def _model(jit):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((12,)), layers.Dense(16, activation="relu"), layers.Dense(3)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit)
    return model


def _data():
    rng = np.random.default_rng(9)
    return rng.normal(size=(40, 12)).astype("float32"), rng.integers(0, 3, size=(40,))


class _Holder(keras.callbacks.Callback):
    """Keeps every variable's value (the tensor, and a copy of its numbers) before each step."""

    def __init__(self):
        super().__init__()
        self.held = []

    def on_train_batch_begin(self, batch, logs=None):
        variables = self.model.trainable_variables + self.model.optimizer.variables
        self.held += [(v.value, np.array(v.value)) for v in variables]


def test_values_held_elsewhere_never_change():
    x, y = _data()
    model = _model(True)
    holder = _Holder()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[holder])
    assert model.train_function.compiled.eager_reason is None
    assert len(holder.held) > 50
    for t, copy in holder.held:
        np.testing.assert_array_equal(np.asarray(t), copy)


def test_donated_training_equals_eager_and_updates_in_place():
    x, y = _data()
    compiled, eager = _model(True), _model(False)
    for m in (compiled, eager):
        m.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0, shuffle=False)
        m.train_on_batch(x[16:24], y[16:24])  # traced for train_on_batch's signature
    kernel = compiled.trainable_variables[0]
    moments = [v for v in compiled.optimizer.variables if v.shape == kernel.shape]
    before = [_address(v.value) for v in [kernel] + moments]
    for step in range(3, 5):
        batch = slice(8 * step, 8 * step + 8)
        compiled.train_on_batch(x[batch], y[batch])
        eager.train_on_batch(x[batch], y[batch])
        # Nothing but the variables held the old values: adam_update wrote over them.
        assert [_address(v.value) for v in [kernel] + moments] == before
    for a, b in zip(compiled.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    for a, b in zip(compiled.optimizer.variables, eager.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6, err_msg=a.path)


def _exp_graph():
    from keras_swift.src.engine import _C

    x = keras.ops.convert_to_tensor(np.linspace(-1, 1, 64, dtype="float32"))
    _C.trace_begin()
    try:
        _C.trace_input(x)
        graph = _C.trace_end([keras.ops.exp(x)])
    except BaseException:
        _C.trace_abort()
        raise
    return graph


def _fresh():
    return keras.ops.convert_to_tensor(np.linspace(-1, 1, 64, dtype="float32"))


def test_graph_run_donates_only_what_nothing_else_holds():
    graph = _exp_graph()
    want = np.exp(np.linspace(-1, 1, 64, dtype="float32"))
    inputs = [_fresh()]
    address = _address(inputs[0])
    (out,) = _swiftkeras.graph_run(graph, inputs, [True])
    assert inputs == [None]
    assert _address(out) == address, "exp wrote over the donated input"
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)

    kept = _fresh()
    inputs = [kept]
    (out,) = _swiftkeras.graph_run(graph, inputs, [True])
    assert inputs[0] is kept, "referenced elsewhere: not handed over"
    assert _address(out) != _address(kept)
    np.testing.assert_array_equal(np.asarray(kept), np.linspace(-1, 1, 64, dtype="float32"))

    inputs = [_fresh()]
    view = np.asarray(inputs[0])  # a buffer export references the tensor
    (out,) = _swiftkeras.graph_run(graph, inputs, [True])
    assert inputs[0] is not None
    np.testing.assert_array_equal(view, np.linspace(-1, 1, 64, dtype="float32"))


def test_graph_run_donate_rejects_bad_arguments():
    graph = _exp_graph()
    t = _fresh()
    with pytest.raises(TypeError, match="must be a list"):
        _swiftkeras.graph_run(graph, (t,), [True])
    with pytest.raises(ValueError, match="1 donate flags for 2 inputs"):
        _swiftkeras.graph_run(graph, [t, t], [True])
    with pytest.raises(TypeError, match="sequence of flags"):
        _swiftkeras.graph_run(graph, [t], 3)

    class Bad:
        def __bool__(self):
            raise RuntimeError("no truth")

    inputs = [_fresh()]
    with pytest.raises(RuntimeError, match="no truth"):
        _swiftkeras.graph_run(graph, inputs, [Bad()])
    assert inputs[0] is not None, "nothing taken before the flags were read"
    inputs = [_fresh(), "not a tensor"]
    with pytest.raises(TypeError, match=r"inputs\[1\] must be a Tensor"):
        _swiftkeras.graph_run(graph, inputs, [True, False])
    assert inputs[0] is not None, "nothing taken before every input was checked"
    # The engine rejects the call (wrong count, then wrong shape); a donated input is gone.
    inputs = [_fresh(), _fresh()]
    with pytest.raises(ValueError, match="takes 1 input"):
        _swiftkeras.graph_run(graph, inputs, [True, False])
    assert inputs[0] is None and inputs[1] is not None
    inputs = [keras.ops.convert_to_tensor(np.zeros(3, "float32"))]
    with pytest.raises(ValueError, match="as traced"):
        _swiftkeras.graph_run(graph, inputs, [True])
    assert inputs == [None]
    with pytest.raises(TypeError, match="expected a graph"):
        _swiftkeras.graph_run(object(), [_fresh()], [True])


def test_a_failed_donating_run_gives_back_what_it_did_not_take(monkeypatch):
    from keras_swift.src import compiled
    from keras_swift.src.engine import _C

    x, y = _data()
    model = _model(True)
    model.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0, shuffle=False)
    bias = model.trainable_variables[1]
    kept = bias.value  # held here: not handed over
    other = _exp_graph()

    class Failing:
        def __getattr__(self, name):
            return getattr(_C, name)

        @staticmethod
        def graph_run(graph, inputs, donate=None):
            # The engine takes the donated inputs, then rejects the call.
            return _C.graph_run(other, inputs, donate)

    monkeypatch.setattr(compiled, "_C", Failing())
    with pytest.raises(ValueError, match="takes 1 input") as info:
        model.fit(x[16:24], y[16:24], batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert bias._value is kept
    lost = [v for v in model.trainable_variables + model.optimizer.variables if v._value is None]
    assert lost, "the other assigned variables were donated"
    assert any("handed their values to the failed step" in note for note in info.value.__notes__)
