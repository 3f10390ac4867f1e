"""keras_swift.show_config() and the thread-count setting."""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "swift")

import pytest

C = pytest.importorskip("_swiftkeras")


def test_show_config_names_the_loaded_build(capsys):
    import keras

    import keras_swift

    info = keras_swift.show_config(mode="dicts")
    engine = info["engine"]
    assert engine["library"] == C.engine_library()
    assert os.path.isfile(engine["library"])
    if "glibc-hwcaps" in engine["library"]:
        expect = "x86-64-v3"
    else:
        from _swiftkeras import _build

        expect = getattr(_build, "LEVEL", None) or "baseline"
    assert engine["variant"] == expect
    assert engine["threads"] == C.get_num_threads()
    assert info["keras"] == keras.__version__
    blas = info["openblas"]
    assert blas["library"] is not None and "openblas" in os.path.basename(blas["library"])
    assert blas["core"]  # openblas_get_corename: the kernel family picked for this CPU
    assert "OpenBLAS" in blas["config"]
    # The engine holds OpenBLAS to the calling thread and runs its own pool.
    assert blas["threads"] == 1
    keras_swift.show_config()
    out = capsys.readouterr().out
    assert engine["library"] in out and blas["core"] in out and keras.__version__ in out
    with pytest.raises(ValueError):
        keras_swift.show_config(mode="yaml")


def test_set_num_threads_round_trip():
    import keras_swift

    before = keras_swift.get_num_threads()
    try:
        keras_swift.set_num_threads(3)
        assert keras_swift.get_num_threads() == 3 == C.get_num_threads()
        with pytest.raises(ValueError):
            keras_swift.set_num_threads(0)
    finally:
        keras_swift.set_num_threads(before)


def _threads_in_subprocess(value):
    env = dict(os.environ, KERAS_SWIFT_NUM_THREADS=value)
    return subprocess.run(
        [sys.executable, "-c", "import _swiftkeras; print(_swiftkeras.get_num_threads())"],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_env_var_sets_threads():
    done = _threads_in_subprocess("3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_env_var_rejects_nonsense(value):
    done = _threads_in_subprocess(value)
    assert done.returncode != 0
    assert "KERAS_SWIFT_NUM_THREADS" in done.stderr
