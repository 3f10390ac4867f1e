"""Helpers the benchmarks in bench/ share: which backends can run, the child
process environment, and which OpenBLAS (library and kernel) a process loaded.

Keras binds one backend per process, so every benchmark runs each backend in
its own subprocess with ``KERAS_BACKEND`` set; these helpers are used both by
the driver (``available``, ``child_env``) and inside the workers
(``activate_swift``, ``openblas_info``, ``backend_version``).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = ("swift", "jax", "tensorflow", "torch")
REPO_PYTHON_DIR = Path(__file__).resolve().parents[1] / "python"
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def activate_swift():
    """Import the hook that activates KERAS_BACKEND=swift where no .pth file did."""
    if os.environ.get("KERAS_BACKEND") == "swift":
        try:
            import keras_swift_hook  # noqa: F401
        except ImportError:
            pass


def openblas_info():
    """Every OpenBLAS loaded in this process: path, version, kernel, threads."""
    found = []
    try:
        import threadpoolctl

        for lib in threadpoolctl.threadpool_info():
            if lib.get("internal_api") == "openblas":
                found.append(
                    {
                        "path": lib.get("filepath"),
                        "version": lib.get("version"),
                        "corename": lib.get("architecture"),
                        "threads": lib.get("num_threads"),
                        "threading": lib.get("threading_layer"),
                    }
                )
        return found
    except ImportError:
        pass
    # Without threadpoolctl: ask each mapped libopenblas directly. Bundled
    # copies (numpy's scipy_openblas) prefix and suffix their symbols.
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
    except OSError:
        return found
    for path in paths:
        if not os.path.isfile(path):
            continue
        entry = {"path": path, "corename": None}
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("", ""), ("", "64_"), ("scipy_", "64_"), ("scipy_", "")):
            fn = getattr(lib, f"{prefix}openblas_get_corename{suffix}", None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                entry["corename"] = fn().decode()
                break
        found.append(entry)
    return found


def describe_openblas(libs):
    if not libs:
        return "none loaded"
    return "; ".join(
        f"{Path(lib['path']).name} {lib.get('version') or ''} core={lib.get('corename')}"
        f"{'' if lib.get('threads') is None else ' threads=' + str(lib['threads'])}"
        for lib in libs
    )


def openblas_env():
    return {k: os.environ.get(k) for k in OPENBLAS_ENV}


def print_openblas_env():
    """Say whether OpenBLAS's CPU detection was overridden for this run."""
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        value = os.environ.get(name)
        print(f"{name}: {'set to ' + repr(value) if value is not None else 'not set'}")


def backend_version(backend):
    module = {"swift": "keras_swift"}.get(backend, backend)
    try:
        return getattr(sys.modules.get(module) or __import__(module), "__version__", None)
    except ImportError:
        return None


def worker_environment(backend):
    """What a worker process reports about where it ran (call after importing keras)."""
    import keras
    import numpy as np

    return {
        "keras": keras.version(),
        "backend_version": backend_version(backend),
        "numpy": np.__version__,
        "cpus": cpu_count(),
        "openblas": openblas_info(),
        "env": openblas_env(),
    }


def cpu_count():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def child_env(backend):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def available(backend, python):
    """(env, None) when ``backend`` can run, else (None, why not)."""
    env = child_env(backend)
    if backend != "swift":
        # Ask the interpreter that will run it, without importing anything.
        code = (
            "import importlib.util, sys; "
            f"sys.exit(importlib.util.find_spec({backend!r}) is None)"
        )
        if subprocess.run([python, "-c", code], env=env).returncode != 0:
            return None, f"{backend} is not installed"
        return env, None
    probe = [python, "-c", "import _swiftkeras, keras_swift_hook, keras_swift.src"]
    if subprocess.run(probe, env=env, capture_output=True).returncode == 0:
        return env, None
    # Not installed: try this checkout's python/ (an in-place build).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_PYTHON_DIR)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    out = subprocess.run(probe, env=env, capture_output=True, text=True)
    if out.returncode == 0:
        return env, None
    lines = out.stderr.strip().splitlines()
    return None, lines[-1] if lines else "keras-swift is not importable"


def probe_backends(backends, python):
    """``({backend: env}, {backend: why not})`` for ``backends``, in order; each one that
    cannot run is reported on stderr."""
    envs, failures = {}, {}
    for b in backends:
        env, why = available(b, python)
        if env is None:
            failures[b] = why
            print(f"{b}: skipped ({why})", file=sys.stderr)
        else:
            envs[b] = env
    return envs, failures


def parse_backends(spec, allowed=BACKENDS):
    backends = [b.strip() for b in spec.split(",") if b.strip()]
    unknown = set(backends) - set(allowed)
    if unknown:
        sys.exit(f"unknown backend(s): {', '.join(sorted(unknown))}")
    return backends


def run_worker(cmd, env, timeout, prefix):
    """Runs one benchmark worker process; returns (result dict, None) from the stdout line
    starting with `prefix`, or (None, the tail of its output)."""
    start = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - start
    for line in out.stdout.splitlines():
        if line.startswith(prefix):
            result = json.loads(line[len(prefix) :])
            result["process_wall_s"] = round(wall, 1)
            return result, None
    tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
    return None, "\n".join(tail) or f"exit status {out.returncode}"


def epoch_timer(keras):
    """A Keras callback that records each epoch's wall time in ``.times``. Only epoch
    hooks: Keras has pulled the epoch's loss to the host at its end, which waits for
    asynchronous backends (jax) to finish, and batch hooks would add their own cost."""

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    return EpochTimer()


def run_interleaved(names, backends, envs, failures, run_one, args, describe):
    """Runs ``run_one(name, backend, env, args)`` for every name and, inside, every
    backend, rotating which backend goes first so that none always runs right after
    another; returns ``{name: {backend: result}}`` and records failures by
    ``name/backend``. ``describe(result)`` is the progress line's summary."""
    results = {}
    for i, name in enumerate(names):
        order = backends[i % len(backends) :] + backends[: i % len(backends)] if backends else []
        for b in order:
            print(f"{name}/{b}: running...", file=sys.stderr, flush=True)
            try:
                result, error = run_one(name, b, envs[b], args)
            except subprocess.TimeoutExpired:
                result, error = None, f"timed out after {args.timeout:.0f}s"
            if result is None:
                failures[f"{name}/{b}"] = error
                print(f"{name}/{b}: failed: {error}", file=sys.stderr)
            else:
                results.setdefault(name, {})[b] = result
                print(f"{name}/{b}: {describe(result)} ({result['process_wall_s']}s)", file=sys.stderr)
    return results
