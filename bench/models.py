#!/usr/bin/env python3
"""``fit`` throughput of three small models on keras-swift next to the other backends.

Models (all trained with ``fit`` for a fixed number of optimizer steps):

- ``convnet``: the digits convnet of Examples/python/digits_convnet.py
  (Conv2D 32 + MaxPool + Conv2D 64 + MaxPool + Dropout + Dense, Adam,
  categorical cross-entropy) on scikit-learn's 8x8 digits, tiled to fill the
  steps (synthetic 8x8 images when scikit-learn is missing).
- ``lstm``: a text classifier, Embedding(1000, 64) + LSTM(64) + Dense(1,
  sigmoid), RMSprop, binary cross-entropy, on synthetic token sequences of
  length 40.
- ``transformer``: one encoder block, Embedding(1000, 64) + MultiHeadAttention
  (4 heads x 16) + residual + LayerNormalization + FFN (128, gelu) + residual +
  LayerNormalization, mean pooling, Dense(2); AdamW, sparse categorical
  cross-entropy, on synthetic token sequences of length 64.

Each (model, backend) pair runs in its own subprocess (Keras binds one backend
per process). The driver walks the models and runs every available backend of
{swift, jax, tensorflow, torch} for each one in turn, so load on a shared
machine hits all backends alike. In the worker a first ``fit`` of
``--warmup-steps`` steps absorbs tracing, JIT compilation and allocator
warm-up; the second ``fit`` of ``--steps`` steps is timed (its end waits for
the epoch's loss, so asynchronous backends have finished).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/models.py
    python bench/models.py --models lstm --backends swift,jax --steps 100 --json m.json

The defaults take a few minutes on 2 cores. ``swift/X`` is swift's samples/s
divided by X's: above 1, swift trains faster.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import (
    BACKENDS,
    activate_swift,
    describe_openblas,
    parse_backends,
    print_openblas_env,
    probe_backends,
    run_interleaved,
    run_worker,
    worker_environment,
)

MODELS = ("convnet", "lstm", "transformer")
RESULT_PREFIX = "MODELS_BENCH "
VOCAB = 1000


# --------------------------------------------------------------------------
# worker (one model on one backend, inside its own process)
# --------------------------------------------------------------------------


def make_data(model, samples, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    if model == "convnet":
        try:
            from sklearn.datasets import load_digits

            digits = load_digits()
            images, labels = digits.images / 16.0, digits.target
        except ImportError:
            images = rng.uniform(0, 1, (1797, 8, 8))
            labels = np.argmax(images.reshape(1797, -1)[:, :10], axis=1)
        idx = rng.integers(0, len(labels), samples)
        x = images[idx].astype("float32")[..., None]
        y = np.eye(10, dtype="float32")[labels[idx]]
        return x, y
    seq = 40 if model == "lstm" else 64
    x = rng.integers(1, VOCAB, (samples, seq)).astype("int32")
    # A learnable rule: is the sequence mostly low token ids?
    y = (np.mean(x < VOCAB // 2, axis=1) > 0.5).astype("int32")
    return x, (y.astype("float32")[:, None] if model == "lstm" else y)


def build(model):
    import keras
    from keras import layers

    if model == "convnet":
        net = keras.Sequential(
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
        net.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        return net
    if model == "lstm":
        net = keras.Sequential(
            [
                keras.Input(shape=(40,), dtype="int32"),
                layers.Embedding(VOCAB, 64),
                layers.LSTM(64),
                layers.Dense(1, activation="sigmoid"),
            ]
        )
        net.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
        return net
    tokens = keras.Input(shape=(64,), dtype="int32")
    x = layers.Embedding(VOCAB, 64)(tokens)
    attn = layers.MultiHeadAttention(num_heads=4, key_dim=16)(x, x)
    x = layers.LayerNormalization()(x + attn)
    ffn = layers.Dense(128, activation="gelu")(x)
    ffn = layers.Dense(64)(ffn)
    x = layers.LayerNormalization()(x + ffn)
    x = layers.GlobalAveragePooling1D()(x)
    out = layers.Dense(2)(x)
    net = keras.Model(tokens, out)
    net.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return net


def worker(args):
    backend = os.environ["KERAS_BACKEND"]
    activate_swift()
    import keras

    keras.utils.set_random_seed(args.seed)
    samples = args.steps * args.batch_size
    x, y = make_data(args.model, samples, args.seed)
    net = build(args.model)
    start = time.perf_counter()
    warm = args.warmup_steps * args.batch_size
    net.fit(x[:warm], y[:warm], batch_size=args.batch_size, epochs=1, verbose=0)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    history = net.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    result = {
        "backend": backend,
        "model": args.model,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "params": int(net.count_params()),
        "warmup_s": round(warmup_s, 3),
        "fit_s": round(seconds, 3),
        "samples_per_s": samples / seconds,
        "steps_per_s": args.steps / seconds,
        "loss": float(history.history["loss"][-1]),
        **worker_environment(backend),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def run_one(model, backend, env, args):
    cmd = [
        args.python,
        os.path.abspath(__file__),
        "--worker",
        "--models", model,
        "--steps", str(args.steps),
        "--warmup-steps", str(args.warmup_steps),
        "--batch-size", str(args.batch_size),
        "--seed", str(args.seed),
    ]  # fmt: skip
    return run_worker(cmd, env, args.timeout, RESULT_PREFIX)


def report(results, failures, backends, models, args):
    print()
    print(
        f"fit throughput: {args.steps} timed steps (+{args.warmup_steps} warm-up steps), "
        f"batch {args.batch_size}; samples/s"
    )
    print_openblas_env()
    others = [b for b in backends if b != "swift"]
    header = f"{'model':<13}" + "".join(f"{b:>12}" for b in backends)
    if "swift" in backends:
        # One column wider than the longest name, so "swift/tensorflow" stays apart.
        width = max(14, max((len("swift/" + b) + 2 for b in others), default=0))
        header += "".join(f"{'swift/' + b:>{width}}" for b in others)
    print(header)
    print("-" * len(header))
    for model in models:
        row = results.get(model, {})
        line = f"{model:<13}"
        for b in backends:
            res = row.get(b)
            line += f"{res['samples_per_s']:>12.0f}" if res else f"{'-':>12}"
        swift = row.get("swift")
        if "swift" in backends:
            for b in others:
                res = row.get(b)
                line += f"{swift['samples_per_s'] / res['samples_per_s']:>{width - 1}.2f}x" if swift and res else f"{'-':>{width}}"
        print(line)
    print("swift/X = swift samples/s / X samples/s (above 1: swift faster)")
    for model in models:
        for b, res in results.get(model, {}).items():
            print(
                f"  {model}/{b}: fit {res['fit_s']}s, warm-up {res['warmup_s']}s, "
                f"loss {res['loss']:.3f}, {res['params']} params"
            )
    seen = {}
    for row in results.values():
        for b, res in row.items():
            seen.setdefault(b, res)
    for b, res in seen.items():
        print(f"  {b}: {res.get('backend_version') or ''} OpenBLAS {describe_openblas(res['openblas'])}")
    for key, why in failures.items():
        print(f"  {key}: not run: {why}")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="default: all four")
    parser.add_argument("--models", default=",".join(MODELS), help="default: all three")
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps (60)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed first fit (5)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(args.model_names) - set(MODELS):
        parser.error(f"--models takes {', '.join(MODELS)}")
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("need --steps >= 1 and --warmup-steps >= 1")
    args.model = args.model_names[0]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    backends = parse_backends(args.backends)
    envs, failures = probe_backends(backends, args.python)
    backends = [b for b in backends if b in envs]
    results = run_interleaved(
        args.model_names, backends, envs, failures, run_one, args, lambda r: f"{r['samples_per_s']:.0f} samples/s"
    )


if __name__ == "__main__":
    sys.exit(main())
