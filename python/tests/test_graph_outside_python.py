"""A compiled Keras step saved from Python runs with no Python: from C through the C ABI
(Examples/c/run_graph.c, compiled here against the installed engine) and from Swift
(the `run-graph` tool of Examples/RunGraph, built by the README's test command), giving
the outputs Python's own replay gives, and the weights Keras's next step computes."""

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402

import _swiftkeras  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HEADER_DIR = REPO / "Sources" / "TensorEngineC" / "include"
# Where scripts/test.sh builds the Swift products; KERAS_SWIFT_BIN_DIR points elsewhere.
SWIFT_BIN_DIR = Path(os.environ.get("KERAS_SWIFT_BIN_DIR", REPO / ".build-test" / "debug"))


def _numpy_dtype(name):
    return np.dtype(getattr(__import__("ml_dtypes"), name)) if name == "bfloat16" else np.dtype(name)


@pytest.fixture(scope="module")
def saved_step(tmp_path_factory):
    """A traced train step (Dense, Dropout, Adam, a metric) saved to a file, the inputs of
    its next batch written as raw files, and what Python's replay of it returns."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((12,)), layers.Dense(16, activation="relu"), layers.Dropout(0.3), layers.Dense(3),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(9)
    x = rng.normal(size=(24, 12)).astype("float32")
    y = rng.integers(0, 3, size=(24,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, no eager fallback
        model.fit(x[:16], y[:16], batch_size=8, epochs=1, verbose=0, shuffle=False)
    step = model.train_function.compiled
    batch = (x[16:], y[16:])
    graph, inputs = step.lookup(batch)
    folder = tmp_path_factory.mktemp("graph")
    _swiftkeras.graph_save(graph, str(folder / "train.graph"))
    for i, t in enumerate(inputs):
        (folder / f"input_{i}.bin").write_bytes(np.ascontiguousarray(np.asarray(t)).tobytes())
    want = [np.asarray(t) for t in _swiftkeras.graph_run(graph, inputs)]
    # The same batch through Keras's fit: the graph's trailing outputs are the new values
    # of the variables the step assigns, the model's weights among them.
    model.fit(x[16:], y[16:], batch_size=8, epochs=1, verbose=0, shuffle=False)
    return folder, _swiftkeras.graph_describe(graph)["outputs"], want, model


def _check_outputs(folder, specs, want, model):
    assert len(specs) == len(want)
    for i, (spec, w) in enumerate(zip(specs, want)):
        got = np.frombuffer((folder / f"output_{i}.bin").read_bytes(), _numpy_dtype(spec["dtype"]))
        got = got.reshape(spec["shape"])
        if np.issubdtype(got.dtype, np.floating):
            np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6, err_msg=f"output {i}")
        else:
            np.testing.assert_array_equal(got, w, err_msg=f"output {i}")
    # Every weight of the model after Keras's step is among the outputs.
    for v in model.weights:
        value = np.asarray(v)
        assert any(w.shape == value.shape and np.allclose(w, value, rtol=1e-5, atol=1e-6) for w in want), v.path


def _fresh_copy(saved_step, tmp_path):
    folder = saved_step[0]
    for f in folder.iterdir():
        if not f.name.startswith("output_"):
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_a_saved_keras_step_runs_from_c(saved_step, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    lib_dir = Path(_swiftkeras.__file__).parent
    exe = tmp_path / "run_graph"
    subprocess.run([cc, "-O1", "-Wall", "-Werror", str(REPO / "Examples" / "c" / "run_graph.c"), f"-I{HEADER_DIR}",
                    f"-L{lib_dir}", "-lTensorEngineC", f"-Wl,-rpath,{lib_dir}", "-o", str(exe)], check=True)
    folder = _fresh_copy(saved_step, tmp_path)
    run = subprocess.run([str(exe), str(folder / "train.graph"), str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    _check_outputs(folder, *saved_step[1:])
    # A missing input file is an error message and a failing status, not a crash.
    (folder / "input_0.bin").unlink()
    run = subprocess.run([str(exe), str(folder / "train.graph"), str(folder)], capture_output=True, text=True)
    assert run.returncode == 1 and "input_0.bin" in run.stderr


def test_a_saved_keras_step_runs_from_swift(saved_step, tmp_path):
    exe = SWIFT_BIN_DIR / "run-graph"
    if not exe.exists():
        pytest.skip(f"{exe} is not built (scripts/test.sh builds it; or set KERAS_SWIFT_BIN_DIR)")
    folder = _fresh_copy(saved_step, tmp_path)
    run = subprocess.run([str(exe), str(folder / "train.graph"), str(folder)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    _check_outputs(folder, *saved_step[1:])
    described = subprocess.run([str(exe), str(folder / "train.graph"), "--describe"], capture_output=True,
                               text=True, check=True).stdout
    assert described.count("input ") == len(list(folder.glob("input_*.bin")))
    bad = subprocess.run([str(exe), str(folder / "missing.graph"), str(folder)], capture_output=True, text=True)
    assert bad.returncode != 0 and "missing.graph" in bad.stderr
