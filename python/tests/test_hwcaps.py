"""The x86-64-v3 engine build computes what the baseline build computes.

On x86-64 a wheel built for distribution (``KERAS_SWIFT_HWCAPS=x86-64-v3``,
scripts/build_wheel.sh) ships two builds of the engine from the same sources:
``_swiftkeras/libTensorEngineC.so`` (baseline SSE2) and
``_swiftkeras/glibc-hwcaps/x86-64-v3/libTensorEngineC.so`` (AVX2, FMA), which
glibc's loader prefers on a CPU that has them. Every other test runs on
whichever build this machine loads; this one runs a spread of kernels under both,
each in a subprocess, and compares the results. Swift never fuses a * b + c into
an FMA unless the source asks. The float32 polynomial kernels (exp, tanh, sigmoid,
erf, gelu, power, and softmax and the RNN gates through them) ask where the CPU
has FMA, so float32 results may differ in the last bits (a few ulp); float64,
integer and boolean results agree bit for bit.

A source install (``KERAS_SWIFT_HWCAPS=host``, the default) holds one build, for
its CPU's level: the last tests check that choice and the import-time refusal
of an engine compiled for a level the CPU lacks.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

C = pytest.importorskip("_swiftkeras")

PKG_DIR = os.path.dirname(os.path.abspath(C.__file__))
BASELINE = os.path.join(PKG_DIR, "libTensorEngineC.so")
V3 = os.path.join(PKG_DIR, "glibc-hwcaps", "x86-64-v3", "libTensorEngineC.so")

# Writes {name: result} to argv[1]. Each entry is one kernel family: transcendental
# maps, arithmetic with broadcasting, reductions, comparisons and casts, GEMM and
# convolution, normalisation, and gradients through the tape.
SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import _swiftkeras as C

    r = np.random.default_rng(7)

    def t(a):
        a = np.ascontiguousarray(a)
        return C.from_buffer(a, str(a.dtype))

    def run(name, *xs, **attrs):
        return np.asarray(C.op(name, *xs, **attrs))

    out = {"engine": np.array(C.engine_library())}
    for dt in ("float32", "float64"):
        x = t(r.standard_normal((37, 129)).astype(dt) * 3)
        y = t(r.standard_normal((37, 129)).astype(dt))
        pos = t(r.uniform(0.1, 5.0, (37, 129)).astype(dt))
        row = t(r.standard_normal((129,)).astype(dt))
        col = t(r.standard_normal((37, 1)).astype(dt))
        for name in ("tanh", "sigmoid", "exp", "expm1", "log1p", "erf", "gelu", "silu",
                     "softplus", "elu", "selu", "relu", "sin", "cos", "arctan", "abs",
                     "square", "round", "sign"):
            out[f"{name}/{dt}"] = run(name, x)
        for name in ("log", "sqrt", "rsqrt", "reciprocal"):
            out[f"{name}/{dt}"] = run(name, pos)
        for name in ("add", "subtract", "multiply", "divide", "maximum", "minimum", "mod",
                     "arctan2"):
            out[f"{name}/{dt}"] = run(name, x, y)
        out[f"power/{dt}"] = run("power", pos, y)
        out[f"add_row/{dt}"] = run("add", x, row)
        out[f"multiply_col/{dt}"] = run("multiply", x, col)
        out[f"greater/{dt}"] = run("greater", x, y)
        out[f"equal/{dt}"] = run("equal", C.op("round", x), t(np.zeros((1,), dt)))
        for name in ("sum", "mean", "max", "prod"):
            out[f"{name}/{dt}"] = run(name, x, axes=[1])
            out[f"{name}0/{dt}"] = run(name, x, axes=[0])
        out[f"sum_all/{dt}"] = run("sum", x)
        out[f"argmax/{dt}"] = run("argmax", x, axis=1)
        out[f"softmax/{dt}"] = run("softmax", x, axis=-1)
        out[f"log_softmax/{dt}"] = run("log_softmax", x, axis=0)
        out[f"cumsum/{dt}"] = run("cumsum", x, axis=1)
        out[f"matmul/{dt}"] = run("matmul", x, t(r.standard_normal((129, 65)).astype(dt)))
        out[f"sort/{dt}"] = run("sort", x, axis=-1)
        img = t(r.standard_normal((2, 9, 11, 5)).astype(dt))
        k = t(r.standard_normal((3, 3, 5, 4)).astype(dt))
        out[f"conv/{dt}"] = run("conv", img, k, strides=[1, 1], padding="same")
        out[f"max_pool/{dt}"] = run("max_pool", img, pool_size=[2, 2], strides=[2, 2])
        out[f"resize/{dt}"] = run("resize", img, axes=[1, 2], sizes=[13, 7], method="bilinear")
        out[f"cast_int/{dt}"] = run("cast", x, dtype="int32")
    ints = t(r.integers(-1000, 1000, (4099,)).astype("int32"))
    out["cast_i32_f32"] = run("cast", ints, dtype="float32")
    out["cast_f32_f16"] = run("cast", t(r.standard_normal(4099).astype("float32")),
                              dtype="float16").view(np.uint16)

    w = t(r.standard_normal((64, 33)).astype("float32"))
    w.requires_grad = True
    xin = t(r.standard_normal((16, 64)).astype("float32"))
    C.tape_push()
    try:
        h = C.op("gelu", C.op("matmul", xin, w))
        loss = C.op("sum", C.op("log_softmax", C.op("tanh", h), axis=-1))
        (g,) = C.gradient(loss, [w])
    finally:
        C.tape_pop()
    out["grad"] = np.asarray(g)
    np.savez(sys.argv[1], **out)
    """
)


def _run(tmp_path, tag, env_extra):
    path = tmp_path / f"{tag}.npz"
    env = dict(os.environ, **env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_x86_64_v3_build_matches_baseline(tmp_path):
    if not os.path.isfile(V3):
        pytest.skip("no glibc-hwcaps/x86-64-v3 engine installed (not x86-64, or not built "
                    "with KERAS_SWIFT_HWCAPS=x86-64-v3: a source install builds one engine)")
    if os.path.realpath(C.engine_library()) != os.path.realpath(V3):
        pytest.skip(f"this CPU loads the baseline engine ({C.engine_library()})")
    # LD_LIBRARY_PATH is searched before the extension's $ORIGIN runpath, so a
    # directory holding only the baseline library makes the loader take it.
    only_baseline = tmp_path / "baseline"
    only_baseline.mkdir()
    shutil.copyfile(BASELINE, only_baseline / "libTensorEngineC.so")
    ld_path = os.pathsep.join(
        p for p in (str(only_baseline), os.environ.get("LD_LIBRARY_PATH")) if p
    )
    base = _run(tmp_path, "baseline", {"LD_LIBRARY_PATH": ld_path})
    v3 = _run(tmp_path, "v3", {})

    assert os.path.realpath(str(v3.pop("engine"))) == os.path.realpath(V3)
    assert str(base.pop("engine")) == str(only_baseline / "libTensorEngineC.so")
    assert base.keys() == v3.keys()
    differ = []
    for name in sorted(base):
        a, b = base[name], v3[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if a.dtype == np.float32:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
            scale = max(1.0, float(np.max(np.abs(a[np.isfinite(a)]), initial=0)))
            same = np.isclose(a, b, rtol=1e-6, atol=1e-6 * scale, equal_nan=True)
        else:
            same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        if not np.all(same):
            bits = np.max(np.abs(a - b)) if a.dtype.kind in "fc" else None
            differ.append(f"{name} (max |diff| {bits})")
    assert not differ, "x86-64-v3 and baseline builds differ on: " + ", ".join(differ)


def test_cpu_level_rules():
    from _swiftkeras import _cpu

    v3 = set(_cpu.LEVEL_FLAGS["x86-64-v3"])
    assert _cpu.host_level(("x86-64-v3",), v3) == "x86-64-v3"
    assert _cpu.host_level(("x86-64-v2", "x86-64-v3"), v3) == "x86-64-v3"
    assert _cpu.host_level(("x86-64-v2", "x86-64-v3"), v3 - {"fma"}) == "x86-64-v2"
    assert _cpu.host_level(("x86-64-v3",), v3 - {"avx2"}) is None
    assert _cpu.host_level(("x86-64-v3",), None) is None  # no /proc/cpuinfo: baseline
    assert _cpu.missing_flags("x86-64-v3", v3 - {"bmi2", "avx"}) == ["avx", "bmi2"]
    # Each level includes the one below it, as the psABI defines them.
    assert set(_cpu.LEVEL_FLAGS["x86-64-v2"]) < v3 < set(_cpu.LEVEL_FLAGS["x86-64-v4"])


def test_cpu_flags_reads_the_flags_line(tmp_path):
    from _swiftkeras import _cpu

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\n")
    assert _cpu.cpu_flags(str(info)) == {"fpu", "sse2", "avx2", "fma"}
    assert _cpu.cpu_flags(str(tmp_path / "absent")) is None


def test_installed_engine_level_runs_here():
    from _swiftkeras import _build
    from _swiftkeras import _cpu

    level = getattr(_build, "LEVEL", None)
    if level is None:
        pytest.skip("the engine beside the extension is the baseline build")
    assert _cpu.missing_flags(level, _cpu.cpu_flags() or set()) == []
    # One engine, loaded from beside the extension: no glibc-hwcaps copy shadows it.
    assert os.path.realpath(C.engine_library()) == os.path.realpath(BASELINE)
    assert not os.path.exists(os.path.join(PKG_DIR, "glibc-hwcaps", level, "libTensorEngineC.so"))


# Loads _swiftkeras as if its engine had been built for x86-64-v3 on a CPU whose
# /proc/cpuinfo shows none of that level's features.
FOREIGN_CPU = textwrap.dedent(
    """
    import importlib.util, sys, types
    spec = importlib.util.find_spec("_swiftkeras")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["_swiftkeras"] = pkg
    build = types.ModuleType("_swiftkeras._build")
    build.LEVEL = "x86-64-v3"
    sys.modules["_swiftkeras._build"] = build
    cpu_spec = importlib.util.spec_from_file_location(
        "_swiftkeras._cpu", spec.submodule_search_locations[0] + "/_cpu.py")
    cpu = importlib.util.module_from_spec(cpu_spec)
    cpu_spec.loader.exec_module(cpu)
    cpu.cpu_flags = lambda path="/proc/cpuinfo": {"fpu", "sse2"}
    sys.modules["_swiftkeras._cpu"] = cpu
    try:
        spec.loader.exec_module(pkg)
    except ImportError as e:
        print(e)
        sys.exit(3)
    print("loaded")
    """
)


def test_engine_for_a_level_the_cpu_lacks_is_refused():
    proc = subprocess.run([sys.executable, "-c", FOREIGN_CPU], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
    assert "compiled for x86-64-v3" in proc.stdout
    assert "avx2" in proc.stdout and "KERAS_SWIFT_HWCAPS" in proc.stdout
