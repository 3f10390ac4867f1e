#!/usr/bin/env python3
"""The Adam updates of ``bench/steps.py``'s MLP (784-512-512-10: 669,706 parameters) as a
compiled graph of six ``adam_update`` nodes, replayed as a compiled step replays them: each
run's new variables and moments are the next run's inputs. ``donate`` hands the old values to
the engine (``graph_run``'s donate flags), which then writes the new ones over them; ``plain``
keeps them (every update allocates its outputs). Prints the median ms per update and the
process's peak RSS.

    KERAS_BACKEND=swift python bench/adam_update.py [plain|donate] [--repeats 7] [--runs 60]
"""

import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "swift")

import keras  # noqa: E402,F401  (binds the backend before keras_swift's modules load)
import numpy as np  # noqa: E402

from keras_swift.src.core import convert_to_tensor, op  # noqa: E402
from keras_swift.src.engine import _C  # noqa: E402

SHAPES = [(784, 512), (512,), (512, 512), (512,), (512, 10), (10,)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["plain", "donate"])
    parser.add_argument("--repeats", type=int, default=7, help="timed batches of runs (7)")
    parser.add_argument("--runs", type=int, default=60, help="runs per timed batch (60)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    def tensor(a):
        return convert_to_tensor(np.ascontiguousarray(a, dtype="float32"))

    k = len(SHAPES)
    state = [tensor(rng.normal(size=s)) for s in SHAPES] + [tensor(np.zeros(s)) for s in SHAPES * 2]
    grads = [tensor(rng.normal(size=s)) for s in SHAPES]
    alpha = convert_to_tensor(np.float64(1e-3))
    _C.trace_begin()
    try:
        for t in state + grads + [alpha]:
            _C.trace_input(t)
        outs = []
        for i in range(k):
            outs += op("adam_update", state[i], grads[i], state[k + i], state[2 * k + i], alpha,
                       beta1=0.9, beta2=0.999, epsilon=1e-7)
        graph = _C.trace_end(outs)
    except BaseException:
        _C.trace_abort()
        raise
    del outs
    flags = [True] * (3 * k) + [False] * (k + 1)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.runs):
            inputs = state + grads + [alpha]
            state = None
            if args.mode == "donate":
                res = _C.graph_run(graph, inputs, flags)
            else:
                res = _C.graph_run(graph, inputs)
            del inputs
            # Outputs per variable (x, m, v); inputs all x, then all m, then all v.
            state = [res[3 * i + j] for j in range(3) for i in range(k)]
            del res
        times.append((time.perf_counter() - start) / args.runs * 1e3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.mode}: median {statistics.median(times):.3f} ms/update (min {min(times):.3f}), "
          f"{args.repeats} x {args.runs} runs; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
