#!/usr/bin/env python3
"""SwiftKeras ``fit`` (no Python in the loop) next to the Python backend's ``fit``.

Workloads (``--workload``), bench/steps.py's models and data: ``mlp`` (Dense 784-512-512-10,
sparse categorical cross-entropy, batch 128), ``convnet`` (Keras's MNIST convnet, categorical
cross-entropy, batch 128) and ``lstm`` (Embedding(20000, 128) -> LSTM(64) -> Dense(1, sigmoid),
binary cross-entropy, sequences of 200 tokens; pass ``--batch-size 64``), all with Adam(1e-3).
Both sides start from the same untrained model and run ``1 + --epochs`` epochs; the first is
excluded from the timing.

- SwiftKeras: the ``keras-swift fit`` command (Sources/KerasSwiftCLI) on a .keras file of the
  untrained model and the data as .npy; its ``--history`` JSON gives each epoch's wall time.
- Python: Keras's ``fit`` on the swift backend in a fresh process (this script with
  ``--python-worker``), loading the same file and data, each epoch timed by a callback.

With ``--with-eager`` a third side runs ``keras-swift fit --no-jit-compile`` (SwiftKeras's
eager steps), for the compiled step's before/after in one run; ``--baseline-cli`` adds
another build's command line (an older commit's) as one more side; ``--no-python`` leaves the
Python side out.

Build the command line in release first (``swift build -c release --product keras-swift``) and
point ``--cli`` at it. Rounds alternate the sides; the report gives the median samples/s:

    python bench/swiftkeras_fit.py --cli .build/release/keras-swift --samples 20000 --epochs 2 --rounds 2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import activate_swift  # noqa: E402

LOSSES = {"mlp": "sparse_categorical_crossentropy", "convnet": "categorical_crossentropy", "lstm": "binary_crossentropy"}


def write_inputs(folder, samples, seed, workload="mlp"):
    """The data as .npy and the untrained model as .keras (written by Keras on the swift backend)."""
    import numpy as np

    os.environ.setdefault("KERAS_BACKEND", "swift")
    if os.environ["KERAS_BACKEND"] == "swift":
        activate_swift()
    import keras

    import steps

    x, y = steps.make_data(workload, samples, seed)
    keras.utils.set_random_seed(seed)
    model = steps.build(workload)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    model.save(folder / "mlp.keras")


def swiftkeras_round(cli, folder, args, eager=False):
    # The baseline's history file must not be one a previous side left.
    (folder / "history.json").unlink(missing_ok=True)
    history = folder / "history.json"
    cmd = [str(cli), "fit", *(["--no-jit-compile"] if eager else []), str(folder / "mlp.keras"), "--x", str(folder / "x.npy"), "--y", str(folder / "y.npy"),
           "--loss", LOSSES[args.workload], "--optimizer", "adam", "--lr", "0.001",
           "--batch-size", str(args.batch_size), "--epochs", str(1 + args.epochs), "-o", str(folder / "trained.keras"),
           "--history", str(history)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=args.timeout)
    logs = json.loads(history.read_text())
    timed = logs["epoch_s"][1:]
    return {"samples_per_s": args.samples * len(timed) / sum(timed), "epoch_s": [round(t, 3) for t in timed],
            "loss": logs["loss"]}


def python_round(folder, args):
    out = folder / "python.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--python-worker", str(folder), "--workload", args.workload,
           "--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=args.timeout,
                   env={**os.environ, "KERAS_BACKEND": "swift"})
    return json.loads(out.read_text())


def python_worker(folder, args):
    """Keras's fit on the swift backend, as a user would run it, on the files SwiftKeras reads."""
    import time

    import numpy as np

    activate_swift()
    import keras

    x, y = np.load(folder / "x.npy"), np.load(folder / "y.npy")
    model = keras.saving.load_model(folder / "mlp.keras", compile=False)
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss=LOSSES[args.workload])
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    history = model.fit(x, y, batch_size=args.batch_size, epochs=1 + args.epochs, shuffle=True, verbose=0,
                        callbacks=[EpochTimer()])
    timed = times[1:]
    result = {"samples_per_s": len(x) * len(timed) / sum(timed), "epoch_s": [round(t, 3) for t in timed],
              "loss": history.history["loss"]}
    (folder / "python.json").write_text(json.dumps(result) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", type=Path, default=HERE.parent / ".build" / "release" / "keras-swift")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (one more runs first, untimed)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--with-eager", action="store_true", help="also run SwiftKeras with eager steps (--no-jit-compile)")
    parser.add_argument("--baseline-cli", type=Path, help="also run this keras-swift build (another commit's)")
    parser.add_argument("--workload", choices=sorted(LOSSES), default="mlp")
    parser.add_argument("--no-python", action="store_true", help="leave out Keras's fit on the swift backend")
    parser.add_argument("--python-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.python_worker:
        python_worker(args.python_worker, args)
        return 0
    if not args.cli.exists():
        parser.error(f"{args.cli} does not exist: swift build -c release --product keras-swift, or pass --cli")
    sides = ([] if args.no_python else ["python"]) + ["swiftkeras"] + (["swiftkeras_eager"] if args.with_eager else []) \
        + (["swiftkeras_baseline"] if args.baseline_cli else [])
    results = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder, args.samples, args.seed, args.workload)
        for r in range(args.rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                if side == "python":
                    res = python_round(folder, args)
                elif side == "swiftkeras_baseline":
                    res = swiftkeras_round(args.baseline_cli, folder, args)
                else:
                    res = swiftkeras_round(args.cli, folder, args, eager=side == "swiftkeras_eager")
                results[side].append(res)
                print(f"round {r + 1} {side}: {res['samples_per_s']:.0f} samples/s, epochs {res['epoch_s']} s",
                      file=sys.stderr, flush=True)
    med = {side: statistics.median(r["samples_per_s"] for r in rs) for side, rs in results.items()}
    print(f"{args.workload.upper()} fit, {args.samples} samples, batch {args.batch_size}, {args.epochs} timed epochs, {args.rounds} rounds")
    labels = (("swiftkeras", "SwiftKeras fit (keras-swift fit)"), ("swiftkeras_eager", "SwiftKeras fit, eager steps"),
              ("swiftkeras_baseline", "SwiftKeras fit, --baseline-cli"), ("python", "Keras fit, swift backend"))
    for side, label in labels:
        if side in med:
            print(f"  {label:<36}{med[side]:>9.0f} samples/s")
    if "python" in med:
        print(f"  SwiftKeras / Python: {med['swiftkeras'] / med['python']:.2f}x")
    for side, label in (("swiftkeras_eager", "eager"), ("swiftkeras_baseline", "baseline")):
        if side in med:
            versus = f"SwiftKeras {label} / Python: {med[side] / med['python']:.2f}x; " if "python" in med else ""
            print(f"  {versus}compiled / {label}: {med['swiftkeras'] / med[side]:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "median_samples_per_s": med, "settings": vars(args)},
                                        indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
