#!/usr/bin/env python3
"""Data-parallel training step on the swift backend: 1 process x 2 engine threads against
2 MPI processes x 1 thread each (keras.distribution.DataParallel over Open MPI).

Workloads (bench/steps.py's): ``mlp`` (Dense 784-512-512-10, Adam, batch 128) and
``convnet`` (Keras's MNIST convnet, Adam, batch 128); the global batch is 128 in both
configurations, so 2 processes each run 64 rows a step. Each configuration runs in fresh
processes: a warm-up ``fit`` of ``--warmup-steps`` steps (tracing), then ``--repeats``
timed epochs of ``--steps`` steps; reported: the median epoch's milliseconds per step,
and for 2 processes the share of the step rank 0 spends in MPI calls (the gradient
allreduce plus the metrics' one, including any wait for the other rank), timed around
each call. Last, the allreduce of each workload's gradient buffer alone, between 2
processes that start it together: the transfer without waiting. Open MPI polls while it
waits; on a machine shared with other work, ``OMPI_MCA_mpi_yield_when_idle=1`` (passed
through) makes a waiting rank yield its core.

    python bench/distributed.py                 # both workloads, 3 rounds
    python bench/distributed.py --workloads mlp --steps 50 --json d.json

Needs mpirun (Open MPI) and mpi4py. Run it on an otherwise idle machine with at least
2 cores; the report prints the load average before and after.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_PREFIX = "DISTRIBUTED_BENCH "
BATCH = 128
# Parameters of each workload's model, plus the row count the gradient buffer carries.
GRADIENT_FLOATS = {"mlp": 669_706 + 1, "convnet": 34_826 + 1}


def worker(args):
    sys.path.insert(0, str(HERE))
    os.environ.setdefault("KERAS_BACKEND", "swift")
    from _common import activate_swift

    activate_swift()
    import keras

    from steps import build, make_data

    distributed = os.environ.get("BENCH_DIST") == "1"
    if distributed:
        keras.distribution.initialize()
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    from keras.src.backend import distribution_lib

    import _swiftkeras

    _swiftkeras.set_num_threads(args.threads)
    rank = distribution_lib.process_id()

    mpi_time = [0.0]
    if distributed:
        from keras_swift.src import distributed as dp

        # Every MPI call runs inside a watchdog guard (never nested): time inside guards
        # is time in MPI (the gradient allreduce and the metrics' one, waits included).
        enter, leave = dp._Guard.__enter__, dp._Guard.__exit__
        started = [0.0]

        def timed_enter(self):
            started[0] = time.perf_counter()
            return enter(self)

        def timed_exit(self, *exc):
            mpi_time[0] += time.perf_counter() - started[0]
            return leave(self, *exc)

        dp._Guard.__enter__, dp._Guard.__exit__ = timed_enter, timed_exit

    keras.utils.set_random_seed(0)
    x, y = make_data(args.workload, BATCH * args.steps, 0)
    model = build(args.workload)
    model.fit(x[: BATCH * args.warmup_steps], y[: BATCH * args.warmup_steps],
              batch_size=BATCH, epochs=1, verbose=0, shuffle=False)

    epochs, shares = [], []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            mpi_time[0] = 0.0
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self.start
            epochs.append(elapsed / args.steps * 1e3)
            shares.append(mpi_time[0] / elapsed)

    model.fit(x, y, batch_size=BATCH, epochs=args.repeats, verbose=0, shuffle=False,
              callbacks=[Timer()])
    if rank == 0:
        i = epochs.index(statistics.median_low(epochs))
        print(RESULT_PREFIX + json.dumps({
            "ms_per_step": epochs[i],
            "mpi_share": shares[i] if distributed else None,
            "epochs_ms_per_step": epochs,
        }), flush=True)


def allreduce_worker(args):
    """The gradient allreduce alone: ``--allreduce N`` floats, 2 ranks, after a barrier
    (so no wait for a lagging rank is counted): min and median of 60 calls."""
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    send = np.ones(args.allreduce, np.float32)
    recv = np.empty_like(send)
    times = []
    for _ in range(60):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(send, recv, op=MPI.SUM)
        times.append((time.perf_counter() - start) * 1e3)
    if comm.Get_rank() == 0:
        print(RESULT_PREFIX + json.dumps(
            {"min_ms": min(times), "median_ms": statistics.median(times[10:])}), flush=True)


def mpirun_env():
    return dict(os.environ, KERAS_BACKEND="swift", OMPI_ALLOW_RUN_AS_ROOT="1",
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def allreduce_alone(floats):
    cmd = [shutil.which("mpirun"), "--oversubscribe", "--bind-to", "none", "-np", "2",
           sys.executable, str(Path(__file__).resolve()), "--allreduce", str(floats)]
    proc = subprocess.run(cmd, env=mpirun_env(), capture_output=True, text=True, timeout=300)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def run(workload, processes, threads, args):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker",
           "--workload", workload, "--threads", str(threads),
           "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
           "--repeats", str(args.repeats)]
    env = dict(os.environ, KERAS_BACKEND="swift")
    if processes > 1:
        env = dict(mpirun_env(), BENCH_DIST="1")
        # Each rank's threads stay on the cores it was given: bind none, so two
        # 1-thread ranks take the 2 cores between them.
        cmd = [shutil.which("mpirun"), "--oversubscribe", "--bind-to", "none",
               "-np", str(processes)] + cmd
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="mlp,convnet")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--allreduce", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.allreduce:
        return allreduce_worker(args)
    if shutil.which("mpirun") is None:
        raise SystemExit("bench/distributed.py needs mpirun (apt-get install openmpi-bin)")

    print(f"load average before: {os.getloadavg()}")
    rows = []
    for workload in args.workloads.split(","):
        runs = {"1x2": [], "2x1": []}
        # Rounds alternate the configurations (and which goes first), so load from
        # elsewhere on the machine hits both alike; each figure is the median round.
        for i in range(args.rounds):
            order = [("1x2", 1, 2), ("2x1", 2, 1)]
            for name, processes, threads in order[:: 1 if i % 2 == 0 else -1]:
                runs[name].append(run(workload, processes, threads, args))
        row = {"workload": workload, "runs": runs}
        for name, results in runs.items():
            median = statistics.median_low([r["ms_per_step"] for r in results])
            row[name] = next(r for r in results if r["ms_per_step"] == median)
        rows.append(row)
    print(f"load average after: {os.getloadavg()}")
    print(f"\nms per step of a global batch of {BATCH} (median of {args.rounds} rounds, each "
          f"the median of {args.repeats} epochs of {args.steps} steps); MPI share: rank 0's "
          "time in MPI calls / step time")
    print(f"{'workload':10} {'1 proc x 2 thr':>15} {'2 proc x 1 thr':>15} {'speedup':>8} {'MPI share':>10}")
    for r in rows:
        a, b = r["1x2"]["ms_per_step"], r["2x1"]["ms_per_step"]
        print(f"{r['workload']:10} {a:15.2f} {b:15.2f} {a / b:8.2f} "
              f"{r['2x1']['mpi_share'] * 100:9.1f}%")
        spread = {k: [round(x["ms_per_step"], 1) for x in r["runs"][k]] for k in ("1x2", "2x1")}
        print(f"{'':10} rounds: 1x2 {spread['1x2']}  2x1 {spread['2x1']}")
    print("\nthe gradient allreduce alone (2 ranks, after a barrier, 60 calls):")
    for r in rows:
        floats = GRADIENT_FLOATS[r["workload"]]
        r["allreduce_alone"] = alone = allreduce_alone(floats)
        print(f"{r['workload']:10} {floats:9d} floats: min {alone['min_ms']:.3f} ms, "
              f"median {alone['median_ms']:.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
