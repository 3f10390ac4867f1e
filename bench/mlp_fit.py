#!/usr/bin/env python3
"""MLP ``fit`` throughput of keras-swift next to the other Keras backends.

Workload: ``Dense`` 784-512-512-10 (relu, relu, softmax), Adam(1e-3), sparse
categorical cross-entropy, batch 128, on synthetic float32 data generated
from a fixed numpy seed (labels are the argmax of a fixed random projection,
so the loss falls and the backends can be compared for sanity).

Each backend in {swift, jax, tensorflow, torch} that can be imported runs in
its own subprocess with ``KERAS_BACKEND`` set (swift needs ``_swiftkeras``).
One ``fit`` call runs ``1 + --epochs`` epochs; the first one (tracing, JIT
compilation, allocator and thread-pool warm-up) is excluded from the timing.
The report gives samples/s per backend, swift's ratio to each other backend,
and the OpenBLAS library and kernel ("core") each process had loaded.

Run it as a benchmark with OpenBLAS free to pick its own kernel and cache
sizes (both variables override its CPU detection, so unset them together):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/mlp_fit.py

    python bench/mlp_fit.py --backends swift,jax --samples 20000 --epochs 2
    python bench/mlp_fit.py --json results.json

The defaults (60000 samples, 3 timed epochs) take roughly 20-60 s per backend
on a 2-core machine. Keep the machine otherwise idle; compare numbers only
between runs on the same machine.
"""

import argparse
import json
import os
import statistics
import subprocess
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
    run_worker,
    worker_environment,
)

RESULT_PREFIX = "MLP_FIT_RESULT "


# --------------------------------------------------------------------------
# worker (one backend, inside its own process)
# --------------------------------------------------------------------------


def make_data(samples, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, 784), dtype=np.float32)
    projection = rng.standard_normal((784, 10), dtype=np.float32)
    y = np.argmax(x @ projection, axis=1).astype(np.int32)
    return x, y


def worker(args):
    backend = os.environ["KERAS_BACKEND"]
    activate_swift()
    import keras

    keras.utils.set_random_seed(args.seed)
    x, y = make_data(args.samples, args.seed)

    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
    )


    timer = epoch_timer(keras)
    history = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=1 + args.epochs,
        callbacks=[timer],
        verbose=0,
    )
    timed = timer.times[1:]
    result = {
        "backend": backend,
        "samples": args.samples,
        "epochs_timed": args.epochs,
        "batch_size": args.batch_size,
        "warmup_epoch_s": round(timer.times[0], 3),
        "epoch_s": [round(t, 3) for t in timed],
        "samples_per_s": args.samples * len(timed) / sum(timed),
        "loss": [float(v) for v in history.history["loss"]],
        **worker_environment(backend),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def run_backend(backend, env, args):
    cmd = [
        args.python,
        os.path.abspath(__file__),
        "--worker",
        "--samples", str(args.samples),
        "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size),
        "--seed", str(args.seed),
    ]  # fmt: skip
    return run_worker(cmd, env, args.timeout, RESULT_PREFIX)


def report(results, failures, args):
    print()
    print(
        f"MLP 784-512-512-10 fit: {args.samples} samples x {args.epochs} timed epochs "
        f"(+1 warm-up), batch {args.batch_size}"
    )
    print_openblas_env()
    swift = results.get("swift")
    header = (
        f"{'backend':<11}{'samples/s':>11}{'epoch s':>9}{'warm-up s':>11}"
        f"{'loss first->last':>20}{'swift/this':>12}"
    )
    print(header)
    print("-" * len(header))
    for backend, res in results.items():
        ratio = (
            f"{swift['samples_per_s'] / res['samples_per_s']:.2f}x"
            if swift and backend != "swift"
            else ""
        )
        loss = f"{res['loss'][0]:.3f}->{res['loss'][-1]:.3f}"
        print(
            f"{backend:<11}{res['samples_per_s']:>11.0f}{statistics.median(res['epoch_s']):>9.2f}"
            f"{res['warmup_epoch_s']:>11.2f}{loss:>20}{ratio:>12}"
        )
    for backend, res in results.items():
        print(f"  {backend}: OpenBLAS {describe_openblas(res['openblas'])}")
    for backend, why in failures.items():
        print(f"  {backend}: not run: {why}")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated (default: all four)"
    )
    parser.add_argument("--samples", type=int, default=60000, help="training samples (60000)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up (3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per backend")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.samples < args.batch_size:
        parser.error("need --epochs >= 1 and --samples >= --batch-size")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    backends = parse_backends(args.backends)
    envs, failures = probe_backends(backends, args.python)
    results = {}
    for backend, env in envs.items():
        print(f"{backend}: running...", file=sys.stderr, flush=True)
        try:
            result, error = run_backend(backend, env, args)
        except subprocess.TimeoutExpired:
            result, error = None, f"timed out after {args.timeout:.0f}s"
        if result is None:
            failures[backend] = error
            print(f"{backend}: failed: {error}", file=sys.stderr)
        else:
            results[backend] = result
            print(
                f"{backend}: {result['samples_per_s']:.0f} samples/s "
                f"({result['process_wall_s']}s)",
                file=sys.stderr,
            )
    report(results, failures, args)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "worker")}
        payload = {"results": results, "not_run": failures, "settings": settings}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
