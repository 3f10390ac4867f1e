"""keras.distribution on the swift backend: the single-process module, and data-parallel
training across 2 and 3 MPI processes (``mpirun``) compared with one process training on
the same global batches (python/tests/mpi_worker.py is each process)."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from swift_env import require_swift

keras = require_swift()

from keras.src.backend import distribution_lib as backend_dl  # noqa: E402

WORKER = Path(__file__).with_name("mpi_worker.py")
MPIRUN = shutil.which("mpirun")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
# One mpirun job imports keras in every rank: ~10 s on 2 cores; the limit only bounds a hang.
JOB_TIMEOUT = 180

needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not HAVE_MPI4PY,
    reason="multi-process tests need Open MPI's mpirun (apt-get install openmpi-bin "
    "libopenmpi-dev) and mpi4py (pip install mpi4py)",
)


# -- one process -------------------------------------------------------------------


def test_one_process_lists_one_cpu_device():
    assert keras.distribution.list_devices() == ["cpu:0"]
    assert keras.distribution.list_devices("CPU") == ["cpu:0"]
    assert keras.distribution.list_devices("gpu") == []
    assert keras.distribution.get_device_count() == 1
    assert backend_dl.num_processes() == 1 and backend_dl.process_id() == 0
    with pytest.raises(ValueError, match="Unknown device type"):
        keras.distribution.list_devices("npu")


def test_mesh_of_unknown_device_raises():
    mesh = keras.distribution.DeviceMesh((2,), ("batch",), ["cpu:0", "cpu:1"])
    with pytest.raises(ValueError, match="Device not found: cpu:1"):
        mesh.backend_mesh


def test_replicated_layouts_pass_and_data_parallel_trains_in_one_process():
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1,), ("batch",), devices)
    layout = keras.distribution.TensorLayout((None, None), mesh)
    x = np.arange(6, dtype="float32").reshape(2, 3)
    assert keras.distribution.distribute_tensor(x, layout) is x
    data_layout = keras.distribution.TensorLayout(("batch", None), mesh)
    assert backend_dl.distribute_data_input(x, data_layout, "batch") is x
    distribution = keras.distribution.DataParallel()
    assert distribution.num_model_replicas == 1
    with distribution.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, np.zeros((2, 2), "float32"), verbose=0)


def test_model_parallel_over_one_device_replicates():
    # A model axis of size 1 splits nothing: nothing to refuse.
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1, 1), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map[".*kernel"] = (None, "model")
    with keras.distribution.ModelParallel(layout_map=layout_map).scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert model.layers[0].kernel.shape == (3, 2)


# -- several processes -------------------------------------------------------------


def _env(**extra):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "swift"
    # Root in a container: Open MPI refuses to start otherwise.
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    # One engine thread per rank: the ranks share this machine's cores.
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _mpirun(n, mode, out, **env):
    cmd = [MPIRUN, "--oversubscribe", "-np", str(n), sys.executable, str(WORKER), mode, str(out)]
    return subprocess.run(
        cmd, env=_env(MPI_WORKER_DIST="1", **env), capture_output=True, text=True,
        timeout=JOB_TIMEOUT,
    )


def _single(mode, out, **env):
    proc = subprocess.run(
        [sys.executable, str(WORKER), mode, str(out)], env=_env(**env),
        capture_output=True, text=True, timeout=JOB_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _weights(result):
    return [result[k] for k in sorted(result) if k.startswith("arr_")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process training on the same global batches."""
    out = tmp_path_factory.mktemp("one")
    _single("train", out)
    result = _load(out / "train_0.npz")
    # The model learns: the comparisons below are not between untrained models.
    assert result["loss"][-1] < result["loss"][0]
    return result


@needs_mpi
@pytest.mark.parametrize(
    "ranks,jit", [(2, "1"), (3, "0")], ids=["2-ranks-compiled", "3-ranks-eager"]
)
def test_data_parallel_equals_one_process(ranks, jit, reference, tmp_path):
    proc = _mpirun(ranks, "train", tmp_path, MPI_WORKER_JIT=jit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [_load(tmp_path / f"train_{r}.npz") for r in range(ranks)]
    for result in results:
        # Every rank holds the same weights, bit for bit (the same sums, the same updates).
        for w, w0 in zip(_weights(result), _weights(results[0])):
            np.testing.assert_array_equal(w, w0)
        for w, ref in zip(_weights(result), _weights(reference)):
            np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-5)
        np.testing.assert_allclose(result["accuracy"], reference["accuracy"], rtol=1e-6)
        np.testing.assert_allclose(result["evaluate"], reference["evaluate"], rtol=1e-5)
        np.testing.assert_allclose(result["predict"], reference["predict"], rtol=1e-5, atol=1e-6)
        # Shuffled: every rank saw the same order (so weights agree bit for bit).
        np.testing.assert_array_equal(result["shuffled"], results[0]["shuffled"])
        np.testing.assert_allclose(result["embedding"], reference["embedding"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["embedding_auc"], reference["embedding_auc"], rtol=1e-5)
        np.testing.assert_array_equal(result["batchnorm"], results[0]["batchnorm"])


@needs_mpi
def test_backend_module_in_two_processes(tmp_path):
    proc = _mpirun(2, "api", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for r in (0, 1):
        result = _load(tmp_path / f"api_{r}.npz")
        assert list(result["devices"]) == ["cpu:0", "cpu:1"]
        assert result["device_count"] == 2 and result["replicas"] == 2
        assert list(result["processes"]) == [2, r]
        assert list(result["mesh_ranks"]) == [0, 1]
        assert result["data_input_kept"]
        mismatched = list(result["mismatched"])
        assert len(mismatched) == 3, mismatched
        assert "num_processes=3, but mpirun started 2" in mismatched[0]
        assert f"but MPI gave this process rank {r}" in mismatched[1]
        assert "job_addresses names 3 processes but mpirun started 2" in mismatched[2]
        # A LayoutMap that shards: fit raises, and so does distribute_tensor.
        errors = list(result["errors"])
        assert len(errors) == 2, errors
        assert all("ModelParallel" in e and "LayoutMap" in e for e in errors), errors
        assert "dense/kernel" in errors[0]


@needs_mpi
def test_hung_rank_ends_the_job_through_the_watchdog(tmp_path):
    proc = _mpirun(2, "hang", tmp_path, KERAS_SWIFT_MPI_TIMEOUT="5")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rank 0: the gradient allreduce did not complete within 5 s" in output, output
    assert "MPI_Abort" in output


@needs_mpi
def test_killed_rank_ends_the_job_and_backup_resumes(reference, tmp_path):
    # Rank 1 is killed (SIGKILL) as the third epoch begins; _mpirun's timeout fails
    # the test if the job hangs instead of ending.
    proc = _mpirun(2, "resume_die", tmp_path)
    assert proc.returncode != 0
    assert "signal 9" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert (tmp_path / "backup").is_dir()
    proc = _mpirun(2, "resume", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for r in (0, 1):
        result = _load(tmp_path / f"resume_{r}.npz")
        # Epochs 1 and 2 came from the backup: this run trained the third only.
        assert len(result["loss"]) == 1
        np.testing.assert_allclose(result["loss"], reference["loss"][2:], rtol=1e-5)
        for w, ref in zip(_weights(result), _weights(reference)):
            np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
