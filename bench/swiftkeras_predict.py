#!/usr/bin/env python3
"""One-sample latency of ``keras-swift predict`` (SwiftKeras, no Python) beside Keras's
``predict_on_batch`` on the swift backend, for the workloads of bench/steps.py.

For each workload the Keras model (untrained, seeded) is saved as .keras with one sample as
.npy. Python: ``predict_on_batch`` of that sample in this process, after warm-up calls (the
compiled step traced). SwiftKeras: ``keras-swift predict --time N`` loads the file and times
N more predictions of the sample in its own process; process start and model loading are
reported apart (the command's whole wall time). Both must predict the same within 1e-5.

Build the command line in release first and point ``--cli`` at it:

    swift build -c release --product keras-swift
    KERAS_BACKEND=swift python bench/swiftkeras_predict.py --cli .build/release/keras-swift
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

os.environ.setdefault("KERAS_BACKEND", "swift")
from _common import activate_swift  # noqa: E402

activate_swift()

import numpy as np  # noqa: E402

from steps import build, make_data  # noqa: E402

TIMING = re.compile(r"median ([0-9.]+) us, p10 ([0-9.]+) us, p90 ([0-9.]+) us")


def python_latency(model, one, calls):
    for _ in range(50):
        model.predict_on_batch(one)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict_on_batch(one)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def cli_latency(cli, model_file, x_file, out_file, calls):
    start = time.perf_counter()
    run = subprocess.run([str(cli), "predict", str(model_file), str(x_file), "-o", str(out_file), "--time", str(calls)],
                         capture_output=True, text=True, check=True)
    whole = time.perf_counter() - start
    median, p10, p90 = map(float, TIMING.search(run.stderr).groups())
    return median, p10, p90, whole


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", type=Path, default=HERE.parent / ".build" / "release" / "keras-swift")
    # The Transformer's embedding is a custom Python layer, which SwiftKeras refuses by name.
    parser.add_argument("--workloads", default="mlp,convnet,lstm")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    import keras

    if keras.backend.backend() != "swift":
        sys.exit("run with KERAS_BACKEND=swift")
    print(f"{'workload':<12} {'predict_on_batch(1) µs':>24} {'keras-swift predict µs (p10-p90)':>34} "
          f"{'ratio':>6} {'CLI process s':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for workload in args.workloads.split(","):
            keras.utils.set_random_seed(1)
            x, _ = make_data(workload, 2, 1)
            model = build(workload)
            one = x[:1]
            model_file, x_file, out_file = folder / f"{workload}.keras", folder / f"{workload}.x.npy", folder / "y.npy"
            model.save(model_file)
            np.save(x_file, one)
            py_us = python_latency(model, one, args.calls)
            median, p10, p90, whole = cli_latency(args.cli, model_file, x_file, out_file, args.calls)
            np.testing.assert_allclose(np.load(out_file), np.asarray(model.predict_on_batch(one)), atol=1e-5, rtol=1e-5)
            print(f"{workload:<12} {py_us:>24.1f} {median:>16.1f} ({p10:.1f}-{p90:.1f}) {median / py_us:>12.2f}× "
                  f"{whole:>13.2f}")


if __name__ == "__main__":
    main()
