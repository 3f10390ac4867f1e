#!/usr/bin/env python3
"""Whole-step speed of keras-swift next to the other backends: the four workloads of
issue 19 ("Compiled steps"), each measured for ``fit``, ``predict``, single-sample
``predict_on_batch`` latency and peak RSS during ``fit``.

Workloads (shapes and batch sizes are the issue's; data is synthetic, from one
numpy seed, so every backend sees the same values):

- ``mlp``: Dense 784-512-512-10 (relu, relu, softmax), Adam, sparse categorical
  cross-entropy, batch 128 (the data of bench/mlp_fit.py).
- ``convnet``: Keras's MNIST convnet on 28x28x1 images: Conv2D 32 (3x3, relu) ->
  MaxPool 2 -> Conv2D 64 (3x3, relu) -> MaxPool 2 -> Flatten -> Dropout 0.5 ->
  Dense 10 (softmax), Adam, categorical cross-entropy, batch 128.
- ``lstm``: Embedding(20000, 128) -> LSTM(64) -> Dense(1, sigmoid), Adam, binary
  cross-entropy, token sequences of length 200, batch 64.
- ``transformer``: token + position embedding (Embedding(20000, 32) plus
  Embedding(200, 32) of the positions) -> one encoder block (MultiHeadAttention,
  2 heads, key_dim 32, Dropout 0.1, residual, LayerNorm; FFN Dense 64 relu ->
  Dense 32, Dropout 0.1, residual, LayerNorm) -> GlobalAveragePooling1D ->
  Dropout 0.1 -> Dense 20 relu -> Dropout 0.1 -> Dense(2, softmax), Adam, sparse
  categorical cross-entropy, length 200, batch 64 (Keras's text-classification
  Transformer example).

Every model is compiled as a new user would: the optimizer, loss and
``metrics=["accuracy"]`` only, so ``jit_compile`` stays ``"auto"`` (what each
backend resolved it to is reported).

Each (workload, backend) pair runs in one fresh subprocess (Keras binds one backend
per process); the driver walks the workloads and runs every available backend of
{swift, jax, tensorflow, torch} for each in turn, rotating which goes first, so
load on a shared machine hits all backends alike. Inside the worker, in order:

1. ``fit``: a warm-up ``fit`` of ``--warmup-steps`` batches (tracing, compilation,
   allocator warm-up) is excluded; then one ``fit`` of ``--repeats`` epochs over a
   dataset of ``steps`` batches, each epoch timed on its own (an epoch ends after
   Keras has pulled its logs to the host, so asynchronous backends have finished).
   Reported: samples/s of the median epoch.
2. Peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` read right after the
   timed ``fit``, before anything else runs, so it is the process's peak through
   imports, data, model build and both ``fit`` calls, and ``predict`` cannot hide
   or raise it. It includes the Python interpreter, the framework and the dataset
   (the same arrays for every backend); the value read before the first ``fit`` is
   reported beside it to show what ``fit`` itself added.
3. ``predict``: a warm-up ``predict`` of ``--warmup-steps`` batches, then
   ``--repeats`` timed ``predict`` calls over the dataset at the workload's batch
   size (Keras's default would be 32); samples/s of the median call.
4. Latency: ``predict_on_batch`` on one sample, 10 warm-up calls, then the median
   of ``--latency-calls`` calls, in microseconds (it returns numpy, so it waits).

The table gives each metric per backend and swift's ratio next to the issue's
target: fit and predict samples/s as swift / the best other backend (target
>= 1.2x, higher is better); latency and peak RSS as swift / jax (targets <= 0.8x
and <= 0.5x, lower is better).

Run it as a benchmark on an otherwise idle machine with OpenBLAS free to pick its
own kernel and cache sizes (both variables override its CPU detection, so unset
them together); the report prints whether they were set and which OpenBLAS
library and kernel ("core") each backend's process loaded — record both with
the numbers:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/steps.py --json steps.json
    python bench/steps.py --workloads lstm,transformer --backends swift,jax
    python bench/steps.py --quick --backends swift,jax     # smoke test, ~2 min

The defaults take about 10 minutes with swift and jax on 2 idle cores (estimated
from the issue's samples/s; roughly twice that with tensorflow and torch too) and
keep each dataset under 40 MB, so it weighs little in the RSS figures;
``--steps`` (batches per epoch and per predict call, for every workload),
``--repeats`` and ``--latency-calls`` scale it down or up. ``--quick`` took 2.5
minutes with swift and jax on a busy 2-core machine.
Compare ratios from one run only: on a shared machine absolute times drift.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from _common import (
    BACKENDS,
    activate_swift,
    describe_openblas,
    epoch_timer,
    parse_backends,
    print_openblas_env,
    probe_backends,
    run_interleaved,
    run_worker,
    worker_environment,
)

RESULT_PREFIX = "STEPS_BENCH "
VOCAB = 20000
SEQ_LEN = 200

# name: (batch size, batches per epoch by default, with --quick)
WORKLOADS = {
    "mlp": (128, 100, 20),
    "convnet": (128, 80, 8),
    "lstm": (64, 60, 6),
    "transformer": (64, 60, 6),
}
DEFAULT_REPEATS, QUICK_REPEATS = 10, 2
DEFAULT_LATENCY_CALLS, QUICK_LATENCY_CALLS = 300, 30
LATENCY_WARMUP_CALLS = 10

# (metric key, label, format, how swift's ratio is taken, target, higher is better)
METRICS = (
    ("fit_samples_per_s", "fit samples/s", ".0f", "best", 1.2, True),
    ("predict_samples_per_s", "predict samples/s", ".0f", "best", 1.2, True),
    ("latency_us", "predict_on_batch(1) us", ".0f", "jax", 0.8, False),
    ("fit_peak_rss_mb", "peak RSS in fit, MB", ".0f", "jax", 0.5, False),
)


# --------------------------------------------------------------------------
# worker (one workload on one backend, inside its own process)
# --------------------------------------------------------------------------


def peak_rss_mb():
    """This process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def make_data(workload, samples, seed):
    import numpy as np

    if workload == "mlp":
        from mlp_fit import make_data as mlp_data

        return mlp_data(samples, seed)
    rng = np.random.default_rng(seed)
    if workload == "convnet":
        x = rng.uniform(0, 1, (samples, 28, 28, 1)).astype("float32")
        # Labels from a fixed projection of the pixels, so the loss can fall.
        projection = rng.standard_normal((28 * 28, 10)).astype("float32")
        labels = np.argmax((x.reshape(samples, -1) - 0.5) @ projection, axis=1)
        return x, np.eye(10, dtype="float32")[labels]
    x = rng.integers(1, VOCAB, (samples, SEQ_LEN)).astype("int32")
    # A learnable rule: is the sequence mostly low token ids?
    y = (np.mean(x < VOCAB // 2, axis=1) > 0.5).astype("int32")
    return x, (y.astype("float32")[:, None] if workload == "lstm" else y)


def token_and_position_embedding(vocab, seq_len, dim):
    from keras import layers, ops

    class TokenAndPositionEmbedding(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.token_emb = layers.Embedding(vocab, dim)
            self.pos_emb = layers.Embedding(seq_len, dim)

        def call(self, x):
            positions = ops.arange(0, ops.shape(x)[-1], dtype="int32")
            return self.token_emb(x) + self.pos_emb(positions)

    return TokenAndPositionEmbedding()


def build(workload):
    import keras
    from keras import layers

    if workload == "mlp":
        model = keras.Sequential(
            [
                keras.Input((784,)),
                layers.Dense(512, activation="relu"),
                layers.Dense(512, activation="relu"),
                layers.Dense(10, activation="softmax"),
            ]
        )
        loss = "sparse_categorical_crossentropy"
    elif workload == "convnet":
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(32, 3, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Conv2D(64, 3, activation="relu"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dropout(0.5),
                layers.Dense(10, activation="softmax"),
            ]
        )
        loss = "categorical_crossentropy"
    elif workload == "lstm":
        model = keras.Sequential(
            [
                keras.Input((SEQ_LEN,), dtype="int32"),
                layers.Embedding(VOCAB, 128),
                layers.LSTM(64),
                layers.Dense(1, activation="sigmoid"),
            ]
        )
        loss = "binary_crossentropy"
    else:
        dim = 32
        tokens = keras.Input((SEQ_LEN,), dtype="int32")
        x = token_and_position_embedding(VOCAB, SEQ_LEN, dim)(tokens)
        attn = layers.MultiHeadAttention(num_heads=2, key_dim=dim)(x, x)
        x = layers.LayerNormalization(epsilon=1e-6)(x + layers.Dropout(0.1)(attn))
        ffn = layers.Dense(64, activation="relu")(x)
        ffn = layers.Dense(dim)(ffn)
        x = layers.LayerNormalization(epsilon=1e-6)(x + layers.Dropout(0.1)(ffn))
        x = layers.GlobalAveragePooling1D()(x)
        x = layers.Dropout(0.1)(x)
        x = layers.Dense(20, activation="relu")(x)
        x = layers.Dropout(0.1)(x)
        model = keras.Model(tokens, layers.Dense(2, activation="softmax")(x))
        loss = "sparse_categorical_crossentropy"
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return model


def worker(args):
    backend = os.environ["KERAS_BACKEND"]
    activate_swift()
    import keras

    workload = args.workload
    batch = WORKLOADS[workload][0]
    steps = args.steps_for[workload]
    samples = steps * batch
    keras.utils.set_random_seed(args.seed)
    x, y = make_data(workload, samples, args.seed)
    model = build(workload)
    rss_before_fit = peak_rss_mb()


    warm = min(args.warmup_steps, steps) * batch
    start = time.perf_counter()
    model.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, verbose=0)
    fit_warmup_s = time.perf_counter() - start
    timer = epoch_timer(keras)
    history = model.fit(
        x, y, batch_size=batch, epochs=args.repeats, shuffle=False, callbacks=[timer], verbose=0
    )
    fit_peak_rss = peak_rss_mb()

    start = time.perf_counter()
    model.predict(x[:warm], batch_size=batch, verbose=0)
    predict_warmup_s = time.perf_counter() - start
    predict_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.predict(x, batch_size=batch, verbose=0)
        predict_times.append(time.perf_counter() - start)

    one = x[:1]
    for _ in range(LATENCY_WARMUP_CALLS):
        model.predict_on_batch(one)
    latencies = []
    for _ in range(args.latency_calls):
        start = time.perf_counter()
        model.predict_on_batch(one)
        latencies.append(time.perf_counter() - start)
    latencies.sort()

    fit_epoch_s = statistics.median(timer.times)
    predict_s = statistics.median(predict_times)
    result = {
        "backend": backend,
        "workload": workload,
        "batch_size": batch,
        "steps": steps,
        "repeats": args.repeats,
        "params": int(model.count_params()),
        "jit_compile": model.jit_compile,
        "fit_samples_per_s": samples / fit_epoch_s,
        "fit_epoch_s": [round(t, 4) for t in timer.times],
        "fit_warmup_s": round(fit_warmup_s, 3),
        "loss": [float(v) for v in history.history["loss"]],
        "predict_samples_per_s": samples / predict_s,
        "predict_s": [round(t, 4) for t in predict_times],
        "predict_warmup_s": round(predict_warmup_s, 3),
        "latency_us": statistics.median(latencies) * 1e6,
        "latency_p10_p90_us": [
            latencies[len(latencies) // 10] * 1e6,
            latencies[(len(latencies) * 9) // 10] * 1e6,
        ],
        "latency_calls": len(latencies),
        "rss_before_fit_mb": round(rss_before_fit, 1),
        "fit_peak_rss_mb": round(fit_peak_rss, 1),
        "final_peak_rss_mb": round(peak_rss_mb(), 1),
        "data_mb": round((x.nbytes + y.nbytes) / 2**20, 1),
        **worker_environment(backend),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def run_one(workload, backend, env, args):
    cmd = [
        args.python,
        os.path.abspath(__file__),
        "--worker",
        "--workloads", workload,
        "--steps", str(args.steps_for[workload]),
        "--repeats", str(args.repeats),
        "--latency-calls", str(args.latency_calls),
        "--warmup-steps", str(args.warmup_steps),
        "--seed", str(args.seed),
    ]  # fmt: skip
    return run_worker(cmd, env, args.timeout, RESULT_PREFIX)


def swift_ratio(row, key, against):
    """(swift's value / the reference's, the reference backend), or (None, why)."""
    swift = row.get("swift")
    if swift is None:
        return None, "no swift"
    if against == "best":
        others = {b: res[key] for b, res in row.items() if b != "swift"}
        if not others:
            return None, "no other"
        ref = max(others, key=others.get)
    else:
        if against not in row:
            return None, f"no {against}"
        ref = against
    return swift[key] / row[ref][key], ref


def report(results, failures, backends, args):
    print()
    print(
        f"steps bench: median of {args.repeats} timed fit epochs / predict calls "
        f"(+ warm-up), median of {args.latency_calls} single-sample predict_on_batch calls"
    )
    print_openblas_env()
    col = 11
    header = f"{'workload':<12}{'metric':<24}" + "".join(f"{b:>{col}}" for b in backends)
    header += f"  {'swift ratio':<22}{'target':<10}met"
    print(header)
    print("-" * len(header))
    for workload in args.workload_names:
        row = results.get(workload, {})
        for i, (key, label, fmt, against, target, higher) in enumerate(METRICS):
            line = f"{workload if i == 0 else '':<12}{label:<24}"
            for b in backends:
                line += f"{row[b][key]:>{col}{fmt}}" if b in row else f"{'-':>{col}}"
            ratio, ref = swift_ratio(row, key, against)
            if ratio is None:
                line += f"  {'- (' + ref + ')':<22}"
                met = ""
            else:
                line += f"  {f'{ratio:.2f}x vs {ref}':<22}"
                met = "yes" if (ratio >= target if higher else ratio <= target) else "no"
            line += f"{('>= ' if higher else '<= ') + f'{target:.1f}x':<10}{met}"
            print(line)
    print(
        "fit/predict: swift / best other backend (higher is better); "
        "latency, RSS: swift / jax (lower is better)"
    )
    for workload in args.workload_names:
        for b, res in results.get(workload, {}).items():
            loss = res["loss"]
            print(
                f"  {workload}/{b}: {res['steps']} x {res['batch_size']} samples, "
                f"jit_compile={res['jit_compile']}, fit warm-up {res['fit_warmup_s']}s, "
                f"predict warm-up {res['predict_warmup_s']}s, loss {loss[0]:.3f}->{loss[-1]:.3f}, "
                f"RSS {res['rss_before_fit_mb']:.0f} MB before fit (data {res['data_mb']} MB), "
                f"{res['params']} params, {res['process_wall_s']}s"
            )
    seen = {}
    for row in results.values():
        for b, res in row.items():
            seen.setdefault(b, res)
    for b, res in seen.items():
        print(
            f"  {b}: {res.get('backend_version') or ''} keras {res['keras']} "
            f"OpenBLAS {describe_openblas(res['openblas'])}"
        )
    for key, why in failures.items():
        print(f"  {key}: not run: {why}")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="default: all four")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"default: {','.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="batches per epoch / predict call for every workload (default: "
        + ", ".join(f"{w} {v[1]}" for w, v in WORKLOADS.items())
        + ")",
    )
    parser.add_argument(
        "--repeats", type=int, help=f"timed fit epochs and predict calls ({DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "--latency-calls",
        type=int,
        help=f"timed single-sample predict_on_batch calls ({DEFAULT_LATENCY_CALLS})",
    )
    parser.add_argument("--warmup-steps", type=int, default=3, help="warm-up batches (3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: "
        + ", ".join(f"{w} {v[2]}" for w, v in WORKLOADS.items())
        + f" steps, {QUICK_REPEATS} repeats, {QUICK_LATENCY_CALLS} latency calls",
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run (900)")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workload_names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not args.workload_names or set(args.workload_names) - set(WORKLOADS):
        parser.error(f"--workloads takes {', '.join(WORKLOADS)}")
    args.workload = args.workload_names[0]
    column = 2 if args.quick else 1
    args.steps_for = {w: args.steps or v[column] for w, v in WORKLOADS.items()}
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.latency_calls is None:
        args.latency_calls = QUICK_LATENCY_CALLS if args.quick else DEFAULT_LATENCY_CALLS
    if min(args.steps_for.values()) < 1 or args.repeats < 1 or args.warmup_steps < 1:
        parser.error("need --steps, --repeats and --warmup-steps >= 1")
    if args.latency_calls < 1:
        parser.error("need --latency-calls >= 1")
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
        args.workload_names, backends, envs, failures, run_one, args,
        lambda r: f"fit {r['fit_samples_per_s']:.0f}, predict {r['predict_samples_per_s']:.0f} samples/s, "
        f"{r['latency_us']:.0f} us, {r['fit_peak_rss_mb']:.0f} MB",
    )
    report(results, failures, backends, args)
    if args.json:
        settings = {
            k: v
            for k, v in vars(args).items()
            if k not in ("json", "worker", "python", "workload", "steps")
        }
        payload = {"results": results, "not_run": failures, "settings": settings}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
