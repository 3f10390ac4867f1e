"""Tests for the conformance runner (run.py) and keras_swift's pytest plugin."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parents[1]
KERAS_ROOT = Path(importlib.util.find_spec("keras").origin).parents[1]


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run():
    return load("conformance_run", HERE / "run.py")


@pytest.fixture(scope="module")
def plugin():
    sys.path.insert(0, str(PYTHON_DIR))
    try:
        path = PYTHON_DIR / "keras_swift" / "testing" / "pytest_plugin.py"
        return load("keras_swift_pytest_plugin", path)
    finally:
        sys.path.remove(str(PYTHON_DIR))


# --------------------------------------------------------------------------
# exclusion list
# --------------------------------------------------------------------------


def test_parse_exclusions(plugin, tmp_path):
    path = tmp_path / "excluded.txt"
    path.write_text(
        "# header\n\n"
        "ops/numpy_test.py::NumpyDtypeTest::test_einsum # float8 einsum\n"
        "  CTCLossTest   #   not implemented  \n"
    )
    assert plugin.parse_exclusions(path) == [
        ("ops/numpy_test.py::NumpyDtypeTest::test_einsum", "float8 einsum"),
        ("CTCLossTest", "not implemented"),
    ]


@pytest.mark.parametrize(
    "line", ["CTCLossTest", "CTCLossTest #", "CTCLossTest #   ", "CTCLossTest#why"]
)
def test_exclusion_without_reason_is_an_error(plugin, tmp_path, line):
    path = tmp_path / "excluded.txt"
    path.write_text(f"# ok\n{line}\n")
    with pytest.raises(plugin.ExclusionFileError, match=r"excluded.txt:2"):
        plugin.parse_exclusions(path)


def test_shipped_exclusion_list_parses(plugin):
    assert plugin.DEFAULT_EXCLUSIONS.exists()
    for pattern, reason in plugin.parse_exclusions(plugin.DEFAULT_EXCLUSIONS):
        assert pattern and reason


# --------------------------------------------------------------------------
# plugin end to end, on a stand-in test file (no Keras import)
# --------------------------------------------------------------------------

SAMPLE_TESTS = """
    import pytest
    from conftest import skip_if_backend  # what Keras's repository conftest offers

    @skip_if_backend("swift", "swift-only skip")
    def test_not_on_swift():
        pass

    @pytest.mark.requires_trainable_backend
    def test_trains():
        pass

    @pytest.mark.multi_device
    def test_many_devices():
        pass

    class TestOps:
        def test_excluded(self):
            assert False, "should have been skipped"

        def test_plain(self):
            pass
"""


def run_plugin(tmp_path, backend, exclusions_text, extra=()):
    tests = tmp_path / "sample_test.py"
    tests.write_text(textwrap.dedent(SAMPLE_TESTS))
    exclusions = tmp_path / "excluded.txt"
    exclusions.write_text(exclusions_text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS")}
    env.update(
        KERAS_BACKEND=backend,
        KERAS_HOME=str(tmp_path),
        PYTHONPATH=str(PYTHON_DIR),
        PYTHONDONTWRITEBYTECODE="1",
    )
    cmd = [
        sys.executable, "-m", "pytest", "-p", "keras_swift.testing.pytest_plugin",
        "-p", "no:cacheprovider", "--strict-markers", "-rs", "-c", str(tmp_path / "pytest.ini"),
        f"--keras-swift-exclusions={exclusions}", str(tests), *extra,
    ]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_plugin_applies_exclusions_on_swift(tmp_path):
    result = run_plugin(tmp_path, "swift", "TestOps::test_excluded # not supported yet\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "excluded on swift: not supported yet" in result.stdout
    assert "Requires multiple devices" in result.stdout
    assert "swift-only skip" in result.stdout
    assert "2 passed, 3 skipped" in result.stdout  # trains + plain run on swift
    assert "backend=swift, 1 exclusion(s)" in result.stdout


def test_plugin_ignores_exclusions_on_other_backends(tmp_path):
    result = run_plugin(tmp_path, "numpy", "TestOps::test_excluded # not supported yet\n")
    assert "should have been skipped" in result.stdout  # the list is swift-only
    assert "Trainer not implemented for NumPy" in result.stdout
    assert "1 failed, 2 passed, 2 skipped" in result.stdout


def test_plugin_rejects_entry_without_reason(tmp_path):
    result = run_plugin(tmp_path, "swift", "TestOps::test_excluded\n")
    assert result.returncode == 4  # pytest usage error
    assert "excluded.txt:1" in result.stderr and "<reason>" in result.stderr


FAKE_TRAINER_TEST = """
    import os

    name = os.environ["KERAS_BACKEND"]
    if name == "tensorflow":
        Trainer = "tf"
    elif name == "jax":
        Trainer = "jax"
    elif name == "torch":
        Trainer = "torch"
    elif name == "numpy":
        Trainer = "numpy"
    elif name == "openvino":
        Trainer = "openvino"
    else:
        raise ImportError(f"Invalid backend: {name}")


    def test_trainer_comes_from_keras_swift():
        assert Trainer.__module__ == "keras_swift.src.trainer"
"""


def test_plugin_patches_installed_trainer_test(plugin):
    import ast

    relpath = KERAS_ROOT / "keras" / "src" / "trainers" / "trainer_test.py"
    tree = ast.parse(relpath.read_text())
    change = plugin.patch_test_tree("keras.src.trainers.trainer_test", tree, str(relpath))
    assert change and "1 device table(s)" in change
    source = ast.unparse(tree)
    assert "from keras_swift.src.trainer import Trainer as Trainer" in source
    compile(tree, str(relpath), "exec")
    # Patching twice is a no-op: the chain and the table now name swift.
    tree = ast.parse(source)
    assert plugin.patch_test_tree("keras.src.trainers.trainer_test", tree, str(relpath)) is None
    assert plugin.patch_test_tree("keras.src.models.model", tree, str(relpath)) is None


def test_plugin_patches_trainer_test_chain(tmp_path):
    # Keras's trainers/trainer_test.py raises at import for unknown backends;
    # the plugin splices the swift branch in before pytest rewrites asserts.
    dummy = tmp_path / "dummy" / "keras_swift"
    (dummy / "src").mkdir(parents=True)
    (dummy / "__init__.py").write_text("")
    (dummy / "src" / "__init__.py").write_text("")
    (dummy / "src" / "trainer.py").write_text("class Trainer:\n    pass\n")
    (dummy / "testing").symlink_to(PYTHON_DIR / "keras_swift" / "testing")
    (dummy / "excluded_tests.txt").write_text("")
    result = _run_fake_keras_test(
        tmp_path, "trainers/trainer_test.py", FAKE_TRAINER_TEST,
        [str(dummy.parent), str(PYTHON_DIR)],
    )
    assert "1 passed" in result.stdout, result.stdout + result.stderr


def _run_fake_keras_test(tmp_path, relpath, source, pythonpath):
    """Runs a stand-in Keras test file under the plugin with KERAS_BACKEND=swift."""
    test_file = tmp_path / "keras" / "src" / relpath
    test_file.parent.mkdir(parents=True)
    test_file.write_text(textwrap.dedent(source))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS")}
    env.update(
        KERAS_BACKEND="swift",
        KERAS_HOME=str(tmp_path),
        PYTHONPATH=os.pathsep.join(pythonpath),
        PYTHONDONTWRITEBYTECODE="1",
    )
    cmd = [
        sys.executable, "-m", "pytest", "-p", "keras_swift.testing.pytest_plugin",
        "-p", "no:cacheprovider", "-rs", "-c", str(tmp_path / "pytest.ini"), str(test_file),
    ]
    return subprocess.run(
        cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


FAKE_QUANTIZERS_TEST = """
    import pytest
    from keras.src import backend
    from keras.src import ops


    @ops.custom_gradient
    def straight_through_round(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.multiply(upstream, 3.0)

        return ops.round(x), grad


    @pytest.mark.skipif(
        backend.backend() not in ("tensorflow", "jax", "torch"),
        reason=f"{backend.backend()} doesn't support `custom_gradient`.",
    )
    def test_fake_quant_with_min_max_vars():
        x = ops.array([0.2, 1.7, -2.4])
        if backend.backend() == "tensorflow":
            raise AssertionError("tensorflow block ran")
        if backend.backend() == "jax":
            import jax

            def test_op(x):
                return jax.grad(lambda v: ops.sum(straight_through_round(v)))(x)

            def loss(params, scale):
                rounded, weight, _unused = params
                return ops.sum(straight_through_round(rounded) * weight * scale)

            grads_of_params = jax.jit(jax.grad(loss))

        assert ops.convert_to_numpy(test_op(x)).tolist() == [3.0, 3.0, 3.0]
        w = ops.array([1.0, 2.0, 3.0])
        grads = grads_of_params([x, w, ops.ones((2,))], 2.0)
        assert [ops.convert_to_numpy(g).tolist() for g in grads] == [
            [6.0, 12.0, 18.0],  # 3 * w * scale, through the custom gradient
            [0.0, 4.0, -4.0],  # round(x) * scale
            [0.0, 0.0],  # no effect: zeros, as jax.grad
        ]


    @pytest.mark.skipif(
        backend.backend() not in ("tensorflow", "jax", "torch"),
        reason="needs something else",
    )
    def test_other_skip():
        pass
"""


def test_custom_gradient_patch_is_targeted(plugin):
    import ast

    def patched(module):
        tree = ast.parse(textwrap.dedent(FAKE_QUANTIZERS_TEST))
        plugin._patch_custom_gradient_tests(module, tree, "quantizers_test.py")
        return ast.unparse(tree)

    source = patched("keras.src.quantizers.quantizers_test")
    assert source.count("('tensorflow', 'jax', 'torch', 'swift')") == 1
    custom, other = source.split("def test_other_skip")
    assert "'swift')" in custom and "doesn't support `custom_gradient`" in custom
    assert "'swift')" not in other
    assert "elif backend.backend() == 'swift':" in custom and "jax = _JaxShim()" in custom
    # other modules are left alone
    assert "swift" not in patched("keras.src.layers.merging.merging_test")


FAKE_EXPORT_TEST = """
    import pytest
    from keras.src import backend


    @pytest.mark.skipif(
        backend.backend() not in ("tensorflow", "jax", "torch"),
        reason="`export_saved_model` only currently supports the tensorflow backend.",
    )
    class ExportSavedModelTest:
        @pytest.mark.skipif(backend.backend() != "jax", reason="jax2tf only")
        def test_jax_only(self):
            pass


    @pytest.mark.skipif(
        backend.backend() not in ("tensorflow", "jax"),
        reason="Needs lookup tables",
    )
    class LookupTest:
        pass
"""


def test_export_skips_admit_swift(plugin):
    import ast

    tree = ast.parse(textwrap.dedent(FAKE_EXPORT_TEST))
    plugin._patch_custom_gradient_tests("keras.src.export.saved_model_test", tree, "saved_model_test.py")
    source = ast.unparse(tree)
    exported, lookup = source.split("class LookupTest")
    assert "('tensorflow', 'jax', 'torch', 'swift')" in exported
    # A per-backend skip and one whose reason names another capability stay.
    assert "backend.backend() != 'jax'" in exported and "swift" not in lookup


def test_plugin_runs_custom_gradient_test_on_swift(tmp_path):
    # Upstream skips it on swift; the plugin admits swift to the skipif and
    # gives test_op a swift block copied from the jax one (jax.grad on the
    # swift tape). Needs the engine, unlike the tests above.
    pytest.importorskip("_swiftkeras", reason="native module _swiftkeras not built")
    # The checkout's Python sources with the installed engine: the checkout's
    # python/_swiftkeras holds no built extension, so it must not shadow it.
    sources = tmp_path / "sources"
    sources.mkdir()
    for name in ("keras_swift", "keras_swift_hook.py"):
        (sources / name).symlink_to(PYTHON_DIR / name)
    result = _run_fake_keras_test(
        tmp_path, "quantizers/quantizers_test.py", FAKE_QUANTIZERS_TEST, [str(sources)]
    )
    output = result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout, output
    assert "needs something else" in result.stdout, output


# --------------------------------------------------------------------------
# runner pieces
# --------------------------------------------------------------------------


def junit(tmp_path, body):
    xml = tmp_path / "report.xml"
    xml.write_text(f'<?xml version="1.0"?><testsuites><testsuite>{body}</testsuite></testsuites>')
    return xml


def test_classify_counts(run, tmp_path):
    file = KERAS_ROOT / "keras/src/ops/core_test.py"
    xml = junit(
        tmp_path,
        '<testcase classname="keras.src.ops.core_test.CoreTest" name="test_a"/>'
        '<testcase classname="keras.src.ops.core_test.CoreTest" name="test_b">'
        '<failure message="boom"/></testcase>'
        '<testcase classname="keras.src.ops.core_test.CoreTest" name="test_c">'
        '<skipped message="no"/></testcase>'
        '<testcase classname="keras.src.ops.core_test" name="test_d[x]">'
        '<error message="setup"/></testcase>',
    )
    result = run.classify(file, KERAS_ROOT, xml, tmp_path / "log", 1, False)
    assert result["status"] == "ok"
    counts = tuple(result[k] for k in ("passed", "failed", "skipped", "errors"))
    assert counts == (1, 1, 1, 1)
    assert result["failures"] == [
        "keras/src/ops/core_test.py::CoreTest::test_b",
        "keras/src/ops/core_test.py::test_d[x]",
    ]


def test_classify_missing_framework_vs_own_module(run, tmp_path):
    file = KERAS_ROOT / "keras/src/ops/image_test.py"

    def collect_error(module):
        return junit(
            tmp_path,
            '<testcase classname="" name="keras.src.ops.image_test">'
            '<error message="collection failure">Traceback...\n'
            f"E   ModuleNotFoundError: No module named '{module}'</error></testcase>",
        )

    log = tmp_path / "log"
    result = run.classify(file, KERAS_ROOT, collect_error("tensorflow.python"), log, 2, False)
    assert result["status"] == "not collected (missing tensorflow)"
    assert result["errors"] == 0
    result = run.classify(file, KERAS_ROOT, collect_error("keras_swift.src.nn"), log, 2, False)
    assert result["status"] == "collection error" and result["errors"] == 1


def test_failures_on_missing_frameworks_are_annotated(run, tmp_path):
    file = KERAS_ROOT / "keras/src/ops/nn_test.py"
    xml = junit(
        tmp_path,
        '<testcase classname="keras.src.ops.nn_test.T" name="test_a">'
        "<failure message=\"ModuleNotFoundError: No module named 'torch'\"/></testcase>"
        '<testcase classname="keras.src.ops.nn_test.T" name="test_b">'
        "<failure message=\"No module named 'keras_swift.src.x'\"/></testcase>",
    )
    result = run.classify(file, KERAS_ROOT, xml, tmp_path / "log", 1, False)
    assert result["failed"] == 2 and result["failures_missing"] == {"torch": 1}
    groups, totals = run.summarise({"jax": {"ops/nn_test.py": dict(result, time=1)}}, ["jax"], 0)
    assert "1 failures needing torch" in run.render_table(groups, totals, ["jax"])


def test_classify_crash_and_timeout(run, tmp_path):
    file = KERAS_ROOT / "keras/src/ops/core_test.py"
    log = tmp_path / "log"
    log.write_text("collected 10 items\nFatal Python error: Segmentation fault\n")
    missing = tmp_path / "missing.xml"
    result = run.classify(file, KERAS_ROOT, missing, log, -11, False)
    assert result["status"] == "crashed (signal 11)"
    assert run.classify(file, KERAS_ROOT, missing, log, 0, True)["status"] == "timeout"
    result = run.classify(file, KERAS_ROOT, missing, log, 3, False)
    assert result["status"].startswith("crashed (exit 3")
    assert "Segmentation fault" in result["tail"][-1]


def test_resolve_targets(run):
    files = run.resolve_targets(["keras/src/backend"], KERAS_ROOT, [])
    keys = [run._relkey(f, KERAS_ROOT) for f, _ in files]
    assert keys and all(k.endswith("_test.py") for k in keys)
    for other in ("jax", "torch", "tensorflow", "numpy", "openvino"):
        assert not any(k.startswith(f"backend/{other}/") for k in keys)
    assert any(k.startswith("backend/common/") for k in keys)
    files = run.resolve_targets(
        ["ops/core_test.py::CoreOpsCorrectnessTest", "ops/core_test.py::CoreOpsDtypeTest"],
        KERAS_ROOT,
        [],
    )
    assert [n for _, n in files] == [["CoreOpsCorrectnessTest", "CoreOpsDtypeTest"]]
    files = run.resolve_targets(["keras/src/ops"], KERAS_ROOT, ["ops/numpy_test.py"])
    assert not any(f.name == "numpy_test.py" for f, _ in files)


def test_table_side_by_side(run):
    ok = {"passed": 3, "failed": 1, "skipped": 0, "errors": 0, "status": "ok", "time": 1.0}
    missing = dict(ok, passed=0, failed=0, status="not collected (missing tensorflow)")
    results = {
        "swift": {"ops/a_test.py": ok, "ops/b_test.py": missing},
        "jax": {"ops/a_test.py": dict(ok, failed=0, passed=4), "ops/b_test.py": missing},
    }
    groups, totals = run.summarise(results, ["swift", "jax"], 0)
    table = run.render_table(groups, totals, ["swift", "jax"])
    header, _, row = table.splitlines()[:3]
    assert "swift pass" in header and "jax pass" in header
    assert row.split()[:10] == ["ops", "2", "3", "1", "0", "0", "4", "0", "0", "0"]
    assert "not collected (missing tensorflow)" in row
    md = run.render_table(groups, totals, ["swift", "jax"], markdown=True)
    assert md.splitlines()[-1].startswith("| **TOTAL** | **2** | **3** | **1**")


def test_end_to_end_numpy(tmp_path):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    cmd = [
        sys.executable, str(HERE / "run.py"), "--backend", "numpy", "keras/src/tree",
        "--json", str(out_json), "--markdown", str(out_md), "--timeout", "300",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS")}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out_json.read_text())
    counts = data["files"]["numpy"]["tree/tree_test.py"]
    assert counts["status"] == "ok" and counts["passed"] > 0 and counts["failed"] == 0
    assert "| tree |" in out_md.read_text()
    assert "TOTAL" in result.stdout
