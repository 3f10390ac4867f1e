"""ops.custom_gradient on KERAS_BACKEND=swift: the tape uses the user's VJP."""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

from _swiftkeras import _C  # noqa: E402


def _grad(fn, *xs):
    leaves = [keras.Variable(x) for x in xs]
    _C.tape_push()
    try:
        y = ops.sum(fn(*leaves))
        return [None if g is None else ops.convert_to_numpy(g)
                for g in _C.gradient(y, [v.value for v in leaves])]
    finally:
        _C.tape_pop()


@ops.custom_gradient
def log1pexp(x):
    e = ops.exp(x)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return ops.multiply(upstream, 1.0 - 1.0 / ops.add(1, e))

    return ops.log(1 + e), grad


def test_custom_vjp_replaces_the_forward_ops():
    # Through the forward ops, d/dx log(1 + exp(100)) is inf/inf = nan.
    (g,) = _grad(log1pexp, np.array([100.0, 0.0], "float32"))
    np.testing.assert_allclose(g, [1.0, 0.5], rtol=1e-6)


def test_straight_through_round_and_two_arguments():
    @ops.custom_gradient
    def round_mul(x, y):
        def grad(upstream):
            return upstream * y, None

        return ops.round(x) * y, grad

    x = np.array([0.2, 1.7, -2.4], "float32")
    y = np.array([3.0, 3.0, 3.0], "float32")
    gx, gy = _grad(round_mul, x, y)
    np.testing.assert_allclose(gx, y)
    assert gy is None


def test_variable_argument_inside_a_layer():
    class Log1PExpLayer(layers.Layer):
        def __init__(self):
            super().__init__()
            self.v = keras.Variable(5.0, trainable=False)

        def call(self, inputs):
            return log1pexp(self.v) + inputs

    layer = Log1PExpLayer()
    (g,) = _grad(layer, np.float32(100.0))
    assert float(g) == 1.0


def test_without_a_tape_it_is_the_forward():
    out = log1pexp(ops.convert_to_tensor([0.0]))
    np.testing.assert_allclose(ops.convert_to_numpy(out), [np.log(2.0)], rtol=1e-6)


def test_errors_in_the_gradient_function_reach_the_caller():
    class Boom(Exception):
        pass

    @ops.custom_gradient
    def f(x):
        def grad(upstream):
            raise Boom("from the vjp")

        return x * 2.0, grad

    with pytest.raises(Boom, match="from the vjp"):
        _grad(f, np.ones(3, "float32"))

    @ops.custom_gradient
    def wrong_shape(x):
        return x * 2.0, lambda g: ops.ones((7,))

    with pytest.raises(ValueError, match="shape"):
        _grad(wrong_shape, np.ones(3, "float32"))


def test_trains_through_a_straight_through_estimator():
    @ops.custom_gradient
    def ste_round(x):
        return ops.round(x), lambda g: g

    class Quantized(layers.Dense):
        def call(self, x):
            return ops.matmul(x, ste_round(self.kernel * 4.0) / 4.0) + self.bias

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
    model = keras.Sequential([keras.Input((4,)), Quantized(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before / 20
