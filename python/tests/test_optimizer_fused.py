"""The fused Adam update (engine op adam_update) against Keras's generic Adam."""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()



class GenericAdam(keras.optimizers.Adam):
    """Overrides update_step, so the backend must take Keras's generic path."""

    def update_step(self, gradient, variable, learning_rate):
        return super().update_step(gradient, variable, learning_rate)


class GenericAdamW(keras.optimizers.AdamW):
    def update_step(self, gradient, variable, learning_rate):
        return super().update_step(gradient, variable, learning_rate)


def _train(optimizer, dtype="float32"):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype(dtype)
    y = rng.normal(size=(64, 2)).astype(dtype)
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh", dtype=dtype),
         keras.layers.Dense(2, dtype=dtype)]
    )
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    return [w for w in model.get_weights()], optimizer


@pytest.mark.parametrize(
    "make_fused,make_generic",
    [
        (lambda: keras.optimizers.Adam(0.01), lambda: GenericAdam(0.01)),
        (
            lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
            lambda: GenericAdamW(0.01, weight_decay=0.1),
        ),
        (
            lambda: keras.optimizers.Adam(
                keras.optimizers.schedules.ExponentialDecay(0.02, 4, 0.5), beta_1=0.8
            ),
            lambda: GenericAdam(
                keras.optimizers.schedules.ExponentialDecay(0.02, 4, 0.5), beta_1=0.8
            ),
        ),
    ],
)
def test_fused_adam_matches_keras_generic_adam(make_fused, make_generic):
    fused, opt = _train(make_fused())
    assert opt._can_fuse_adam()
    generic, opt = _train(make_generic())
    assert not opt._can_fuse_adam()
    for a, b in zip(fused, generic):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_amsgrad_and_float16_take_the_generic_path():
    opt = keras.optimizers.Adam(amsgrad=True)
    assert not opt._can_fuse_adam()
    weights, _ = _train(opt)
    assert all(np.isfinite(w).all() for w in weights)
    weights, _ = _train(keras.optimizers.Adam(0.01), dtype="float16")
    assert all(np.isfinite(w.astype("float32")).all() for w in weights)
