"""Training on KERAS_BACKEND=swift must not leak memory.

Trains the digits convnet (Examples/python/digits_convnet.py) for 2,000
optimizer steps (1,600 samples, batch 16, 20 epochs) in a fresh subprocess and
reads the process's resident set size from /proc/self/statm at the end of
every epoch. After the first epoch (allocator, thread pool and Keras caches
warm) the RSS must not grow by more than 5% by the end: a tensor, tape node or
gradient buffer leaked per step (~100 steps per epoch) would show up as steady
growth over the 19 later epochs.

The fit takes 20-30 s (the whole test 25-36 s on a loaded 2-core
machine), so it runs with the rest of the suite.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

STEPS = 2000
BATCH = 16
SAMPLES = 1600
EPOCHS = STEPS * BATCH // SAMPLES
GROWTH_LIMIT = 0.05

TRAIN = textwrap.dedent(
    f"""
    import gc, json, os, time
    try:  # activates KERAS_BACKEND=swift where no .pth file did
        import keras_swift_hook  # noqa: F401
    except ImportError:
        pass
    import keras
    from keras import layers
    from sklearn.datasets import load_digits

    assert keras.backend.backend() == "swift", keras.backend.backend()
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss_bytes():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None][:{SAMPLES}]
    y = keras.utils.to_categorical(digits.target, 10)[:{SAMPLES}]

    keras.utils.set_random_seed(42)
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    rss, steps = [], []

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            # Collect cycles first so that garbage waiting for the cyclic
            # collector is not mistaken for a leak.
            gc.collect()
            rss.append(rss_bytes())
            steps.append(self.steps)

    start = time.perf_counter()
    history = model.fit(
        x, y, batch_size={BATCH}, epochs={EPOCHS}, shuffle=True, verbose=0, callbacks=[Probe()]
    )
    print(json.dumps({{
        "rss": rss,
        "steps": steps,
        "loss": history.history["loss"],
        "seconds": time.perf_counter() - start,
    }}))
    """
)


def test_fit_rss_does_not_grow(tmp_path):
    pytest.importorskip("_swiftkeras", reason="native module _swiftkeras not built")
    pytest.importorskip("sklearn", reason="needs scikit-learn's digits data")
    env = dict(os.environ, KERAS_BACKEND="swift")
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rss, steps = result["rss"], result["steps"]
    assert len(rss) == EPOCHS and steps[-1] == STEPS, steps
    # The model trained (the run was real work, not an early exit).
    assert result["loss"][-1] < 0.5 * result["loss"][0], result["loss"]
    mib = [round(r / 2**20, 1) for r in rss]
    growth = rss[-1] / rss[0] - 1.0
    print(
        f"RSS after epoch 1: {mib[0]} MiB, after epoch {EPOCHS} ({STEPS} steps): {mib[-1]} MiB "
        f"({growth:+.1%}); max {max(mib)} MiB; fit took {result['seconds']:.1f}s"
    )
    assert growth <= GROWTH_LIMIT, f"RSS grew {growth:.1%} from epoch 1 to {EPOCHS}: {mib} MiB"
