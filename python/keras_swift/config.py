"""What this installation of keras-swift is and runs on: ``show_config()``, and
the thread-count setting (``set_num_threads`` / ``KERAS_SWIFT_NUM_THREADS``)."""

import ctypes
import os
import platform
import sys

# What each glibc-hwcaps directory's build was compiled for (setup.py builds
# them with -march=<level>).
_LEVEL_FEATURES = {
    "baseline": "x86-64 (SSE2)",
    "x86-64-v2": "x86-64-v2 (SSE4.2, POPCNT)",
    "x86-64-v3": "x86-64-v3 (AVX2, FMA, BMI2, F16C)",
    "x86-64-v4": "x86-64-v4 (AVX-512)",
}
_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "bmi2", "f16c", "avx512f", "avx512bw", "avx512vl")


def set_num_threads(n):
    """Threads used by the engine's kernels, GEMM included (OpenBLAS itself
    is held to the calling thread; the engine's pool splits its products).
    ``KERAS_SWIFT_NUM_THREADS`` sets the same at import."""
    import _swiftkeras

    _swiftkeras.set_num_threads(n)


def get_num_threads():
    """Threads the engine's kernels use (see ``set_num_threads``)."""
    import _swiftkeras

    return _swiftkeras.get_num_threads()


def _engine_variant(path):
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) >= 3 and parts[-3] == "glibc-hwcaps":
        return parts[-2]
    # The copy beside the extension: the baseline, unless a source install
    # built it for its CPU's level alone (setup.py, KERAS_SWIFT_HWCAPS=host).
    try:
        from _swiftkeras._build import LEVEL
    except ImportError:
        LEVEL = None
    return LEVEL or "baseline"


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in _CPU_FLAGS if flag in have]
    except OSError:
        pass
    return []


def _openblas():
    """The OpenBLAS the engine loaded (the system one, or the copy a repaired
    wheel vendors), asked through its own entry points."""
    path = None
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                name = line.rsplit(None, 1)[-1] if line.strip() else ""
                if "libopenblas" in os.path.basename(name):
                    path = name
                    break
    except OSError:
        pass
    if path is None:
        return {"library": None}
    info = {"library": path}
    try:
        # Already mapped: dlopen hands back the loaded copy, not a second one.
        lib = ctypes.CDLL(path)
    except OSError as e:
        info["error"] = str(e)
        return info
    for key, fn in (("config", "openblas_get_config"), ("core", "openblas_get_corename")):
        f = getattr(lib, fn, None)
        if f is not None:
            f.restype = ctypes.c_char_p
            info[key] = f().decode("utf-8", "replace").strip()
    f = getattr(lib, "openblas_get_num_threads", None)
    if f is not None:
        f.restype = ctypes.c_int
        info["threads"] = f()
    return info


def config():
    """``show_config()``'s facts as a dict."""
    import _swiftkeras

    import keras_swift

    engine = _swiftkeras.engine_library()
    variant = _engine_variant(engine)
    try:
        from _swiftkeras import _build

        build = dict(_build.BUILD)
    except ImportError:
        build = {}
    try:
        import keras

        keras_version = keras.__version__
    except ImportError:
        keras_version = None
    import numpy

    return {
        "keras_swift": keras_swift.__version__,
        "engine": {
            "library": engine,
            "variant": variant,
            "compiled_for": _LEVEL_FEATURES.get(variant, variant),
            "abi_version": _swiftkeras.abi_version(),
            "threads": _swiftkeras.get_num_threads(),
            "build": build,
        },
        "cpu": {"machine": platform.machine(), "flags": _cpu_flags()},
        "openblas": _openblas(),
        "keras": keras_version,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
    }


def show_config(mode="stdout"):
    """Prints the loaded engine build (which glibc-hwcaps copy, what it was
    compiled for, the toolchain), the CPU's features, OpenBLAS (version and
    build options, core kernel, threads) and the Keras, NumPy and Python
    versions. ``mode="dicts"`` returns them instead."""
    info = config()
    if mode == "dicts":
        return info
    if mode != "stdout":
        raise ValueError(f"show_config: mode must be 'stdout' or 'dicts', got {mode!r}")
    engine, blas = info["engine"], info["openblas"]
    lines = [
        f"keras-swift {info['keras_swift']}",
        f"engine:   {engine['library']}",
        f"  variant:      {engine['variant']}, compiled for {engine['compiled_for']}",
        f"  ABI version:  {engine['abi_version']}",
        f"  threads:      {engine['threads']} (KERAS_SWIFT_NUM_THREADS / keras_swift.set_num_threads)",
    ]
    for key, value in engine["build"].items():
        lines.append(f"  {key + ':':<13} {value}")
    lines += [
        f"cpu:      {info['cpu']['machine']}; {' '.join(info['cpu']['flags']) or 'no SIMD flags found'}",
        f"openblas: {blas.get('library') or 'not loaded'}",
    ]
    for key in ("config", "core", "threads", "error"):
        if key in blas:
            lines.append(f"  {key + ':':<13} {blas[key]}")
    lines += [
        f"keras:    {info['keras'] or 'not installed'}",
        f"numpy:    {info['numpy']}",
        f"python:   {info['python']}",
    ]
    print("\n".join(lines))
