"""pytest plugin for running Keras's own test files on any backend.

    cd "$(python -c 'import importlib.util as u, os
print(os.path.dirname(os.path.dirname(u.find_spec("keras").origin)))')"
    KERAS_BACKEND=swift pytest -p keras_swift.testing.pytest_plugin \\
        -p no:cacheprovider keras/src/ops

(python/tests/conformance/run.py does this one file per process and
tabulates the results.)

The Keras wheel ships its ``*_test.py`` files but not the repository's
``conftest.py``, which registers the custom markers and skips tests the
backend cannot run. This plugin stands in for it:

* registers ``requires_trainable_backend`` and ``multi_device``;
* provides ``conftest.skip_if_backend``, which seven test files import from
  the repository's conftest (only when no real ``conftest`` module is loaded,
  so a Keras source checkout keeps its own);
* skips ``requires_trainable_backend`` tests on numpy/openvino (as upstream)
  and ``multi_device`` tests unless the backend sees more than one device;
* on the swift backend, skips the tests listed in
  ``keras_swift/excluded_tests.txt`` (format described in that file;
  ``--keras-swift-exclusions=PATH`` reads another file, ``=none`` none);
* on the swift backend, lets ``trainers/trainer_test.py`` import: its own
  backend if-chain raises for unknown names, and pytest imports test modules
  through its assertion rewriter, bypassing keras_swift_hook's finder. The
  hook's Trainer patch is applied to that file's AST just before pytest
  rewrites its asserts (``_TEST_PATCHERS``), which also gives its per-backend
  CPU-device table a swift entry. (With ``--assert=plain`` the file still
  fails to import.) These patchers live here, not in the hook, so that the
  hook every Python process loads carries nothing test-only.
* on the swift backend, teaches the helpers that build and classify sparse
  test inputs by backend name the swift ``SparseTensor`` (below). Only input
  construction and type dispatch change; no assertion or expected value does.
* on the swift backend, runs the ``custom_gradient`` tests of
  ``quantizers/quantizers_test.py``, which upstream skips for every backend
  but tensorflow, jax and torch, and the float8 training loops of
  ``layers/core/{dense,einsum_dense}_test.py``, written per backend (below).

Sparse test helpers extended for swift
--------------------------------------
Keras's sparse tests build their inputs in ``if backend.backend() ==
"tensorflow": ... elif backend.backend() == "jax": ...`` chains that know no
other backend, so on swift they leave the input unbound (or call
``self.fail``). ``_SPARSE_INPUT_BUILDERS`` lists exactly the functions whose
chain gets an ``elif backend.backend() == "swift":`` branch:

* ``ops/numpy_test.py``: the module helpers ``create_sparse_tensor`` and
  ``create_indexed_slices`` (they run at import time, inside the
  ``SparseTest`` parameter lists, hence the AST patch), and the test methods
  ``test_matmul_sparse``, ``test_take_sparse``, ``test_bincount`` and
  ``test_concatenate_sparse``;
* ``ops/core_test.py``: ``test_convert_to_tensor_sparse`` and
  ``test_shape_sparse``;
* ``layers/merging/merging_test.py::test_sparse``,
  ``layers/core/embedding_test.py::test_correctness_sparse``,
  ``layers/core/dense_test.py::test_dense_sparse``,
  ``layers/reshaping/flatten_test.py::test_flatten``,
  ``layers/reshaping/permute_test.py::test_permute``,
  ``optimizers/optimizer_sparse_test.py``: ``test_sparse_gradients`` and
  ``test_sparse_correctness``;
* ``keras.src.testing.test_case.create_eager_tensors`` (builds
  ``run_layer_test``'s sparse inputs): a library module imported normally,
  so that one function is recompiled from its patched source when the
  plugin is configured.

The swift branch is a copy of the function's own jax branch in which the
``import jax...`` statements bind ``_JaxShim``/``_JaxSparseShim`` instead:
``jax_sparse.BCOO((values, indices), shape=...)`` builds a swift
``SparseTensor`` from the same indices and values (a batched BCOO's batch
coordinates become leading index columns), ``BCOO.fromdense`` calls
``SparseTensor.fromdense`` (``n_batch`` only changes jax's storage layout,
not the values), and ``jax.numpy`` is ``keras.ops``. So the swift inputs are
exactly the jax inputs, by construction.

Two classifiers are extended as well:

* ``numpy_test.sparseness`` classifies BCOO by ``n_dense`` ("slices" when
  > 0) but any class named ``SparseTensor`` as "sparse"; a check run first
  classifies the swift ``SparseTensor`` like BCOO (``n_dense > 0`` ->
  "slices", else "sparse");
* ``keras.src.testing.TestCase.assertSparse`` knows tf and jax types and
  otherwise asserts ``sparse=False``; on swift it checks ``isinstance(x,
  SparseTensor)`` (a KerasTensor still uses its ``.sparse`` flag).

Custom-gradient tests run on swift
----------------------------------
``quantizers/quantizers_test.py`` marks ``test_fake_quant_with_min_max_vars``
``skipif(backend.backend() not in ("tensorflow", "jax", "torch"),
reason="... doesn't support `custom_gradient`.")``; the swift backend does
support ``ops.custom_gradient``. In that file only, every ``skipif`` whose
reason names ``custom_gradient`` gets ``"swift"`` appended to its backend
tuple (``_ADMIT_SWIFT``).

That test builds its ``test_op``, and the dense/einsum_dense
``test_quantize_float8`` tests their ``train_one_step`` (float8 delayed
scaling, whose scale and amax-history updates arrive through a custom
gradient), in one block per backend, so on swift the name stays unbound.
The functions in ``_CUSTOM_GRADIENT_TESTS`` get a swift block copied from
the jax block, as for the sparse helpers above, in which ``jax.grad`` is
``_JaxShim.grad`` (the gradient of the scalar ``f(x, ...)`` with respect to
the tensor or list of tensors ``x``, taken on the swift tape) and
``jax.jit`` the identity. The expected outputs and gradients are untouched.

Export tests run on swift
-------------------------
``export/saved_model_test.py``, ``export/onnx_test.py`` and ``export/openvino_test.py``
skip every backend but tensorflow, jax and torch (and openvino) (reasons
"`export_saved_model` only currently supports ...", "Export only currently supports the
TF and JAX backends", "`export_onnx` only ...", "`export_openvino` only ..."); the swift
backend exports these formats, so those class-level skipifs admit swift too
(``_ADMIT_SWIFT``). The LiteRT tests stay skipped: they gate on the tensorflow backend by
``!=`` tests throughout, module level included. Their per-backend skips (jax2tf arguments, TF-only lookup tables)
are left as they are.

Importing this plugin also installs keras_swift_hook when it is available, so
``pytest -p keras_swift.testing.pytest_plugin`` works without the .pth file.
"""

import os
from pathlib import Path

import pytest

try:
    import keras_swift_hook
except ImportError:  # the plugin is still useful for built-in backends
    keras_swift_hook = None

SWIFT = "swift"
DEFAULT_EXCLUSIONS = Path(__file__).resolve().parent.parent / "excluded_tests.txt"

# Every custom marker used by Keras 3.15.1's test files (the rest are pytest's
# own skipif/xfail/parametrize).
MARKERS = {
    "requires_trainable_backend": "mark test for trainable backend only",
    "multi_device": "mark test for running with multiple devices only",
}

# Test modules whose import-time backend chains keras_swift_hook can patch.
_TEST_MODULE_PATHS = {
    ("keras", "src", "trainers", "trainer_test.py"): "keras.src.trainers.trainer_test",
    ("keras", "src", "ops", "numpy_test.py"): "keras.src.ops.numpy_test",
    ("keras", "src", "ops", "core_test.py"): "keras.src.ops.core_test",
    ("keras", "src", "layers", "merging", "merging_test.py"): "keras.src.layers.merging.merging_test",
    ("keras", "src", "layers", "core", "embedding_test.py"): "keras.src.layers.core.embedding_test",
    ("keras", "src", "layers", "core", "dense_test.py"): "keras.src.layers.core.dense_test",
    ("keras", "src", "layers", "core", "einsum_dense_test.py"): "keras.src.layers.core.einsum_dense_test",
    ("keras", "src", "layers", "reshaping", "flatten_test.py"): "keras.src.layers.reshaping.flatten_test",
    ("keras", "src", "layers", "reshaping", "permute_test.py"): "keras.src.layers.reshaping.permute_test",
    ("keras", "src", "optimizers", "optimizer_sparse_test.py"): "keras.src.optimizers.optimizer_sparse_test",
    ("keras", "src", "quantizers", "quantizers_test.py"): "keras.src.quantizers.quantizers_test",
    ("keras", "src", "export", "saved_model_test.py"): "keras.src.export.saved_model_test",
    ("keras", "src", "export", "onnx_test.py"): "keras.src.export.onnx_test",
    ("keras", "src", "export", "openvino_test.py"): "keras.src.export.openvino_test",
}

# Functions whose backend chain gets a swift branch built from its jax branch
# (see the module docstring), and the functions whose sparse classifier gets
# the swift type.
_SPARSE_INPUT_BUILDERS = {
    "keras.src.ops.numpy_test": (
        "create_sparse_tensor",
        "create_indexed_slices",
        "test_matmul_sparse",
        "test_take_sparse",
        "test_bincount",
        "test_concatenate_sparse",
    ),
    "keras.src.ops.core_test": (
        "test_convert_to_tensor_sparse",
        "test_shape_sparse",
    ),
    "keras.src.layers.merging.merging_test": ("test_sparse",),
    "keras.src.layers.core.embedding_test": ("test_correctness_sparse",),
    "keras.src.layers.core.dense_test": ("test_dense_sparse",),
    "keras.src.layers.reshaping.flatten_test": ("test_flatten",),
    "keras.src.layers.reshaping.permute_test": ("test_permute",),
    "keras.src.optimizers.optimizer_sparse_test": (
        "test_sparse_gradients",
        "test_sparse_correctness",
    ),
    # a library module, patched in place when the plugin is configured
    "keras.src.testing.test_case": ("create_eager_tensors",),
}
_SPARSENESS_CLASSIFIERS = {"keras.src.ops.numpy_test": ("sparseness",)}

# Modules whose custom_gradient skipifs admit swift, and the test functions
# whose per-backend gradient block gets a swift copy of the jax block (see
# "Custom-gradient tests run on swift" above).
# Per module, the words of the skip reasons naming a capability swift has: those
# ``skipif(backend.backend() not in (...))`` admit swift (the export tests: see "Export
# tests run on swift" above).
_ADMIT_SWIFT = {
    "keras.src.quantizers.quantizers_test": ("custom_gradient",),
    "keras.src.export.saved_model_test": ("`export_saved_model` only", "Export only currently"),
    "keras.src.export.onnx_test": ("`export_onnx` only",),
    "keras.src.export.openvino_test": ("`export_openvino` only",),
}
_CUSTOM_GRADIENT_TESTS = {
    "keras.src.quantizers.quantizers_test": ("test_fake_quant_with_min_max_vars",),
    "keras.src.layers.core.dense_test": ("test_quantize_float8",),
    "keras.src.layers.core.einsum_dense_test": ("test_quantize_float8",),
}

_state = {"exclusions": [], "exclusions_file": None}


class ExclusionFileError(pytest.UsageError):
    pass


def parse_exclusions(path):
    """``[(substring, reason), ...]`` from an exclusion file.

    Raises ``ExclusionFileError`` naming the line for an entry with no
    reason: an unexplained skip is how regressions hide.
    """
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            pattern, sep, reason = line.partition(" #")
            pattern, reason = pattern.strip(), reason.strip()
            if not sep or not reason or not pattern:
                raise ExclusionFileError(
                    f"{path}:{lineno}: expected '<node-id substring> # <reason>', "
                    f"got {line!r}"
                )
            entries.append((pattern, reason))
    return entries


def current_backend():
    """The Keras backend name, without importing Keras if it is not loaded."""
    import sys

    config = sys.modules.get("keras.src.backend.config")
    if config is not None and hasattr(config, "backend"):
        return config.backend()
    if keras_swift_hook is not None:
        return keras_swift_hook.configured_backend()
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


def pytest_addoption(parser):
    group = parser.getgroup("keras_swift")
    group.addoption(
        "--keras-swift-exclusions",
        default=None,
        metavar="PATH",
        help=(
            "exclusion list applied on the swift backend "
            f"(default: {DEFAULT_EXCLUSIONS}; 'none' disables it)"
        ),
    )


def pytest_configure(config):
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    _import_torch_before_tensorflow()

    option = config.getoption("--keras-swift-exclusions")
    if option != "none":
        path = Path(option) if option else DEFAULT_EXCLUSIONS
        if option or path.exists():
            _state["exclusions"] = parse_exclusions(path)
            _state["exclusions_file"] = path

    backend = current_backend()
    if backend == SWIFT:
        _patch_test_module_imports()
        _patch_assert_sparse()
    elif backend == "jax":
        _jax_full_precision_on_gpu()


def pytest_report_header(config):
    backend = current_backend()
    line = f"keras_swift plugin: backend={backend}"
    if backend == SWIFT and _state["exclusions_file"] is not None:
        line += (
            f", {len(_state['exclusions'])} exclusion(s) from {_state['exclusions_file']}"
        )
    return line


def pytest_collection_modifyitems(config, items):
    backend = current_backend()
    trainable = pytest.mark.skip(
        reason="Trainer not implemented for NumPy and OpenVINO backend."
    )
    multi_device = None
    if not _has_multiple_devices(backend):
        multi_device = pytest.mark.skip(reason="Requires multiple devices")
    exclusions = _state["exclusions"] if backend == SWIFT else []
    for item in items:
        if backend in ("numpy", "openvino") and "requires_trainable_backend" in item.keywords:
            item.add_marker(trainable)
        if multi_device is not None and "multi_device" in item.keywords:
            item.add_marker(multi_device)
        for pattern, reason in exclusions:
            if pattern in item.nodeid:
                item.add_marker(pytest.mark.skip(reason=f"excluded on swift: {reason}"))
                break


def skip_if_backend(given_backend, reason):
    """The helper Keras's repository conftest.py exports to its tests."""
    return pytest.mark.skipif(current_backend() == given_backend, reason=reason)


def pytest_collectstart(collector):
    # Runs before each test module is imported, after pytest has loaded any
    # conftest.py on the way there: a real repository conftest wins.
    import sys
    import types

    if isinstance(collector, pytest.Module) and "conftest" not in sys.modules:
        stand_in = types.ModuleType(
            "conftest", "keras_swift stand-in for Keras's repository conftest.py"
        )
        stand_in.skip_if_backend = skip_if_backend
        sys.modules["conftest"] = stand_in


def _has_multiple_devices(backend):
    # Upstream's conftest asks jax and torch; the Swift engine is one CPU.
    try:
        if backend == "jax":
            import jax

            return jax.device_count() > 1
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.device_count() > 1
            if hasattr(torch, "xpu") and torch.xpu.is_available():
                return torch.xpu.device_count() > 1
    except ImportError:
        pass
    return False


def _import_torch_before_tensorflow():
    # Upstream's conftest: importing tensorflow before torch can segfault
    # when a test later imports torch. Only matters when both exist.
    import importlib.util

    if importlib.util.find_spec("torch") and importlib.util.find_spec("tensorflow"):
        import torch  # noqa: F401


def _jax_full_precision_on_gpu():
    # Upstream's conftest disables TF32 matmuls so tolerances hold on GPU.
    try:
        import jax
    except ImportError:
        return
    if jax.default_backend() == "gpu":
        jax.config.update("jax_default_matmul_precision", "float32")


def _test_module_name(filename):
    parts = Path(filename).parts
    for suffix, module in _TEST_MODULE_PATHS.items():
        if parts[-len(suffix) :] == suffix:
            return module
    return None


def _add_device_table_entries(tree):
    """Give {"tensorflow": ..., "jax": ..., "torch": ...} device-name tables a
    swift entry (its CPU device is "cpu"). Returns how many tables changed."""
    import ast

    changed = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict) or not node.keys:
            continue
        keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        if {"tensorflow", "jax", "torch"} <= set(keys) and SWIFT not in keys:
            node.keys.append(ast.copy_location(ast.Constant(SWIFT), node.keys[-1]))
            node.values.append(ast.copy_location(ast.Constant("cpu"), node.values[-1]))
            changed += 1
    return changed


def _patch_trainer_test(tree, filename):
    """``trainers/trainer_test.py`` picks its Trainer with an if-chain that
    raises for unknown names (the hook's model.py patch, applied to a test
    module), and its PyDataset looks its CPU device up in a per-backend table."""
    hook = keras_swift_hook
    trainer = hook._class_patcher("test Trainer class", hook.TRAINER_MODULE, hook.TRAINER_CLASS)
    done = trainer(tree, filename)
    tables = _add_device_table_entries(tree)
    if done is None and not tables:
        return None
    return f"{done}; {tables} device table(s)"


# Import-time backend chains in test modules. Pytest's assertion rewriter, not
# the hook's finder, loads these, so the hook never sees them.
_TEST_PATCHERS = {"keras.src.trainers.trainer_test": _patch_trainer_test}


def patch_test_tree(module_name, tree, filename):
    """Apply the swift patch for the test module ``module_name`` to ``tree`` in
    place; returns a description of the change, or ``None``."""
    patcher = _TEST_PATCHERS.get(module_name)
    return None if patcher is None else patcher(tree, filename)


def _patch_test_module_imports():
    """Apply keras_swift_hook's patch to test modules pytest rewrites.

    Hooks two functions of pytest's assertion rewriter (stable for years, but
    private): ``rewrite_asserts`` gets the swift branch spliced in first, and
    ``_read_pyc`` ignores any cached bytecode of those files, which would hold
    the unpatched chain.
    """
    if keras_swift_hook is None:
        return
    try:
        from _pytest.assertion import rewrite
    except ImportError:
        return
    if getattr(rewrite.rewrite_asserts, "_keras_swift_wrapped", False):
        return
    original_rewrite = rewrite.rewrite_asserts
    original_read_pyc = getattr(rewrite, "_read_pyc", None)

    def rewrite_asserts(mod, source, module_path=None, config=None):
        name = _test_module_name(module_path) if module_path else None
        if name is not None:
            patch_test_tree(name, mod, str(module_path))
            _patch_sparse_helpers(name, mod, str(module_path))
            _patch_custom_gradient_tests(name, mod, str(module_path))
        return original_rewrite(mod, source, module_path, config)

    rewrite_asserts._keras_swift_wrapped = True
    rewrite.rewrite_asserts = rewrite_asserts

    if original_read_pyc is not None:

        def _read_pyc(source, pyc, trace=lambda x: None):
            if _test_module_name(source) is not None:
                return None
            return original_read_pyc(source, pyc, trace)

        rewrite._read_pyc = _read_pyc


# ---------------------------------------------------------------------------
# Sparse test helpers (see "Sparse test helpers extended for swift" above)
# ---------------------------------------------------------------------------


class _JaxSparseShim:
    """What a copied jax branch sees as ``jax.experimental.sparse``."""

    class BCOO:
        def __new__(cls, args, *, shape, **layout):
            import numpy as np

            from keras_swift.src.sparse import SparseTensor

            values, indices = args
            if np.ndim(indices) > 2:
                # Batched BCOO: indices (*batch, nse, k), values
                # (*batch, nse, *dense). Prefix each index row with its
                # batch coordinates.
                indices = np.asarray(indices)
                values = np.asarray(values)
                n_batch = indices.ndim - 2
                batch = indices.shape[:n_batch]
                nse, k = indices.shape[n_batch:]
                coords = np.stack(np.indices(batch), axis=-1).reshape(-1, 1, n_batch)
                coords = np.broadcast_to(coords, (coords.shape[0], nse, n_batch))
                indices = np.concatenate(
                    [coords, indices.reshape(-1, nse, k)], axis=-1
                ).reshape(-1, n_batch + k)
                values = values.reshape(-1, *values.shape[n_batch + 1 :])
            return SparseTensor(indices, values, shape)

        @staticmethod
        def fromdense(x, n_batch=0, n_dense=0, **layout):
            from keras_swift.src.sparse import SparseTensor

            return SparseTensor.fromdense(x, n_dense=n_dense)

    @property
    def JAXSparse(self):
        from keras_swift.src.sparse import SparseTensor

        return SparseTensor


class _JaxShim:
    """What a copied jax branch sees as ``jax``: ``jax.numpy`` is keras.ops."""

    @property
    def numpy(self):
        from keras import ops

        return ops

    @property
    def experimental(self):
        import types

        return types.SimpleNamespace(sparse=_JaxSparseShim())

    @staticmethod
    def grad(fun):
        """``jax.grad(fun)``: the gradient of the scalar ``fun(x, *rest)``
        with respect to ``x`` (a tensor or a list/tuple of them, as jax's
        default ``argnums=0``), taken on the swift tape."""

        def gradient(x, *rest):
            from _swiftkeras import _C
            from keras import ops
            from keras.src import tree

            # Fresh leaves: flagging the caller's own tensors would make them
            # gradient sources for everything they feed later.
            leaves = [ops.stop_gradient(ops.convert_to_tensor(t)) for t in tree.flatten(x)]
            for leaf in leaves:
                leaf.requires_grad = True
            _C.tape_push()
            try:
                grads = _C.gradient(fun(tree.pack_sequence_as(x, leaves), *rest), leaves)
            finally:
                _C.tape_pop()
            # jax.grad answers zeros, not None, for an input with no effect.
            grads = [ops.zeros_like(v) if g is None else g for v, g in zip(leaves, grads)]
            return tree.pack_sequence_as(x, grads)

        return gradient

    @staticmethod
    def jit(fun, **options):
        """``jax.jit``: the swift backend runs eagerly."""
        return fun


_SHIMS = {
    "jax": "_JaxShim()",
    "jax.experimental.sparse": "_JaxSparseShim()",
}


def _shim_imports(stmt):
    """Source binding the names ``stmt`` (an import of jax) binds, to shims.

    None when ``stmt`` imports something the shims do not stand in for.
    """
    import ast

    lines = []
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            if alias.asname is None:
                # `import jax.experimental.sparse` binds `jax`
                lines.append(f"{alias.name.split('.')[0]} = {_SHIMS['jax']}")
            elif alias.name in _SHIMS:
                lines.append(f"{alias.asname} = {_SHIMS[alias.name]}")
            else:
                return None
    elif isinstance(stmt, ast.ImportFrom) and not stmt.level:
        for alias in stmt.names:
            full = f"{stmt.module}.{alias.name}"
            if full not in _SHIMS:
                return None
            lines.append(f"{alias.asname or alias.name} = {_SHIMS[full]}")
    else:
        return None
    return "from keras_swift.testing.pytest_plugin import _JaxShim, _JaxSparseShim\n" + (
        "\n".join(lines) + "\n"
    )


def _imports_jax(stmt):
    import ast

    if isinstance(stmt, ast.Import):
        return any(a.name.split(".")[0] == "jax" for a in stmt.names)
    if isinstance(stmt, ast.ImportFrom):
        return (stmt.module or "").split(".")[0] == "jax"
    return False


def _swift_branch_from_jax(jax_body):
    """A copy of ``jax_body`` with its jax imports bound to the shims."""
    import copy

    body = []
    for stmt in jax_body:
        if _imports_jax(stmt):
            source = _shim_imports(stmt)
            if source is None:
                return None
            body.extend(keras_swift_hook._snippet(source, stmt))
        else:
            body.append(copy.deepcopy(stmt))
    return body


def _functions_named(tree, names):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            yield node


def _add_swift_branches(fn):
    """Give every backend chain in ``fn`` with a jax branch (and no swift
    one) a swift branch copied from it. True when one was added."""
    added = False
    for chain in keras_swift_hook._find_chains(fn):
        if SWIFT in chain.names or "jax" not in chain.names:
            continue
        jax_node = dict(chain.branches)["jax"]
        body = _swift_branch_from_jax(jax_node.body)
        if body is None:
            continue
        keras_swift_hook._append_branch(chain, body)
        added = True
    return added


def _patch_sparse_helpers(module_name, tree, filename):
    """Give the listed functions a swift branch and classifier (see above)."""
    import warnings

    builders = _SPARSE_INPUT_BUILDERS.get(module_name, ())
    patched = {fn.name for fn in _functions_named(tree, builders) if _add_swift_branches(fn)}
    classifiers = _SPARSENESS_CLASSIFIERS.get(module_name, ())
    for fn in _functions_named(tree, classifiers):
        arg = fn.args.args[0].arg
        check = keras_swift_hook._snippet(
            "from keras_swift.testing.pytest_plugin import swift_sparseness "
            "as _swift_sparseness\n"
            f"_swift_kind = _swift_sparseness({arg})\n"
            "if _swift_kind is not None:\n"
            "    return _swift_kind\n",
            fn.body[0],
        )
        fn.body[:0] = check
        patched.add(fn.name)
    missing = (set(builders) | set(classifiers)) - patched
    if missing:
        warnings.warn(
            f"keras_swift plugin: {filename}: found no jax sparse branch to "
            f"extend for swift in {sorted(missing)}; their sparse tests will "
            "fail on swift."
        )


def _admitting_skipif_backends(decorator, reason_words):
    """The backend tuple of ``skipif(backend.backend() not in (...), reason=...)`` whose
    reason holds one of ``reason_words``, else None."""
    import ast

    if not (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "skipif"
        and decorator.args
    ):
        return None
    reason = next((k.value for k in decorator.keywords if k.arg == "reason"), None)
    if reason is None or not any(
        isinstance(n, ast.Constant) and any(w in str(n.value) for w in reason_words)
        for n in ast.walk(reason)
    ):
        return None
    condition = decorator.args[0]
    if (
        isinstance(condition, ast.Compare)
        and len(condition.ops) == 1
        and isinstance(condition.ops[0], ast.NotIn)
        and isinstance(condition.comparators[0], ast.Tuple)
    ):
        return condition.comparators[0]
    return None


def _patch_custom_gradient_tests(module_name, tree, filename):
    """Let the custom_gradient and export tests run on swift (see above)."""
    import ast
    import warnings

    if module_name in _ADMIT_SWIFT:
        admitted = 0
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for decorator in fn.decorator_list:
                backends = _admitting_skipif_backends(decorator, _ADMIT_SWIFT[module_name])
                if backends is None or any(
                    isinstance(e, ast.Constant) and e.value == SWIFT for e in backends.elts
                ):
                    continue
                backends.elts.append(ast.copy_location(ast.Constant(SWIFT), backends))
                admitted += 1
        if not admitted:
            warnings.warn(
                f"keras_swift plugin: {filename}: found no skipif naming "
                f"{list(_ADMIT_SWIFT[module_name])} to admit swift to; those tests stay skipped."
            )
    tests = _CUSTOM_GRADIENT_TESTS.get(module_name, ())
    patched = {fn.name for fn in _functions_named(tree, tests) if _add_swift_branches(fn)}
    missing = set(tests) - patched
    if missing:
        warnings.warn(
            f"keras_swift plugin: {filename}: found no jax gradient block to "
            f"copy for swift in {sorted(missing)}; they will fail on swift."
        )


def swift_sparseness(x):
    """``numpy_test.sparseness`` for the swift SparseTensor, else None."""
    from keras_swift.src.sparse import SparseTensor

    if isinstance(x, SparseTensor):
        return "slices" if x.n_dense > 0 else "sparse"
    return None


def _patch_assert_sparse():
    try:
        from keras.src.testing import test_case
        from keras.src.testing.test_case import TestCase
    except ImportError:
        return
    _patch_loaded_function(test_case, "create_eager_tensors")
    original = TestCase.assertSparse
    if getattr(original, "_keras_swift_wrapped", False):
        return

    def assertSparse(self, x, sparse=True):
        from keras.src.backend.common.keras_tensor import KerasTensor
        from keras_swift.src.sparse import SparseTensor

        if isinstance(x, KerasTensor) or current_backend() != SWIFT:
            return original(self, x, sparse)
        if sparse:
            self.assertIsInstance(x, SparseTensor)
        else:
            self.assertNotIsInstance(x, SparseTensor)

    assertSparse._keras_swift_wrapped = True
    TestCase.assertSparse = assertSparse


def _patch_loaded_function(module, name):
    """Recompile ``module.name`` with the swift branch of its jax branch.

    For helpers in library modules (imported normally, not through pytest's
    rewriter); the function is rebuilt from its source in the module's
    namespace, so tracebacks keep pointing at Keras's file and lines.
    """
    import ast
    import inspect

    fn = getattr(module, name, None)
    if (
        keras_swift_hook is None
        or fn is None
        or getattr(fn, "_keras_swift_wrapped", False)
    ):
        return
    filename = inspect.getsourcefile(module)
    tree = ast.parse(inspect.getsource(module), filename)
    node = next(_functions_named(tree, (name,)), None)
    if node is None:
        return
    single = ast.Module(body=[node], type_ignores=[])
    _patch_sparse_helpers(module.__name__, single, filename)
    namespace = dict(vars(module))
    exec(compile(single, filename, "exec"), namespace)
    patched = namespace[name]
    patched._keras_swift_wrapped = True
    setattr(module, name, patched)
