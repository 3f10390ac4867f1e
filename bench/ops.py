#!/usr/bin/env python3
"""Per-op times of ``keras.ops`` on keras-swift next to the numpy backend and JAX.

The 30 ops timed are the compute ops among those the reference training
workflows hit (an MLP, a convnet, Embedding+LSTM/GRU and MultiHeadAttention,
recorded by backend function name under jax), called exactly as a user
would: ``keras.ops.<name>`` / ``keras.random.dropout`` on backend tensors.
T names that do no tensor compute (``shape``, ``is_tensor``, ``zeros``, ...) are
left out, as are the rarely hit ``diag``, ``prod``, ``sign``, ``split``,
``broadcast_to``, ``divide_no_nan``, ``reshape``, ``qr``, the random samplers,
the binary/categorical cross-entropies and ``dot_product_attention`` (Keras's
MultiHeadAttention layer computes through ``einsum`` + ``softmax``).

Every op runs at two sizes: about 1M elements per main input (``large``,
2**20) and about 1K (``small``, 2**10, where per-call overhead dominates).
Inputs come from one numpy seed per (op, size), so all backends see the same
values; each result's sum is compared with the numpy backend's as a sanity
check (``check`` column; random ops are not compared).

Each backend runs in its own long-lived subprocess (Keras binds one backend
per process). The driver walks the ops and, for each (op, size), asks every
backend in turn, so load on a shared machine hits all backends alike; with
``--rounds N`` it walks the list N times and keeps each backend's best time.
A backend's time for one (op, size) is the best of ``--repeat`` samples, each
the mean of enough calls to last ``--min-sample`` seconds, after one warm-up
call. JAX results are waited for with ``block_until_ready``; swift and numpy
are eager.

Run it as a benchmark with OpenBLAS free to pick its own kernel and cache
sizes (both variables override its CPU detection, so unset them together):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/ops.py
    python bench/ops.py --sizes large --ops add,softmax,conv --json ops.json
    python bench/ops.py --ops "tanh,moments(axes=0)" --backends swift,numpy

Every op where swift is slower than the numpy backend at the large size is
flagged (``SLOWER``) and listed at the end. Roughly 2-4 minutes on 2 cores.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

from _common import (
    activate_swift,
    describe_openblas,
    parse_backends,
    print_openblas_env,
    worker_environment,
    probe_backends,
)

BACKENDS = ("swift", "numpy", "jax")
SIZES = {"large": 2**20, "small": 2**10}
RESULT_PREFIX = "OPS_BENCH "
ROW = 128  # last-axis length of the "rows of features" inputs


# --------------------------------------------------------------------------
# the ops: name -> (make inputs from (rng, n), call with (keras, *tensors))
# --------------------------------------------------------------------------


def _f32(rng, *shape):
    return rng.standard_normal(shape, dtype="float32")


def _pos(rng, *shape):
    return rng.uniform(0.5, 2.0, shape).astype("float32")


def _rows(n):
    return max(1, n // ROW), ROW


def _probs(rng, n):
    import numpy as np

    logits = _f32(rng, *_rows(n))
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")


def _image(n):
    # NHWC with 64 channels, one square image: 2**20 -> (1, 128, 128, 64), 2**10 -> (1, 4, 4, 64)
    c = 64
    side = 2 ** (int(math.log2(n // c)) // 2) if n >= 4 * c else 1
    batch = max(1, n // (c * side * side))
    return batch, side, side, c


def _heads(n):
    # (batch, seq, features) with features 256 for einsum's MHA projection
    d = 256
    seq = min(256, max(1, n // d))
    return max(1, n // (d * seq)), seq, d


OPS = {
    "add": (lambda r, n: [_f32(r, n), _f32(r, n)], lambda k, a, b: k.ops.add(a, b)),
    "subtract": (lambda r, n: [_f32(r, n), _f32(r, n)], lambda k, a, b: k.ops.subtract(a, b)),
    "multiply": (lambda r, n: [_f32(r, n), _f32(r, n)], lambda k, a, b: k.ops.multiply(a, b)),
    "divide": (lambda r, n: [_f32(r, n), _pos(r, n)], lambda k, a, b: k.ops.divide(a, b)),
    "power": (lambda r, n: [_pos(r, n), _f32(r, n)], lambda k, a, b: k.ops.power(a, b)),
    "sqrt": (lambda r, n: [_pos(r, n)], lambda k, a: k.ops.sqrt(a)),
    "square": (lambda r, n: [_f32(r, n)], lambda k, a: k.ops.square(a)),
    "rsqrt": (lambda r, n: [_pos(r, n)], lambda k, a: k.ops.rsqrt(a)),
    "tanh": (lambda r, n: [_f32(r, n)], lambda k, a: k.ops.tanh(a)),
    "equal": (
        lambda r, n: [r.integers(0, 4, n).astype("int32"), r.integers(0, 4, n).astype("int32")],
        lambda k, a, b: k.ops.equal(a, b),
    ),
    "greater": (lambda r, n: [_f32(r, n), _f32(r, n)], lambda k, a, b: k.ops.greater(a, b)),
    "cast": (
        lambda r, n: [r.integers(-100, 100, n).astype("int32")],
        lambda k, a: k.ops.cast(a, "float32"),
    ),
    "relu": (lambda r, n: [_f32(r, n)], lambda k, a: k.ops.relu(a)),
    "sigmoid": (lambda r, n: [_f32(r, n)], lambda k, a: k.ops.sigmoid(a)),
    "gelu": (lambda r, n: [_f32(r, n)], lambda k, a: k.ops.gelu(a)),
    "softmax": (lambda r, n: [_f32(r, *_rows(n))], lambda k, a: k.ops.softmax(a, axis=-1)),
    "sum": (lambda r, n: [_f32(r, n)], lambda k, a: k.ops.sum(a)),
    "mean(axis=-1)": (lambda r, n: [_f32(r, *_rows(n))], lambda k, a: k.ops.mean(a, axis=-1)),
    "argmax(axis=-1)": (lambda r, n: [_f32(r, *_rows(n))], lambda k, a: k.ops.argmax(a, axis=-1)),
    "moments(axes=0)": (lambda r, n: [_f32(r, *_rows(n))], lambda k, a: k.ops.moments(a, [0])),
    "transpose(0,2,1,3)": (
        lambda r, n: [_f32(r, max(1, n // 4096), 16, 4, 64)],
        lambda k, a: k.ops.transpose(a, (0, 2, 1, 3)),
    ),
    "concatenate(axis=-1)": (
        lambda r, n: [_f32(r, _rows(n)[0], ROW // 2), _f32(r, _rows(n)[0], ROW // 2)],
        lambda k, a, b: k.ops.concatenate([a, b], axis=-1),
    ),
    "take(embedding)": (
        lambda r, n: [_f32(r, 1000, ROW), r.integers(0, 1000, _rows(n)[0]).astype("int32")],
        lambda k, t, i: k.ops.take(t, i, axis=0),
    ),
    "matmul": (
        lambda r, n: [_f32(r, int(math.isqrt(n)), int(math.isqrt(n))) for _ in range(2)],
        lambda k, a, b: k.ops.matmul(a, b),
    ),
    "einsum(abc,cde->abde)": (
        lambda r, n: [_f32(r, *_heads(n)), _f32(r, 256, 4, 64) * 0.06],
        lambda k, a, b: k.ops.einsum("abc,cde->abde", a, b),
    ),
    "conv(3x3,64->64)": (
        lambda r, n: [_f32(r, *_image(n)), _f32(r, 3, 3, 64, 64) * 0.04],
        lambda k, x, w: k.ops.conv(x, w, padding="same"),
    ),
    "max_pool(2)": (lambda r, n: [_f32(r, *_image(n))], lambda k, x: k.ops.max_pool(x, (2, 2), (2, 2))),
    "batch_normalization": (
        lambda r, n: [_f32(r, *_rows(n)), _f32(r, ROW), _pos(r, ROW), _f32(r, ROW), _pos(r, ROW)],
        lambda k, x, m, v, o, s: k.ops.batch_normalization(x, m, v, axis=-1, offset=o, scale=s),
    ),
    "sparse_categorical_crossentropy": (
        lambda r, n: [r.integers(0, ROW, _rows(n)[0]).astype("int32"), _probs(r, n)],
        lambda k, t, p: k.ops.sparse_categorical_crossentropy(t, p),
    ),
    "dropout(0.5)": (
        lambda r, n: [_f32(r, n)],
        lambda k, a: k.random.dropout(a, 0.5, seed=7),
    ),
}
RANDOM_OPS = {"dropout(0.5)"}
# Where the ratio does not compare like with like.
NOTES = {
    "transpose(0,2,1,3)": (
        "the numpy backend returns a strided view and swift a deferred copy (both O(1): the"
        " time is per-call overhead); jax copies"
    ),
}


# --------------------------------------------------------------------------
# worker (one backend, inside its own process; one JSON request per line)
# --------------------------------------------------------------------------


def _leaves(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _worker_loop(seed):
    backend = os.environ["KERAS_BACKEND"]
    activate_swift()
    import keras
    import numpy as np

    if backend == "jax":
        import jax

        def sync(out):
            jax.block_until_ready(out)

    else:

        def sync(out):
            pass

    def reply(obj):
        sys.stdout.write(RESULT_PREFIX + json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply(
        {
            "backend": backend,
            **worker_environment(backend),
        }
    )
    for line in sys.stdin:
        req = json.loads(line)
        name, n = req["op"], req["n"]
        try:
            make, call = OPS[name]
            rng = np.random.default_rng([seed, zlib.crc32(name.encode()), n])
            args = [keras.ops.convert_to_tensor(a) for a in make(rng, n)]
            start = time.perf_counter()
            out = call(keras, *args)
            sync(out)
            first = time.perf_counter() - start
            number = max(1, min(10000, int(req["min_sample"] / max(first, 1e-7))))
            samples = []
            for _ in range(req["repeat"]):
                start = time.perf_counter()
                for _ in range(number):
                    out = call(keras, *args)
                sync(out)
                samples.append((time.perf_counter() - start) / number)
            leaves = [np.asarray(keras.ops.convert_to_numpy(o), dtype="float64") for o in _leaves(out)]
            reply(
                {
                    "op": name,
                    "n": n,
                    "best_s": min(samples),
                    "samples_s": samples,
                    "number": number,
                    "shapes": [list(a.shape) for a in leaves],
                    "sum": [float(a.sum()) for a in leaves],
                    "abs_sum": [float(np.abs(a).sum()) for a in leaves],
                }
            )
        except Exception as e:  # report and keep serving the other ops
            reply({"op": name, "n": n, "error": f"{type(e).__name__}: {e}"[:300]})


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


class Worker:
    def __init__(self, backend, env, args):
        self.backend = backend
        self.proc = subprocess.Popen(
            [args.python, os.path.abspath(__file__), "--worker", "--seed", str(args.seed)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not args.verbose else None,
            text=True,
        )
        self.info = self._read()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        raise RuntimeError(f"{self.backend} worker exited (status {self.proc.wait()})")

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def _agrees(res, ref):
    if res is None or ref is None or "sum" not in res or "sum" not in ref:
        return None
    if res["shapes"] != ref["shapes"]:
        return False
    return all(
        abs(a - b) <= 1e-3 * (s + 1.0) for a, b, s in zip(res["sum"], ref["sum"], ref["abs_sum"])
    )


def _fmt_time(seconds):
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def report(table, backends, sizes, infos, failures):
    names = [name for name in OPS if any((name, size) in table for size in sizes)]
    others = [b for b in backends if b != "swift"]
    slower = []
    for size in sizes:
        print()
        print(f"size {size} ({SIZES[size]} elements per main input); time per call, best of samples")
        header = f"{'op':<34}" + "".join(f"{b:>11}" for b in backends)
        header += "".join(f"{'swift/' + b:>13}" for b in others if "swift" in backends)
        header += "  check"
        print(header)
        print("-" * len(header))
        for name in names:
            row = table.get((name, size), {})
            line = f"{name:<34}"
            for b in backends:
                res = row.get(b)
                line += f"{_fmt_time(res.get('best_s')) if res else '-':>11}"
            flags = []
            swift = row.get("swift")
            for b in others if "swift" in backends else []:
                res = row.get(b)
                if swift and res and "best_s" in swift and "best_s" in res:
                    ratio = swift["best_s"] / res["best_s"]
                    line += f"{ratio:>12.3g}x"
                    if b == "numpy" and size == "large" and ratio > 1.0:
                        flags.append("SLOWER")
                        slower.append((name, ratio))
                else:
                    line += f"{'-':>13}"
            ref = row.get("numpy")
            for b in backends:
                res = row.get(b)
                if res and "error" in res:
                    flags.append(f"{b} error")
                elif b != "numpy" and name not in RANDOM_OPS and _agrees(res, ref) is False:
                    flags.append(f"{b} differs")
            print(line + "  " + ", ".join(flags))
    print()
    print("swift/X = swift time / X time (below 1: swift faster)")
    for name in names:
        if name in NOTES:
            print(f"note: {name}: {NOTES[name]}")
    print_openblas_env()
    for b, info in infos.items():
        print(f"  {b}: {info.get('backend_version') or ''} OpenBLAS {describe_openblas(info['openblas'])}")
    for b, why in failures.items():
        print(f"  {b}: not run: {why}")
    errors = [
        (name, size, b, res["error"])
        for (name, size), row in table.items()
        for b, res in row.items()
        if "error" in res
    ]
    for name, size, b, err in errors:
        print(f"  error: {name} [{size}] on {b}: {err}")
    if "swift" in backends and "numpy" in backends and "large" in sizes:
        if slower:
            print(f"swift slower than the numpy backend at {SIZES['large']} elements:")
            for name, ratio in slower:
                print(f"  {name}: {ratio:.2f}x")
        else:
            print(f"swift is not slower than the numpy backend on any op at {SIZES['large']} elements")
    return slower


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="default: swift,numpy,jax")
    parser.add_argument("--sizes", default="large,small", help="large (2**20), small (2**10)")
    parser.add_argument("--ops", help="comma-separated op names (default: all 30)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the op list (1)")
    parser.add_argument("--repeat", type=int, default=5, help="timed samples per op (5)")
    parser.add_argument("--min-sample", type=float, default=0.02, help="seconds per sample (0.02)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--verbose", action="store_true", help="show the workers' stderr")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size_names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if set(args.size_names) - set(SIZES):
        parser.error(f"--sizes takes {', '.join(SIZES)}")
    args.op_names = list(OPS)
    if args.ops:
        # Commas inside a label's parentheses do not separate names; a bare name
        # ("transpose") selects its labelled variant ("transpose(0,2,1,3)").
        wanted = [o.strip() for o in re.split(r",(?![^(]*\))", args.ops) if o.strip()]
        unknown = [w for w in wanted if w not in OPS and w not in {n.split("(")[0] for n in OPS}]
        if unknown:
            parser.error(f"unknown op(s) {unknown}; known: {', '.join(OPS)}")
        args.op_names = [n for n in OPS if n in wanted or n.split("(")[0] in wanted]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        _worker_loop(args.seed)
        return 0
    backends = parse_backends(args.backends, BACKENDS)
    envs, failures = probe_backends(backends, args.python)
    workers = {}
    for b, env in envs.items():
        try:
            workers[b] = Worker(b, env, args)
        except RuntimeError as e:
            failures[b] = str(e)
            print(f"{b}: failed to start: {e}", file=sys.stderr)
    backends = [b for b in backends if b in workers]
    table = {}
    try:
        for rnd in range(args.rounds):
            for size in args.size_names:
                for name in args.op_names:
                    row = table.setdefault((name, size), {})
                    request = {
                        "op": name,
                        "n": SIZES[size],
                        "repeat": args.repeat,
                        "min_sample": args.min_sample,
                    }
                    # Rotate who goes first so no backend always follows another.
                    k = (rnd + len(table)) % len(backends)
                    for b in backends[k:] + backends[:k]:
                        res = workers[b].ask(request)
                        old = row.get(b)
                        if old is None or "error" in old or (
                            "best_s" in res and res["best_s"] < old["best_s"]
                        ):
                            row[b] = res
                    print(
                        f"[{rnd + 1}/{args.rounds}] {size:<5} {name:<34} "
                        + " ".join(f"{b}={_fmt_time(row[b].get('best_s'))}" for b in backends),
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for w in workers.values():
            w.close()
    infos = {b: w.info for b, w in workers.items()}
    slower = report(table, backends, args.size_names, infos, failures)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "worker", "python")}
        payload = {
            "results": [
                dict(res, backend=b, size=size)
                for (name, size), row in table.items()
                for b, res in row.items()
            ],
            "swift_slower_than_numpy_large": [{"op": n, "ratio": r} for n, r in slower],
            "workers": infos,
            "not_run": failures,
            "settings": settings,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if table else 1


if __name__ == "__main__":
    sys.exit(main())
