"""keras.layers.LSTM and GRU on KERAS_BACKEND=swift run the engine's fused
``lstm`` and ``gru`` ops: the same outputs, states and gradients as Keras's
generic time loop, and a fallback to that loop for what they do not cover."""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402
from keras import ops  # noqa: E402
from keras.src import backend  # noqa: E402

from _swiftkeras import _C  # noqa: E402
from keras_swift.src import rnn as swift_rnn  # noqa: E402


@pytest.fixture
def fused_calls(monkeypatch):
    """Which fused backend calls returned a result (not NotImplementedError)."""
    calls = []

    def counting(name):
        def call(*args, **kwargs):
            out = getattr(swift_rnn, name)(*args, **kwargs)
            calls.append(name)
            return out

        return call

    monkeypatch.setattr(backend, "lstm", counting("lstm"))
    monkeypatch.setattr(backend, "gru", counting("gru"))
    return calls


def _pair(cls, **kwargs):
    """The same layer twice: the fused path, and Keras's generic loop (use_cudnn=False)."""
    fused = cls(5, **kwargs)
    generic = cls(5, use_cudnn=False, **kwargs)
    fused.build((3, 7, 4))
    generic.build((3, 7, 4))
    generic.set_weights(fused.get_weights())
    return fused, generic


def _run_with_grads(layer, x):
    xv = keras.Variable(x)
    leaves = [xv] + list(layer.trainable_variables)
    _C.tape_push()
    try:
        out = layer(xv)
        outs = out if isinstance(out, (list, tuple)) else [out]
        # Different weights per output, so every cotangent differs.
        loss = sum(
            ops.sum(o * np.linspace(-1, 1, int(np.prod(o.shape))).reshape(o.shape).astype("float32"))
            for o in outs
        )
        grads = _C.gradient(loss, [v.value for v in leaves])
        return [ops.convert_to_numpy(o) for o in outs], [ops.convert_to_numpy(g) for g in grads]
    finally:
        _C.tape_pop()


@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
def test_fused_layer_matches_the_generic_loop(fused_calls, cls, return_sequences, go_backwards, use_bias):
    x = np.random.default_rng(0).normal(size=(3, 7, 4)).astype("float32")
    fused, generic = _pair(
        cls,
        return_sequences=return_sequences,
        go_backwards=go_backwards,
        use_bias=use_bias,
        return_state=True,
    )
    outs_f, grads_f = _run_with_grads(fused, x)
    assert len(fused_calls) == 1
    outs_g, grads_g = _run_with_grads(generic, x)
    assert len(fused_calls) == 1  # the generic layer never asked for it
    for a, b in zip(outs_f, outs_g):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_f, grads_g):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_masked_and_custom_activation_layers_fall_back_to_the_loop(fused_calls):
    tokens = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 2]], "int32")
    for cls in (layers.LSTM, layers.GRU):
        model = keras.Sequential([layers.Embedding(10, 4, mask_zero=True), cls(3)])
        y = ops.convert_to_numpy(model(tokens))
        assert y.shape == (2, 3) and np.isfinite(y).all()
        cls(3, activation="relu")(np.ones((2, 5, 4), "float32"))
    layers.GRU(3, reset_after=False)(np.ones((2, 5, 4), "float32"))
    assert fused_calls == []


def test_time_major_and_float64_direct_calls():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 3))
    h0, c0 = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    w, u, b = rng.normal(size=(3, 16)), rng.normal(size=(4, 16)), rng.normal(size=16)
    t = [ops.convert_to_tensor(a, dtype="float64") for a in (x, h0, c0, w, u, b)]
    args = dict(activation=keras.activations.tanh, recurrent_activation=keras.activations.sigmoid)
    last, seq, (h, c) = swift_rnn.lstm(
        t[0], t[1], t[2], None, t[3], t[4], t[5], return_sequences=True, **args
    )
    assert seq.dtype == "float64" and tuple(seq.shape) == (2, 6, 4)
    last_tm, seq_tm, _ = swift_rnn.lstm(
        ops.transpose(t[0], (1, 0, 2)), t[1], t[2], None, t[3], t[4], t[5],
        return_sequences=True, time_major=True, **args
    )
    np.testing.assert_allclose(ops.convert_to_numpy(seq_tm).transpose(1, 0, 2), ops.convert_to_numpy(seq))
    np.testing.assert_allclose(ops.convert_to_numpy(last_tm), ops.convert_to_numpy(h))


def test_bad_shapes_raise_instead_of_crashing():
    z = ops.zeros((2, 4))
    with pytest.raises(ValueError):
        _C.op("lstm", ops.zeros((2, 3, 5)), z, z, ops.zeros((4, 16)), ops.zeros((4, 16)))
    with pytest.raises(ValueError):
        _C.op("lstm", ops.zeros((2, 3, 4)), z)


def test_jvp_through_an_lstm_uses_the_differentiable_loop(fused_calls):
    # jvp differentiates the backward pass again, which the fused kernel cannot.
    layer = layers.LSTM(3)
    x = np.random.default_rng(2).normal(size=(2, 4, 3)).astype("float32")
    tangent = np.ones_like(x)
    y, dy = ops.linalg.jvp(layer, (x,), (tangent,))
    assert fused_calls == []
    eps = 1e-2
    plus = ops.convert_to_numpy(layer(x + eps * tangent))
    minus = ops.convert_to_numpy(layer(x - eps * tangent))
    np.testing.assert_allclose(ops.convert_to_numpy(dy), (plus - minus) / (2 * eps), rtol=2e-2, atol=2e-3)
    assert fused_calls == ["lstm", "lstm"]  # the plain calls did fuse


def test_gru_time_major_matches_batch_major():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 3))
    h0 = rng.normal(size=(2, 4))
    w, u, b = rng.normal(size=(3, 12)), rng.normal(size=(4, 12)), rng.normal(size=(2, 12))
    t = [ops.convert_to_tensor(a, dtype="float64") for a in (x, h0, w, u, b)]
    args = dict(activation=keras.activations.tanh, recurrent_activation=keras.activations.sigmoid)
    _, seq, (h,) = swift_rnn.gru(t[0], t[1], None, t[2], t[3], t[4], return_sequences=True, **args)
    last_tm, seq_tm, _ = swift_rnn.gru(
        ops.transpose(t[0], (1, 0, 2)), t[1], None, t[2], t[3], t[4], time_major=True, **args
    )
    assert tuple(seq_tm.shape) == (1, 2, 4)
    np.testing.assert_allclose(ops.convert_to_numpy(seq_tm)[0], ops.convert_to_numpy(h))
    np.testing.assert_allclose(ops.convert_to_numpy(seq)[:, -1], ops.convert_to_numpy(h))


@pytest.mark.parametrize("cls", [layers.LSTM, layers.GRU])
def test_single_step_backwards_sequence_keeps_its_time_axis(fused_calls, cls):
    layer = cls(3, return_sequences=True, go_backwards=True)
    assert tuple(layer(np.ones((2, 1, 4), "float32")).shape) == (2, 1, 3)
    assert fused_calls == [cls.__name__.lower()]
