"""Models move between KERAS_BACKEND=jax and KERAS_BACKEND=swift through Keras's files.

A model trained and saved on one backend (``model.save(".keras")`` and
``model.save_weights(".weights.h5")``) is loaded on the other and must predict
what it predicted where it was trained (rtol 1e-5). Two models:

- ``convnet``: Conv2D + BatchNormalization + MaxPooling2D + Dense. Training
  moves BatchNormalization's non-trainable moving mean/variance away from
  their initial values, and inference reads them, so they must travel too.
- ``lstm``: Embedding + LSTM + Dense on synthetic token sequences.

Keras binds one backend per process, so each side runs in its own subprocess
(this file, run as a script).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

RTOL = 1e-5
ATOL = 1e-6
HERE = os.path.abspath(__file__)


# --------------------------------------------------------------------------
# subprocess side: ``python test_interop.py {save,load} MODEL DIR``
# --------------------------------------------------------------------------


def _data(kind):
    rng = np.random.default_rng(7)
    if kind == "convnet":
        x = rng.standard_normal((256, 12, 12, 3)).astype("float32")
        y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32") + 2 * (
            x[..., 1].mean(axis=(1, 2)) > 0
        ).astype("int32")
    else:
        x = rng.integers(1, 50, (256, 12)).astype("int32")
        y = (np.sum(x < 25, axis=1) > 6).astype("int32")
    return x, y


def _build(kind):
    import keras
    from keras import layers

    if kind == "convnet":
        return keras.Sequential(
            [
                keras.Input((12, 12, 3)),
                layers.Conv2D(8, 3, padding="same", use_bias=False),
                layers.BatchNormalization(),
                layers.Activation("relu"),
                layers.MaxPooling2D(2),
                layers.Conv2D(16, 3),
                layers.BatchNormalization(),
                layers.Activation("relu"),
                layers.Flatten(),
                layers.Dense(4),
            ]
        )
    return keras.Sequential(
        [
            keras.Input((12,), dtype="int32"),
            layers.Embedding(50, 8),
            layers.LSTM(16),
            layers.Dense(2),
        ]
    )


def _save(kind, directory):
    import keras

    keras.utils.set_random_seed(3)
    x, y = _data(kind)
    model = _build(kind)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    model.save(os.path.join(directory, "model.keras"))
    model.save_weights(os.path.join(directory, "model.weights.h5"))
    np.save(os.path.join(directory, "pred.npy"), model.predict(x[:64], verbose=0))
    stats = {
        v.path: float(np.abs(keras.ops.convert_to_numpy(v.value)).sum())
        for v in model.non_trainable_variables
    }
    return {"non_trainable": stats}


def _load(kind, directory):
    import keras

    x, _ = _data(kind)
    expected = np.load(os.path.join(directory, "pred.npy"))
    loaded = keras.saving.load_model(os.path.join(directory, "model.keras"))
    rebuilt = _build(kind)
    rebuilt.load_weights(os.path.join(directory, "model.weights.h5"))
    out = {}
    for name, model in (("keras", loaded), ("weights_h5", rebuilt)):
        got = model.predict(x[:64], verbose=0)
        out[name] = {
            "shape": list(got.shape),
            "max_abs_diff": float(np.max(np.abs(got - expected))),
            "allclose": bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL)),
            # The direct call path (not predict's data adapter) too.
            "call_allclose": bool(
                np.allclose(
                    keras.ops.convert_to_numpy(model(x[:64], training=False)),
                    expected,
                    rtol=RTOL,
                    atol=ATOL,
                )
            ),
        }
    return out


def _main(argv):
    role, kind, directory = argv
    if os.environ.get("KERAS_BACKEND") == "swift":
        try:  # activates KERAS_BACKEND=swift where no .pth file did
            import keras_swift_hook  # noqa: F401
        except ImportError:
            pass
    import keras

    result = (_save if role == "save" else _load)(kind, directory)
    result["backend"] = keras.backend.backend()
    print("INTEROP " + json.dumps(result))


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def _run(backend, role, kind, directory):
    env = dict(os.environ, KERAS_BACKEND=backend)
    out = subprocess.run(
        [sys.executable, HERE, role, kind, str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"{role} on {backend} failed:\n{out.stderr[-3000:]}"
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("INTEROP ")][-1]
    result = json.loads(line[len("INTEROP ") :])
    assert result["backend"] == backend
    return result


@pytest.mark.parametrize("kind", ["convnet", "lstm"])
@pytest.mark.parametrize("source,target", [("jax", "swift"), ("swift", "jax")])
def test_saved_model_predicts_the_same_on_the_other_backend(source, target, kind, tmp_path):
    pytest.importorskip("_swiftkeras", reason="native module _swiftkeras not built")
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    saved = _run(source, "save", kind, tmp_path)
    if kind == "convnet":
        # BatchNorm's moving statistics moved away from 0 / 1 during training,
        # so a load that dropped them would predict differently.
        stats = saved["non_trainable"]
        means = [v for k, v in stats.items() if k.endswith("moving_mean")]
        assert len(stats) == 4 and len(means) == 2 and all(m > 1e-3 for m in means), stats
    loaded = _run(target, "load", kind, tmp_path)
    for how in ("keras", "weights_h5"):
        res = loaded[how]
        assert res["allclose"] and res["call_allclose"], (
            f"{source} -> {target} via {how}: max |diff| {res['max_abs_diff']:.3g}"
        )


if __name__ == "__main__":
    _main(sys.argv[1:])
