"""Tests for keras_swift_hook, the import hook behind KERAS_BACKEND=swift.

Anything that imports Keras runs in a subprocess: the hook changes how Keras
modules are compiled, and Keras reads its backend once per process.

Most tests plug a stand-in ``keras_swift`` package (Keras's numpy backend
under the names the hook imports) so they run before the Swift engine is
built. The ``real_backend`` tests use the actual package and are skipped only
while the native ``_swiftkeras`` module is missing.
"""

import ast
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
HOOK_FILE = PYTHON_DIR / "keras_swift_hook.py"
KERAS_DIR = Path(importlib.util.find_spec("keras").origin).parent
SUBPROCESS_TIMEOUT = 120


@pytest.fixture(scope="module")
def hook():
    """The hook module, loaded from this checkout.

    Importing it installs its finder; remove the finder again afterwards
    unless it was already there (an installed .pth put it there).
    """
    was_installed = any(
        getattr(f, "_keras_swift_hook_finder", False) for f in sys.meta_path
    )
    spec = importlib.util.spec_from_file_location("keras_swift_hook", HOOK_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    if not was_installed:
        module.uninstall()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

DUMMY_FILES = {
    "keras_swift/__init__.py": "",
    "keras_swift/src/__init__.py": "",
    # Keras's numpy backend standing in for the Swift one.
    "keras_swift/src/compat_3_15.py": """
        from keras.src.backend.numpy import *  # noqa: F403
        from keras.src.backend.numpy import core, image, linalg, math  # noqa
        from keras.src.backend.numpy import nn, numpy, random, rnn  # noqa
        MARKER = "dummy-swift"
    """,
    "keras_swift/src/trainer.py": """
        from keras.src.backend.numpy.trainer import NumpyTrainer

        class Trainer(NumpyTrainer):
            pass
    """,
    "keras_swift/src/layer.py": """
        class BackendLayer:
            pass
    """,
    "keras_swift/src/export.py": """
        from keras.src.backend.numpy.export import NumpyExportArchive

        class SavedModelExportArchive(NumpyExportArchive):
            pass
    """,
}


def write_files(root, files):
    for rel, text in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def dummy(tmp_path):
    root = tmp_path / "dummy"
    write_files(root, DUMMY_FILES)
    return root


def keras_copy(root, edits):
    """A Keras importable from ``root`` with ``edits`` applied.

    Only directories on the way to an edited file are real; everything else
    is a symlink to the installed Keras, so this costs milliseconds. The hook
    locates version.py from the imported module's (unresolved) path, so the
    copy's version.py is the one it reads.
    """
    edits = {Path(rel): fn for rel, fn in edits.items()}
    real_dirs = {Path("keras")} | {
        parent for rel in edits for parent in rel.parents if parent != Path(".")
    }

    def build(rel_dir):
        (root / rel_dir).mkdir(parents=True, exist_ok=True)
        for entry in (KERAS_DIR.parent / rel_dir).iterdir():
            rel = rel_dir / entry.name
            if entry.name == "__pycache__":
                continue
            if rel in real_dirs:
                build(rel)
            elif rel in edits:
                (root / rel).write_text(edits[rel](entry.read_text()))
            else:
                (root / rel).symlink_to(entry)

    build(Path("keras"))
    return root


def set_version(version):
    def edit(text):
        lines = [
            f'__version__ = "{version}"' if line.startswith("__version__") else line
            for line in text.splitlines()
        ]
        return "\n".join(lines) + "\n"

    return edit


def run_python(code, backend, path=(), extra_env=None, home=None, use_pth=True, site_dir=None):
    """Run ``code`` in a fresh interpreter with the hook activated.

    The hook is activated the way an installed wheel does it: the checkout's
    python/ directory is processed as a site directory, so its
    keras_swift_hook.pth line runs. ``path`` entries go in front of
    sys.path (a Keras copy, a dummy backend package).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    if home is not None:
        env["KERAS_HOME"] = str(home)
    env.update(extra_env or {})
    site_dir = site_dir or PYTHON_DIR
    if use_pth:
        flags = []
        bootstrap = f"import site; site.addsitedir({str(site_dir)!r})\n"
    else:
        # -S: no .pth file runs, not even an installed keras-swift's; the
        # site directories are reached through PYTHONPATH instead.
        flags, bootstrap = ["-S"], ""
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], *site_packages()])
    return subprocess.run(
        [sys.executable, *flags, "-c", bootstrap + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def site_packages():
    import site

    dirs = site.getsitepackages() + [site.getusersitepackages()]
    return [d for d in dirs if os.path.isdir(d)]


def keras_home(tmp_path, backend=None):
    home = tmp_path / "keras_home"
    home.mkdir(exist_ok=True)
    if backend is not None:
        config = {
            "floatx": "float32",
            "epsilon": 1e-07,
            "backend": backend,
            "image_data_format": "channels_last",
        }
        (home / "keras.json").write_text(json.dumps(config))
    return home


def check(result):
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


# Run inside the child: proves every dispatch site took the swift branch.
PROBE_SWIFT = """
    import sys
    import numpy as np
    import keras
    from keras.src import backend
    from keras.src.export import saved_model

    assert keras.backend.backend() == "swift", keras.backend.backend()
    assert backend.MARKER == "dummy-swift"
    assert backend.distribution_lib is None
    assert type(backend.__spec__.loader).__name__ == "KerasSwiftLoader"
    mro = [c.__module__ + "." + c.__name__ for c in keras.Model.__mro__]
    assert "keras_swift.src.trainer.Trainer" in mro, mro
    mro = [c.__module__ + "." + c.__name__ for c in keras.layers.Layer.__mro__]
    assert "keras_swift.src.layer.BackendLayer" in mro, mro
    archive = saved_model.BackendSavedModelExportArchive
    assert archive.__module__ == "keras_swift.src.export", archive
    # DynamicBackend (preprocessing layers) silently returns None for an
    # unknown name; Rescaling goes through it.
    out = keras.layers.Rescaling(0.5)(np.ones((2, 3), "float32"))
    assert np.allclose(keras.ops.convert_to_numpy(out), 0.5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert model.predict(np.ones((4, 3)), verbose=0).shape == (4, 2)
    finders = [f for f in sys.meta_path if getattr(f, "_keras_swift_hook_finder", 0)]
    assert len(finders) == 1, sys.meta_path
    print("SWIFT-OK")
"""


# --------------------------------------------------------------------------
# in-process unit tests (no Keras import)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, supported",
    [
        ("3.13.0", True),
        ("3.14.2", True),
        ("3.15.1", True),
        ("3.15.0rc1", True),
        ("3.15.2.dev2026", True),
        ("3.12.9", False),
        ("3.16.0", False),
        ("4.0.0", False),
        ("2.15.0", False),
        ("garbage", False),
        (None, False),
    ],
)
def test_version_gate(hook, monkeypatch, version, supported):
    monkeypatch.delenv(hook.FORCE_ENV, raising=False)
    if supported:
        hook.check_keras_version(version, "/somewhere")
        return
    with pytest.raises(hook.UnsupportedKerasError) as info:
        hook.check_keras_version(version, "/somewhere")
    message = str(info.value)
    assert "3.13-3.15" in message and hook.FORCE_ENV in message
    assert isinstance(info.value, ImportError)
    monkeypatch.setenv(hook.FORCE_ENV, "1")
    hook.check_keras_version(version, "/somewhere")


def test_reads_version_without_executing(hook, tmp_path):
    (tmp_path / "version.py").write_text(
        'raise SystemExit("never executed")\n__version__ = "3.14.0"\n'
    )
    assert hook.read_keras_version(str(tmp_path)) == "3.14.0"
    assert hook.read_keras_version(str(tmp_path / "missing")) is None
    installed = importlib.metadata.version("keras")
    assert hook.read_keras_version(str(KERAS_DIR / "src")) == installed


def test_configured_backend_precedence(hook, monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "keras.src.backend.config", raising=False)
    home = keras_home(tmp_path, backend="swift")
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert hook.configured_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "")  # empty means unset for Keras
    assert hook.configured_backend() == "swift"
    (home / "keras.json").write_text("{not json")
    assert hook.configured_backend() == "tensorflow"
    (home / "keras.json").unlink()
    assert hook.configured_backend() == "tensorflow"

    class FakeConfig:
        @staticmethod
        def backend():
            return "swift"

    monkeypatch.setitem(sys.modules, "keras.src.backend.config", FakeConfig)
    assert hook.configured_backend() == "swift"


def patched(hook, module, relpath, edit=None):
    source = (KERAS_DIR / "src" / relpath).read_text()
    if edit is not None:
        source = edit(source)
    tree = ast.parse(source)
    change = hook.patch_tree(module, tree, relpath)
    compile(tree, relpath, "exec")
    return change, ast.unparse(tree)


@pytest.mark.parametrize(
    "module, relpath, expected",
    [
        ("keras.src.backend", "backend/__init__.py", "from keras_swift.src.compat_3_15 import *"),
        (
            "keras.src.models.model",
            "models/model.py",
            "from keras_swift.src.trainer import Trainer as Trainer",
        ),
        (
            "keras.src.layers.layer",
            "layers/layer.py",
            "from keras_swift.src.layer import BackendLayer as BackendLayer",
        ),
        (
            "keras.src.export.saved_model",
            "export/saved_model.py",
            "SavedModelExportArchive as BackendSavedModelExportArchive",
        ),
        ("keras.src.utils.backend_utils", "utils/backend_utils.py", "'openvino', 'swift')"),
        ("keras.src.models.model", "models/model.py", "not in ('tensorflow', 'torch', 'swift')"),
        ("keras.src.export.litert", "export/litert.py", "not in ('tensorflow', 'swift')"),
        ("keras.src.export.openvino", "export/openvino.py", "in ('tensorflow', 'jax', 'swift')"),
        (
            "keras.src.optimizers.optimizer",
            "optimizers/optimizer.py",
            "from keras_swift.src.optimizer import BackendOptimizer as BackendOptimizer",
        ),
    ],
)
def test_patches_installed_keras(hook, monkeypatch, module, relpath, expected):
    # Pretend the backend package provides every optional module.
    monkeypatch.setattr(hook, "_module_exists", lambda name: True)
    change, source = patched(hook, module, relpath)
    assert change
    assert expected in source
    # Patching twice is a no-op: the chain now names swift.
    tree = ast.parse(source)
    assert hook.patch_tree(module, tree, relpath) is None
    assert ast.unparse(tree) == source


def test_admission_patch_refuses_an_unknown_structure(hook):
    # Two tests of the backend against the same names: which one gates LiteRT is unclear.
    def twice(source):
        return source.replace(
            'if backend.backend() != "tensorflow":',
            'if backend.backend() != "tensorflow":\n        pass\n    if backend.backend() != "tensorflow":',
            1,
        )

    with pytest.raises(hook.KerasStructureError, match="export_litert"):
        patched(hook, "keras.src.export.litert", "export/litert.py", edit=twice)


def test_orbax_callback_imports_no_jax(hook):
    change, source = patched(hook, "keras.src.callbacks.orbax_checkpoint", "callbacks/orbax_checkpoint.py")
    assert change and "import jax" not in source.split("def ", 1)[0]
    assert "class OrbaxCheckpoint" in source
    tree = ast.parse(source)
    assert hook.patch_tree("keras.src.callbacks.orbax_checkpoint", tree, "x.py") is None


def test_set_random_seed_does_not_import_tensorflow(hook):
    change, source = patched(hook, "keras.src.utils.rng_utils", "utils/rng_utils.py")
    assert change and "set_tensorflow_seed" in source
    body = source.split("def set_random_seed", 1)[1].split("\ndef ", 1)[0]
    assert "tf.available" not in body and "np.random.seed(seed)" in body
    tree = ast.parse(source)
    assert hook.patch_tree("keras.src.utils.rng_utils", tree, "x.py") is None


def test_hook_leaves_test_modules_alone(hook):
    # Test modules are patched by the pytest plugin, not by the start-up hook.
    assert patched(hook, "keras.src.trainers.trainer_test", "trainers/trainer_test.py")[0] is None


def test_optional_classes_fall_back(hook, monkeypatch):
    monkeypatch.setattr(hook, "_module_exists", lambda name: False)
    change, source = patched(hook, "keras.src.layers.layer", "layers/layer.py")
    assert "fallback" in change
    assert "elif backend.backend() == 'swift':\n\n    class BackendLayer:\n        pass" in source
    change, source = patched(hook, "keras.src.export.saved_model", "export/saved_model.py")
    assert (
        "elif backend.backend() == 'swift':\n    from keras.src.backend.numpy.export import "
        "NumpyExportArchive as BackendSavedModelExportArchive" in source
    )


def test_backend_branch_binds_what_builtin_branches_bind(hook):
    _, source = patched(hook, "keras.src.backend", "backend/__init__.py")
    branch = source[source.index("elif backend() == 'swift':") :]
    branch = branch[: branch.index("else:")]
    assert "import Variable as BackendVariable" in branch
    assert "distribution_lib = getattr(" in branch
    # The swift branch sits before the final raise, not after it.
    assert source.index("'swift'") < source.index("Unable to import backend")


def test_dynamic_backend_routes_to_compat_module(hook):
    _, source = patched(hook, "keras.src.utils.backend_utils", "utils/backend_utils.py")
    body = source[source.index("def __getattr__") :]
    assert "if self._backend == 'swift':" in body
    assert "import keras_swift.src.compat_3_15 as _keras_swift_compat" in body
    assert "return getattr(_keras_swift_compat, name)" in body


def test_inserted_branch_keeps_line_numbers(hook):
    relpath = "models/model.py"
    source = (KERAS_DIR / "src" / relpath).read_text()
    tree = ast.parse(source)
    hook.patch_tree("keras.src.models.model", tree, relpath)
    model_class = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Model"
    )
    assert source.splitlines()[model_class.lineno - 1].startswith("class Model(")


# Structural-gate edits: every one must raise, never patch something else.
def as_dict_lookup(text):
    start = text.index('if backend.backend() == "tensorflow":')
    end = text.index("@keras_export", start)
    return (
        text[:start]
        + "from keras.src.backend.numpy.trainer import NumpyTrainer\n"
        + "Trainer = {'numpy': NumpyTrainer}[backend.backend()]\n\n\n"
        + text[end:]
    )


def duplicate_chain(text):
    start = text.index('if backend.backend() == "tensorflow":')
    end = text.index("@keras_export", start)
    return text[:end] + text[start:end] + text[end:]


def drop_raise(text):
    return text.replace(
        "else:\n    raise RuntimeError(\n",
        "else:\n    Trainer = None\n    RuntimeError(\n",
    )


def drop_openvino(text):
    return text.replace('backend.backend() == "openvino"', 'backend.backend() == "mlx"')


@pytest.mark.parametrize(
    "edit, found",
    [(as_dict_lookup, "found 0"), (duplicate_chain, "found 2"), (drop_raise, "found 0"),
     (drop_openvino, "found 0")],
)
def test_structural_gate(hook, edit, found):
    with pytest.raises(hook.KerasStructureError) as info:
        patched(hook, "keras.src.models.model", "models/model.py", edit)
    message = str(info.value)
    assert found in message and "models/model.py" in message
    assert "Trainer class" in message


def test_structural_gate_dynamic_backend(hook):
    def no_whitelist(text):
        return text.replace(
            'if backend not in ("tensorflow", "jax", "torch", "numpy", "openvino"):',
            "if not backend:",
        )

    with pytest.raises(hook.KerasStructureError, match="whitelist"):
        patched(hook, "keras.src.utils.backend_utils", "utils/backend_utils.py", no_whitelist)

    def no_openvino_branch(text):
        return text.replace('if self._backend == "openvino":', "if False:")

    with pytest.raises(hook.KerasStructureError, match="one `if` per built-in"):
        patched(
            hook, "keras.src.utils.backend_utils", "utils/backend_utils.py", no_openvino_branch
        )


def test_structural_gate_needs_one_bound_name(hook):
    def rename_one(text):
        return text.replace("JAXTrainer as Trainer", "JAXTrainer as JaxTrainer")

    with pytest.raises(hook.KerasStructureError, match="bind one name"):
        patched(hook, "keras.src.models.model", "models/model.py", rename_one)


def test_install_is_idempotent(hook):
    first = hook.install()
    assert hook.install() is first
    assert sum(getattr(f, "_keras_swift_hook_finder", 0) for f in sys.meta_path) == 1


def test_finder_ignores_other_modules_and_backends(hook, monkeypatch):
    finder = hook.install()
    monkeypatch.setenv("KERAS_BACKEND", "swift")
    monkeypatch.delitem(sys.modules, "keras.src.backend.config", raising=False)
    assert finder.find_spec("json", None) is None
    assert finder.find_spec("keras.src.ops.numpy", None) is None
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert finder.find_spec("keras.src.backend", [str(KERAS_DIR / "src")]) is None


# --------------------------------------------------------------------------
# subprocess tests with a stand-in backend package
# --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_builtin_backends_untouched(tmp_path, backend):
    if backend == "jax":
        pytest.importorskip("jax")
    result = run_python(
        """
        import sys
        import keras, keras_swift_hook
        assert any(getattr(f, "_keras_swift_hook_finder", 0) for f in sys.meta_path)
        for name in keras_swift_hook._PATCHERS:
            module = sys.modules.get(name)
            if module is not None:
                loader = type(module.__spec__.loader).__name__
                assert loader == "SourceFileLoader", (name, loader)
        print(keras.backend.backend())
        """,
        backend,
        home=keras_home(tmp_path),
        extra_env={"KERAS_SWIFT_HOOK_DEBUG": "1"},
    )
    assert check(result).strip() == backend
    assert "patched" not in result.stderr
    assert f"backend is {backend!r}; not patching" in result.stderr


def test_import_keras_loads_no_jax_under_swift(tmp_path):
    pytest.importorskip("jax")
    # The real backend, in a fresh process: Keras would import jax at start-up.
    result = subprocess.run(
        [sys.executable, "-c", "import sys, keras; keras.callbacks.OrbaxCheckpoint; "
         "print(keras.backend.backend(), 'jax' in sys.modules)"],
        env={**os.environ, "KERAS_BACKEND": "swift", "KERAS_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["swift", "False"]


def test_pth_never_breaks_python(tmp_path):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(PYTHON_DIR / "keras_swift_hook.pth", site_dir)  # module missing
    code = f"import site; site.addsitedir({str(site_dir)!r}); print('alive')"
    # -S keeps an installed keras-swift (and its hook module) off sys.path.
    cmd = [sys.executable, "-S", "-c", code]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERAS")}
    env["PYTHONPATH"] = ""
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "alive"
    assert result.stderr == ""
    env["KERAS_SWIFT_HOOK_DEBUG"] = "1"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "not installed" in result.stderr


def test_swift_via_env_var(tmp_path, dummy):
    result = run_python(
        PROBE_SWIFT,
        "swift",
        path=[dummy],
        home=keras_home(tmp_path),
        extra_env={"KERAS_SWIFT_HOOK_DEBUG": "1"},
    )
    assert "SWIFT-OK" in check(result)
    for target in (
        "keras.src.backend",
        "keras.src.models.model",
        "keras.src.layers.layer",
        "keras.src.export.saved_model",
        "keras.src.utils.backend_utils",
    ):
        assert f"{target}: patched" in result.stderr
    assert "generic optimizer kept" in result.stderr


def test_swift_via_keras_json(tmp_path, dummy):
    result = run_python(PROBE_SWIFT, None, path=[dummy], home=keras_home(tmp_path, "swift"))
    assert "SWIFT-OK" in check(result)


def test_install_without_pth(tmp_path, dummy):
    # `python -S`-style: no .pth processing, the program calls install().
    code = "import keras_swift_hook; keras_swift_hook.install()\n" + textwrap.dedent(
        PROBE_SWIFT
    )
    result = run_python(
        code, "swift", path=[dummy, PYTHON_DIR], home=keras_home(tmp_path), use_pth=False
    )
    assert "SWIFT-OK" in check(result)


def test_set_backend_swift_at_runtime(tmp_path, dummy):
    code = """
        import warnings
        import keras
        assert keras.backend.backend() == "numpy"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keras.config.set_backend("swift")
        import keras_swift_hook
        keras_swift_hook.install()  # a re-imported module must not add a finder
    """
    result = run_python(
        textwrap.dedent(code) + textwrap.dedent(PROBE_SWIFT),
        "numpy",
        path=[dummy],
        home=keras_home(tmp_path),
    )
    assert "SWIFT-OK" in check(result)


def test_optimizer_mixin_when_provided(tmp_path, dummy):
    write_files(
        dummy,
        {
            "keras_swift/src/optimizer.py": """
                from keras.src.optimizers import base_optimizer

                class BackendOptimizer(base_optimizer.BaseOptimizer):
                    pass
            """
        },
    )
    result = run_python(
        """
        import keras
        mro = [c.__module__ for c in keras.optimizers.Adam.__mro__]
        assert "keras_swift.src.optimizer" in mro, mro
        print("OPT-OK")
        """,
        "swift",
        path=[dummy],
        home=keras_home(tmp_path),
    )
    assert "OPT-OK" in check(result)


def test_unsupported_version_in_keras_copy(tmp_path, dummy):
    root = keras_copy(tmp_path / "site", {"keras/src/version.py": set_version("3.16.0")})
    code = """
        import keras_swift_hook
        try:
            import keras
        except keras_swift_hook.UnsupportedKerasError as e:
            print("REFUSED:", e)
    """
    result = run_python(code, "swift", path=[root, dummy], home=keras_home(tmp_path))
    out = check(result)
    assert "REFUSED:" in out and "3.16.0" in out and "3.13-3.15" in out
    assert "KERAS_SWIFT_FORCE_HOOK" in out and str(root) in out
    # The same copy with a built-in backend: the gate never fires.
    result = run_python(
        "import keras; print(keras.version())", "numpy", path=[root], home=keras_home(tmp_path)
    )
    assert check(result).strip() == "3.16.0"


def test_force_override_in_keras_copy(tmp_path, dummy):
    root = keras_copy(
        tmp_path / "site",
        {
            "keras/src/version.py": set_version("3.16.0"),
            # A real (not symlinked) file next to real ones, to check caches.
            "keras/src/models/model.py": lambda text: text,
        },
    )
    # Bytecode writing is on in this child: give it its own copy of the hook
    # so the checkout does not collect a __pycache__.
    site_dir = tmp_path / "hook_site"
    site_dir.mkdir()
    for name in ("keras_swift_hook.py", "keras_swift_hook.pth"):
        shutil.copy(PYTHON_DIR / name, site_dir)
    result = run_python(
        textwrap.dedent(PROBE_SWIFT) + "assert keras.version() == '3.16.0'\n",
        "swift",
        path=[root, dummy],
        home=keras_home(tmp_path),
        extra_env={"KERAS_SWIFT_FORCE_HOOK": "1", "PYTHONDONTWRITEBYTECODE": ""},
        site_dir=site_dir,
    )
    assert "SWIFT-OK" in check(result)
    cache = root / "keras" / "src" / "models" / "__pycache__"
    written = sorted(p.name for p in cache.iterdir())
    # Unpatched neighbours got bytecode; the patched module never does.
    assert any(name.startswith("variable_mapping.") for name in written), written
    assert not any(name.startswith("model.") for name in written), written


def test_structural_gate_in_keras_copy(tmp_path, dummy):
    root = keras_copy(tmp_path / "site", {"keras/src/models/model.py": as_dict_lookup})
    code = """
        import keras_swift_hook
        try:
            import keras
        except keras_swift_hook.KerasStructureError as e:
            print("REFUSED:", e)
    """
    result = run_python(code, "swift", path=[root, dummy], home=keras_home(tmp_path))
    out = check(result)
    assert "REFUSED:" in out and "found 0" in out and "model.py" in out


# --------------------------------------------------------------------------
# the real backend (skipped until the native module is built)
# --------------------------------------------------------------------------


def real_backend_path():
    """PYTHONPATH reaching the built backend: wherever ``_swiftkeras`` lives
    (site-packages after `pip install .`, python/ after an in-place build),
    then this checkout's python/ for an uninstalled keras_swift."""
    # Skip only when the native code is absent (not built, not installed);
    # a built module that fails to import is a failure, reported by the child.
    spec = importlib.util.find_spec("_swiftkeras")
    if spec is None or not spec.origin:
        pytest.skip("the native module _swiftkeras is not built or installed")
    location = Path(spec.origin).resolve()
    # ABI-tagged suffixes only: a bare ".so" also matches the engine library.
    suffixes = tuple(
        [x for x in importlib.machinery.EXTENSION_SUFFIXES if x.count(".") > 1]
        or importlib.machinery.EXTENSION_SUFFIXES
    )
    if spec.submodule_search_locations is not None:
        if not any(p.name.endswith(suffixes) for p in location.parent.iterdir()):
            pytest.skip(f"_swiftkeras at {location.parent} has no compiled extension (not built)")
        return [location.parents[1], PYTHON_DIR]
    return [location.parent, PYTHON_DIR]


REAL_PROBE = """
    import sys
    import numpy as np
    import keras
    from keras.src import backend
    assert keras.backend.backend() == "swift"
    mro = [c.__module__ + "." + c.__name__ for c in keras.Model.__mro__]
    assert "keras_swift.src.trainer.Trainer" in mro, mro
    assert hasattr(backend, "distribution_lib")
    x = keras.ops.add(np.ones((2, 3), "float32"), 1.0)
    assert np.allclose(keras.ops.convert_to_numpy(x), 2.0)
    out = keras.layers.Rescaling(0.5)(np.ones((2, 3), "float32"))
    assert np.allclose(keras.ops.convert_to_numpy(out), 0.5)
    print("REAL-OK")
"""


def test_real_backend_env_var(tmp_path):
    result = run_python(REAL_PROBE, "swift", path=real_backend_path(), home=keras_home(tmp_path))
    assert "REAL-OK" in check(result)


def test_real_backend_set_backend(tmp_path):
    code = textwrap.dedent("""
        import warnings
        import keras
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keras.config.set_backend("swift")
    """) + textwrap.dedent(REAL_PROBE)
    result = run_python(code, "numpy", path=real_backend_path(), home=keras_home(tmp_path))
    assert "REAL-OK" in check(result)
