"""Make released Keras 3 wheels accept ``KERAS_BACKEND=swift``.

Keras 3.13-3.15 pick backend classes with name-based if-chains that end in
``else: raise`` (``backend/__init__.py``, ``models/model.py``,
``layers/layer.py``, ``export/saved_model.py``, ``export/onnx.py``; ``_PATCHERS`` below lists
them), so any other name fails at ``import keras``. (One more entry there only keeps
``import keras`` from loading jax: ``_patch_orbax_checkpoint``; and three let the
LiteRT and OpenVINO exporters take swift down their TensorFlow/JAX path, by adding
``"swift"`` to one backend-name test each: ``_admission_patcher``.) Rather than
forking or editing the installed Keras, this module puts a finder at the front
of ``sys.meta_path``. When the configured backend is ``"swift"`` and one of the
modules holding such a chain is imported, the finder hands Keras's own source
to a loader that parses it, splices in one ``elif <same test> == "swift":``
branch importing the class from ``keras_swift.src``, and compiles the result
under the original filename (tracebacks keep their line numbers). For every
other backend the finder returns ``None``: Keras is untouched.

Two gates stop us from silently corrupting a Keras we do not understand:

* version: ``keras/src/version.py`` next to the imported module must be in
  ``SUPPORTED_KERAS``; ``KERAS_SWIFT_FORCE_HOOK=1`` overrides.
* structure: each patched module must contain exactly one chain covering the
  five built-in backend names and ending in ``else: raise`` (for
  ``DynamicBackend``: one whitelist tuple and one set of per-name branches).
  Anything else raises ``KerasStructureError`` instead of guessing. A chain
  that already names ``"swift"`` is left alone, so a Keras that learns about
  external backends natively turns this hook into a no-op.

The ``keras_swift_hook.pth`` file installed next to this module imports it at
interpreter start-up. Interpreters that skip ``.pth`` files (``python -S``,
``-I``, embedding) call ``install()``. Set ``KERAS_SWIFT_HOOK_DEBUG=1`` to
trace decisions to stderr.

This module runs in every Python process of the environment, so importing it
must stay cheap and must never import Keras: ``ast``, ``json`` and
``importlib.machinery`` are imported only when a Keras target module is found.
"""

import os
import sys

BACKEND_NAME = "swift"
SUPPORTED_KERAS = ((3, 13), (3, 15))  # inclusive major.minor range
FORCE_ENV = "KERAS_SWIFT_FORCE_HOOK"
DEBUG_ENV = "KERAS_SWIFT_HOOK_DEBUG"
BUILTIN_BACKENDS = ("tensorflow", "jax", "torch", "numpy", "openvino")

# What the backend package must provide (keep in sync with its layout).
COMPAT_MODULE = "keras_swift.src.compat_3_15"
TRAINER_MODULE, TRAINER_CLASS = "keras_swift.src.trainer", "Trainer"
LAYER_MODULE, LAYER_CLASS = "keras_swift.src.layer", "BackendLayer"
EXPORT_MODULE, EXPORT_CLASS = "keras_swift.src.export", "SavedModelExportArchive"
OPTIMIZER_MODULE, OPTIMIZER_CLASS = "keras_swift.src.optimizer", "BackendOptimizer"
TF_SEED_MODULE, TF_SEED_FUNCTION = "keras_swift.src.tf_seed", "set_tensorflow_seed"

OPTIMIZER_TARGET = "keras.src.optimizers.optimizer"


class KerasSwiftHookError(ImportError):
    """Base class: the hook refused to patch Keras for the swift backend."""


class UnsupportedKerasError(KerasSwiftHookError):
    """The installed Keras version is outside ``SUPPORTED_KERAS``."""


class KerasStructureError(KerasSwiftHookError):
    """A Keras module no longer has the shape the hook knows how to patch."""


def _debug_enabled():
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _trace(message):
    if _debug_enabled():
        print(f"[keras_swift_hook] {message}", file=sys.stderr, flush=True)


def _force_enabled():
    return os.environ.get(FORCE_ENV, "") not in ("", "0")


# --------------------------------------------------------------------------
# Which backend is configured
# --------------------------------------------------------------------------


def configured_backend():
    """The backend name Keras uses (or will use) in this process.

    Once ``keras.src.backend.config`` is loaded its answer is authoritative
    (``set_backend`` and keras.json edits are already folded in). Before that,
    replicate its precedence: non-empty ``KERAS_BACKEND``, else
    ``keras.json`` in ``$KERAS_HOME`` or ``~/.keras`` (``/tmp/.keras`` when the
    home directory is not writable), else ``"tensorflow"``.
    """
    config = sys.modules.get("keras.src.backend.config")
    backend_fn = getattr(config, "backend", None)
    if callable(backend_fn):
        try:
            return backend_fn()
        except Exception:  # a half-initialised module; fall through
            pass
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    if "KERAS_HOME" in os.environ:
        keras_dir = os.environ.get("KERAS_HOME")
    else:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        keras_dir = os.path.join(base, ".keras")
    config_path = os.path.expanduser(os.path.join(keras_dir, "keras.json"))
    if os.path.exists(config_path):
        import json

        try:
            with open(config_path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            # config.py treats unparsable JSON as {} (the default backend);
            # an unreadable file makes config.py itself fail, not us.
            data = {}
        if isinstance(data, dict):
            return data.get("backend", "tensorflow")
    return "tensorflow"


# --------------------------------------------------------------------------
# Version gate
# --------------------------------------------------------------------------

_version_cache = {}


def _keras_src_dir(fullname, origin, is_package):
    # origin's directory is the module itself for packages and its parent
    # package otherwise; walk up to the directory of ``keras.src``.
    depth = len(fullname.split(".")) - (0 if is_package else 1) - 2
    directory = os.path.dirname(origin)
    for _ in range(depth):
        directory = os.path.dirname(directory)
    return directory


def read_keras_version(src_dir):
    """``__version__`` from ``<src_dir>/version.py`` without executing it."""
    if src_dir in _version_cache:
        return _version_cache[src_dir]
    version = None
    try:
        with open(os.path.join(src_dir, "version.py"), encoding="utf-8") as f:
            for line in f:
                stripped = line.strip()
                if stripped.startswith("__version__") and "=" in stripped:
                    value = stripped.split("=", 1)[1].strip()
                    if value[:1] in ("'", '"'):
                        version = value[1:].split(value[0], 1)[0]
                    break
    except OSError:
        pass
    _version_cache[src_dir] = version
    return version


def _major_minor(version):
    """(3, 15) for "3.15.1", "3.15rc1" or "3.15.0.dev2025"; None if unparsable."""
    parts = version.split(".")
    if len(parts) < 2 or not parts[0].isdigit():
        return None
    minor = ""
    for char in parts[1]:
        if not char.isdigit():
            break
        minor += char
    return (int(parts[0]), int(minor)) if minor else None


def _range_text():
    (lo_major, lo_minor), (hi_major, hi_minor) = SUPPORTED_KERAS
    return f"{lo_major}.{lo_minor}-{hi_major}.{hi_minor}"


def check_keras_version(version, where):
    """Raise ``UnsupportedKerasError`` unless ``version`` is supported."""
    mm = _major_minor(version) if version else None
    if mm is not None and SUPPORTED_KERAS[0] <= mm <= SUPPORTED_KERAS[1]:
        return
    if _force_enabled():
        _trace(
            f"Keras {version!r} at {where} is outside {_range_text()}; "
            f"patching anyway because {FORCE_ENV} is set"
        )
        return
    shown = f"Keras {version}" if version else "a Keras whose version is unknown"
    raise UnsupportedKerasError(
        f"KERAS_BACKEND={BACKEND_NAME!r}: keras-swift supports Keras "
        f"{_range_text()}, but {shown} is installed at {where}. "
        f"Install a supported Keras, upgrade keras-swift, or set "
        f"{FORCE_ENV}=1 to try anyway (the hook still refuses to patch "
        f"modules whose structure it does not recognise)."
    )


# --------------------------------------------------------------------------
# AST surgery
# --------------------------------------------------------------------------


def _branch_name(test):
    """``"jax"`` for a test like ``backend() == "jax"``, else ``None``."""
    import ast

    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and isinstance(test.comparators[0].value, str)
    ):
        return test.comparators[0].value
    return None


def _statement_lists(tree):
    import ast

    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                yield stmts
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                yield handler.body


class _Chain:
    """An ``if name == ..: elif name == ..: else:`` chain on one subject."""

    def __init__(self, head):
        import ast

        self.branches = []  # (name, If node)
        node = head
        subject = ast.dump(head.test.left)
        while True:
            self.branches.append((_branch_name(node.test), node))
            nxt = node.orelse[0] if len(node.orelse) == 1 else None
            if (
                isinstance(nxt, ast.If)
                and _branch_name(nxt.test) is not None
                and ast.dump(nxt.test.left) == subject
            ):
                node = nxt
                continue
            break
        self.last = node
        self.else_body = node.orelse

    @property
    def names(self):
        return [name for name, _ in self.branches]

    def covers_builtins(self):
        return set(BUILTIN_BACKENDS) <= set(self.names)

    def ends_in_raise(self):
        import ast

        return bool(self.else_body) and isinstance(self.else_body[-1], ast.Raise)


def _find_chains(tree):
    """Every maximal backend-name chain in ``tree`` (nested ones included)."""
    import ast

    chains = []
    for stmts in _statement_lists(tree):
        for stmt in stmts:
            if isinstance(stmt, ast.If) and _branch_name(stmt.test) is not None:
                chains.append(_Chain(stmt))
    # An elif is itself an If in its parent's orelse; keep only chain heads.
    inner = {id(node) for chain in chains for _, node in chain.branches[1:]}
    return [c for c in chains if id(c.branches[0][1]) not in inner]


def _mentions_backend_name(node):
    import ast

    return any(
        isinstance(n, ast.Constant) and n.value == BACKEND_NAME for n in ast.walk(node)
    )


def _bound_names(stmts):
    """Names a branch body binds at its own level (``"*"`` for star imports)."""
    import ast

    names = set()
    for stmt in stmts:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(stmt.name)
    return names


def _relocate(node, ref):
    """Give ``node`` and its children ``ref``'s source position."""
    import ast

    for child in ast.walk(node):
        if "lineno" in child._attributes:
            child.lineno = ref.lineno
            child.end_lineno = getattr(ref, "end_lineno", None) or ref.lineno
            child.col_offset = ref.col_offset
            child.end_col_offset = getattr(ref, "end_col_offset", None) or ref.col_offset
    return node


def _snippet(source, ref):
    """Parse ``source`` into statements located at ``ref``'s line.

    Inserted code reports the line of the ``else`` it precedes, so a
    traceback through it points at the right place in Keras's file.
    """
    import ast

    return [_relocate(stmt, ref) for stmt in ast.parse(source).body]


def _swift_test(template):
    import copy

    test = copy.deepcopy(template)
    test.comparators[0].value = BACKEND_NAME
    return test


def _single_chain(tree, filename, what, require_raise=True):
    """The one chain naming all built-in backends, or ``None`` if patched.

    Raises ``KerasStructureError`` for zero or several candidates so that an
    unknown layout is reported rather than mis-patched.
    """
    candidates = [c for c in _find_chains(tree) if c.covers_builtins()]
    if any(BACKEND_NAME in c.names for c in candidates):
        return None
    if require_raise:
        candidates = [c for c in candidates if c.ends_in_raise()]
    if len(candidates) != 1:
        shape = "ending in `else: raise`" if require_raise else ""
        raise KerasStructureError(
            f"keras_swift_hook cannot add the {BACKEND_NAME!r} backend to "
            f"{filename}: expected exactly one if-chain comparing the backend "
            f"name with {', '.join(map(repr, BUILTIN_BACKENDS))} {shape} "
            f"(the {what}), found {len(candidates)}. This Keras release is "
            f"laid out differently from the ones keras-swift knows; upgrade "
            f"keras-swift or use a supported Keras ({_range_text()})."
        )
    return candidates[0]


def _chain_binding(chain, filename, what):
    """The single name every built-in branch binds (e.g. ``Trainer``)."""
    common = None
    for name, node in chain.branches:
        if name in BUILTIN_BACKENDS:
            bound = _bound_names(node.body)
            common = bound if common is None else common & bound
    common = (common or set()) - {"*"}
    if len(common) != 1:
        raise KerasStructureError(
            f"keras_swift_hook cannot add the {BACKEND_NAME!r} backend to "
            f"{filename}: the built-in branches of the {what} chain should all "
            f"bind one name, but they share {sorted(common) or 'none'}."
        )
    return common.pop()


def _append_branch(chain, body):
    """Insert ``elif <test> == "swift": body`` just before the chain's else."""
    import ast

    ref = chain.else_body[0] if chain.else_body else chain.last
    test = _relocate(_swift_test(chain.last.test), ref)
    branch = ast.copy_location(ast.If(test=test, body=body, orelse=chain.else_body), ref)
    chain.last.orelse = [branch]


def _module_exists(name):
    if name in sys.modules:
        return True
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _patch_backend_package(tree, filename):
    what = "backend package import"
    chain = _single_chain(tree, filename, what)
    if chain is None:
        return None
    for name, node in chain.branches:
        if name in BUILTIN_BACKENDS and "*" not in _bound_names(node.body):
            raise KerasStructureError(
                f"keras_swift_hook cannot add the {BACKEND_NAME!r} backend to "
                f"{filename}: the {name!r} branch no longer star-imports its "
                f"backend package."
            )
    variable = _chain_binding(chain, filename, what)
    # Same bindings as the built-in branches: the flat backend namespace, the
    # Variable base class, and distribution_lib (keras.distribution imports
    # it at `import keras` time, so it must exist even when it is None).
    body = _snippet(
        f"from {COMPAT_MODULE} import *\n"
        f"from {COMPAT_MODULE} import Variable as {variable}\n"
        f"from {COMPAT_MODULE.rsplit('.', 1)[0]} import "
        f"{COMPAT_MODULE.rsplit('.', 1)[1]} as _keras_swift_compat\n"
        "distribution_lib = getattr(_keras_swift_compat, 'distribution_lib', None)\n"
        "del _keras_swift_compat\n",
        chain.else_body[0],
    )
    _append_branch(chain, body)
    return f"{COMPAT_MODULE} (* and Variable as {variable}, distribution_lib)"


def _class_patcher(what, module, cls, fallback=None, require_raise=True):
    """Patcher binding ``module.cls`` to the chain's name.

    ``fallback`` is source used when ``module`` does not exist (the class is
    optional for the backend package), formatted with ``{name}``.
    """

    def patch(tree, filename):
        chain = _single_chain(tree, filename, what, require_raise=require_raise)
        if chain is None:
            return None
        name = _chain_binding(chain, filename, what)
        if fallback is not None and not _module_exists(module):
            source, used = fallback.format(name=name), f"fallback ({module} absent)"
        else:
            source, used = f"from {module} import {cls} as {name}\n", f"{module}.{cls}"
        ref = chain.else_body[0] if chain.else_body else chain.last
        _append_branch(chain, _snippet(source, ref))
        return f"{used} as {name}"

    return patch


def _three_backend_chain(tree, filename, what, shape, accept):
    """The one chain naming tensorflow, torch and jax (and not every built-in
    backend) that ``accept`` takes, or ``None`` if already patched. The
    optimizer's and the ONNX exporter's chains have this form."""
    chains = [
        c
        for c in _find_chains(tree)
        if {"tensorflow", "torch", "jax"} <= set(c.names) and accept(c)
    ]
    if any(BACKEND_NAME in c.names for c in chains):
        return None
    if len(chains) != 1:
        raise KerasStructureError(
            f"keras_swift_hook cannot add the {BACKEND_NAME!r} {what} to "
            f"{filename}: expected exactly one backend if-chain {shape}, "
            f"found {len(chains)}."
        )
    return chains[0]


def _patch_optimizer(tree, filename):
    # The optimizer chain names only tensorflow/torch/jax and its else
    # defines the generic mixin; the swift branch goes in front of that else.
    chain = _three_backend_chain(
        tree, filename, "optimizer mixin", "with an else branch", lambda c: c.else_body
    )
    if chain is None:
        return None
    common = None
    for name, node in chain.branches:
        bound = _bound_names(node.body)
        common = bound if common is None else common & bound
    common &= _bound_names(chain.else_body)
    if len(common) != 1:
        raise KerasStructureError(
            f"keras_swift_hook cannot add the {BACKEND_NAME!r} optimizer mixin to "
            f"{filename}: the branches share {sorted(common) or 'no'} names."
        )
    name = common.pop()
    body = _snippet(
        f"from {OPTIMIZER_MODULE} import {OPTIMIZER_CLASS} as {name}\n",
        chain.else_body[0],
    )
    _append_branch(chain, body)
    return f"{OPTIMIZER_MODULE}.{OPTIMIZER_CLASS} as {name}"


def _patch_backend_utils(tree, filename):
    """Teach ``DynamicBackend`` the swift name.

    ``set_backend`` whitelists the built-in names and ``__getattr__`` has one
    ``if self._backend == name: return ...`` per name, falling off the end
    (returning ``None``) for anything else, which makes preprocessing layers
    fail far from the cause.
    """
    import ast

    def fail(detail):
        raise KerasStructureError(
            f"keras_swift_hook cannot add the {BACKEND_NAME!r} backend to "
            f"DynamicBackend in {filename}: {detail}. Upgrade keras-swift or "
            f"use a supported Keras ({_range_text()})."
        )

    classes = [
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "DynamicBackend"
    ]
    if len(classes) != 1:
        fail(f"expected one DynamicBackend class, found {len(classes)}")
    cls = classes[0]
    if _mentions_backend_name(cls):
        return None
    methods = {
        n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    if "set_backend" not in methods or "__getattr__" not in methods:
        fail("set_backend or __getattr__ is missing")

    whitelists = [
        n
        for n in ast.walk(methods["set_backend"])
        if isinstance(n, (ast.Tuple, ast.List, ast.Set))
        and set(BUILTIN_BACKENDS)
        <= {e.value for e in n.elts if isinstance(e, ast.Constant)}
    ]
    if len(whitelists) != 1:
        fail(f"expected one whitelist of backend names in set_backend, found {len(whitelists)}")
    whitelist = whitelists[0]
    whitelist.elts.append(ast.copy_location(ast.Constant(BACKEND_NAME), whitelist.elts[-1]))

    getattr_fn = methods["__getattr__"]
    if len(getattr_fn.args.args) != 2:
        fail("__getattr__ does not take (self, name)")
    attr = getattr_fn.args.args[1].arg
    route = (
        f"import {COMPAT_MODULE} as _keras_swift_compat\n"
        f"return getattr(_keras_swift_compat, {attr})\n"
    )
    body = getattr_fn.body
    chains = [c for c in _find_chains(getattr_fn) if c.covers_builtins()]
    if len(chains) == 1:
        # A single if/elif chain (possible in future releases).
        chain = chains[0]
        ref = chain.else_body[0] if chain.else_body else chain.last
        _append_branch(chain, _snippet(route, ref))
    elif not chains:
        # 3.13-3.15: one independent `if` per name, each returning.
        singles = [
            (i, s)
            for i, s in enumerate(body)
            if isinstance(s, ast.If) and not s.orelse and _branch_name(s.test) in BUILTIN_BACKENDS
        ]
        if {_branch_name(s.test) for _, s in singles} != set(BUILTIN_BACKENDS) or len(
            singles
        ) != len(BUILTIN_BACKENDS):
            fail("__getattr__ does not have one `if` per built-in backend name")
        last_index, last = singles[-1]
        test = _relocate(_swift_test(last.test), last)
        branch = ast.copy_location(ast.If(test=test, body=_snippet(route, last), orelse=[]), last)
        body.insert(last_index + 1, branch)
    else:
        fail(f"found {len(chains)} backend chains in __getattr__")
    return f"DynamicBackend whitelist + __getattr__ -> {COMPAT_MODULE}"


ONNX_TARGET = "keras.src.export.onnx"
ONNX_FUNCTION = "export_onnx"


def _patch_export_onnx(tree, filename):
    # export_onnx's chain names tensorflow/jax/torch and raises in its else; the swift
    # branch hands the model to EXPORT_MODULE's exporter with the signature Keras built.
    chain = _three_backend_chain(
        tree, filename, "ONNX exporter", "ending in `else: raise`", lambda c: c.ends_in_raise()
    )
    if chain is None:
        return None
    body = _snippet(
        f"from {EXPORT_MODULE} import {ONNX_FUNCTION} as _keras_swift_export_onnx\n"
        "_keras_swift_export_onnx(model, filepath, input_signature, opset_version)\n",
        chain.else_body[0],
    )
    _append_branch(chain, body)
    return f"{EXPORT_MODULE}.{ONNX_FUNCTION}"


def _backend_set_test(node):
    """The backend names of a test ``backend() [not] in (...)`` (a tuple of strings) or
    ``backend() != "name"``, else ``None``."""
    import ast

    if not (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.left, ast.Call)
        and getattr(node.left.func, "attr", getattr(node.left.func, "id", None)) == "backend"
    ):
        return None
    op, right = node.ops[0], node.comparators[0]
    if isinstance(op, ast.NotEq) and isinstance(right, ast.Constant) and isinstance(right.value, str):
        return (right.value,)
    if isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, ast.Tuple) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in right.elts
    ):
        return tuple(e.value for e in right.elts)
    return None


def _admission_patcher(what, function_name, backends):
    """Patch the one test ``backend() [not] in backends`` (or ``!= backends[0]``) in
    ``function_name`` to name swift too: the function then takes the path those backends
    take (which, for these targets, goes through the SavedModel export archive this
    package provides)."""

    def patch(tree, filename):
        import ast

        fns = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function_name]
        tests = [
            (n, _backend_set_test(n))
            for fn in fns
            for n in ast.walk(fn)
            if _backend_set_test(n) is not None
        ]
        if any(BACKEND_NAME in names for _, names in tests):
            return None
        matching = [n for n, names in tests if set(names) == set(backends)]
        if len(fns) != 1 or len(matching) != 1:
            raise KerasStructureError(
                f"keras_swift_hook cannot admit {BACKEND_NAME!r} to the {what} in {filename}: "
                f"expected one function {function_name} with one test of the backend against "
                f"{backends}, found {len(fns)} functions and {len(matching)} tests."
            )
        node = matching[0]
        names = tuple(backends) + (BACKEND_NAME,)
        if isinstance(node.ops[0], ast.NotEq):
            node.ops = [ast.NotIn()]
        node.comparators = [
            ast.copy_location(
                ast.Tuple(elts=[ast.copy_location(ast.Constant(n), node) for n in names], ctx=ast.Load()),
                node,
            )
        ]
        return f"{function_name}: {what} admits {BACKEND_NAME!r}"

    return patch


def _combined(*patchers):
    def patch(tree, filename):
        changes = [c for c in (p(tree, filename) for p in patchers) if c is not None]
        return "; ".join(changes) or None

    return patch


ORBAX_TARGET = "keras.src.callbacks.orbax_checkpoint"


def _patch_orbax_checkpoint(tree, filename):
    """Skip the module-level ``import jax`` of Keras's Orbax callback.

    Keras 3.15 runs it at ``import keras`` whenever jax is installed, only to give old jax
    versions a ``jax.monitoring.record_scalar`` for Orbax; under the swift backend it loads
    a framework the process never uses (130 MB of resident memory and about a second of
    start-up, measured). Orbax imports jax itself when the callback is used. Only that one
    ``try: import jax ... except ImportError`` statement is touched; a Keras without it is
    left as it is.
    """
    import ast

    for i, stmt in enumerate(tree.body):
        if (
            isinstance(stmt, ast.Try)
            and stmt.body
            and isinstance(stmt.body[0], ast.Import)
            and [a.name for a in stmt.body[0].names] == ["jax"]
            and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in stmt.handlers)
        ):
            tree.body[i] = ast.copy_location(ast.Pass(), stmt)
            return "module-level `import jax` skipped"
    return None


RNG_TARGET = "keras.src.utils.rng_utils"


def _patch_rng_utils(tree, filename):
    """Seed TensorFlow without importing it in ``keras.utils.set_random_seed``.

    Keras 3.15 imports TensorFlow there whenever it is installed (``if tf.available:
    tf.random.set_seed(seed)``), to seed ``tf.data``: about 700 MB of resident memory in
    a swift process that may never use it. TF_SEED_MODULE seeds it now if it is already
    imported, else when it is. Only that one ``if`` in ``set_random_seed`` is touched; a
    Keras without it is left as it is.
    """
    import ast

    def seeds_tf(stmt):
        return (
            isinstance(stmt, ast.If)
            and ast.unparse(stmt.test) == "tf.available"
            and not stmt.orelse
            and [ast.unparse(b) for b in stmt.body] == ["tf.random.set_seed(seed)"]
        )

    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "set_random_seed":
            for i, stmt in enumerate(fn.body):
                if seeds_tf(stmt):
                    fn.body[i:i + 1] = _snippet(
                        f"from {TF_SEED_MODULE} import {TF_SEED_FUNCTION} as _keras_swift_seed_tf\n"
                        "_keras_swift_seed_tf(seed)\n",
                        stmt,
                    )
                    return f"TensorFlow seeded by {TF_SEED_MODULE} (no import)"
    return None


_PATCHERS = {
    "keras.src.backend": _patch_backend_package,
    # Model.export refuses LiteRT for backends but tensorflow and torch, and export_litert
    # for all but tensorflow (whose path, Keras's SavedModel archive then TFLiteConverter,
    # swift's archive serves); export_openvino converts the archive's concrete function
    # for tensorflow and jax.
    "keras.src.models.model": _combined(
        _class_patcher("Trainer class", TRAINER_MODULE, TRAINER_CLASS),
        _admission_patcher("LiteRT format check", "export", ("tensorflow", "torch")),
    ),
    "keras.src.layers.layer": _class_patcher(
        "layer mixin",
        LAYER_MODULE,
        LAYER_CLASS,
        # A tape-based backend needs no layer hooks; Keras's numpy backend
        # ships an empty mixin for the same reason.
        fallback="class {name}:\n    pass\n",
    ),
    "keras.src.export.saved_model": _class_patcher(
        "SavedModel export archive",
        EXPORT_MODULE,
        EXPORT_CLASS,
        fallback="from keras.src.backend.numpy.export import NumpyExportArchive as {name}\n",
    ),
    "keras.src.utils.backend_utils": _patch_backend_utils,
    OPTIMIZER_TARGET: _patch_optimizer,
    ONNX_TARGET: _patch_export_onnx,
    ORBAX_TARGET: _patch_orbax_checkpoint,
    RNG_TARGET: _patch_rng_utils,
    "keras.src.export.litert": _admission_patcher("LiteRT exporter", "export_litert", ("tensorflow",)),
    "keras.src.export.openvino": _admission_patcher(
        "OpenVINO exporter", "export_openvino", ("tensorflow", "jax")
    ),
}


def patch_tree(module_name, tree, filename):
    """Apply the swift patch for ``module_name`` to ``tree`` in place.

    Returns a description of the change, or ``None`` when the module is not
    a target or already names the swift backend.
    """
    patcher = _PATCHERS.get(module_name)
    if patcher is None:
        return None
    return patcher(tree, filename)


# --------------------------------------------------------------------------
# Finder and loader
# --------------------------------------------------------------------------

_loader_class = None


def _get_loader_class():
    global _loader_class
    if _loader_class is None:
        from importlib.machinery import SourceFileLoader

        class KerasSwiftLoader(SourceFileLoader):
            """Compiles a Keras module from its patched AST.

            Bytecode caches are bypassed in both directions: a cached .pyc
            holds the unpatched code, and writing our patched code there would
            leak it into processes using other backends (and fails on
            read-only installs anyway).
            """

            def get_code(self, fullname):
                import ast

                source = self.get_data(self.path)
                tree = ast.parse(source, filename=self.path)
                change = patch_tree(fullname, tree, self.path)
                if change is None:
                    _trace(f"{fullname}: already names {BACKEND_NAME!r}; left unchanged")
                else:
                    _trace(f"{fullname}: patched ({change}) from {self.path}")
                return compile(tree, self.path, "exec", dont_inherit=True)

        _loader_class = KerasSwiftLoader
    return _loader_class


class KerasSwiftFinder:
    """Meta-path finder redirecting the Keras dispatch modules to our loader."""

    # install() looks for this marker rather than the class: set_backend()
    # purges every "keras*" module, including this one, and a re-import
    # would create a new class while the old finder is still installed.
    _keras_swift_hook_finder = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _PATCHERS:
            return None
        try:
            backend = configured_backend()
        except Exception as e:  # never break an import we do not own
            _trace(f"{fullname}: cannot determine the backend ({e!r}); not patching")
            return None
        if backend != BACKEND_NAME:
            _trace(f"{fullname}: backend is {backend!r}; not patching")
            return None

        from importlib.machinery import PathFinder, SourceFileLoader

        spec = PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        if not isinstance(spec.loader, SourceFileLoader) or not spec.origin:
            raise KerasSwiftHookError(
                f"KERAS_BACKEND={BACKEND_NAME!r}: {fullname} was found at "
                f"{spec.origin} with {type(spec.loader).__name__}, but the "
                f"keras-swift hook needs Keras installed as .py source files."
            )
        is_package = spec.submodule_search_locations is not None
        src_dir = _keras_src_dir(fullname, spec.origin, is_package)
        check_keras_version(read_keras_version(src_dir), os.path.dirname(src_dir))
        if fullname == OPTIMIZER_TARGET and not _module_exists(OPTIMIZER_MODULE):
            _trace(f"{fullname}: {OPTIMIZER_MODULE} absent; generic optimizer kept")
            return None
        spec.loader = _get_loader_class()(fullname, spec.origin)
        return spec

    def invalidate_caches(self):
        _version_cache.clear()

    def __repr__(self):
        return f"<{type(self).__name__} for KERAS_BACKEND={BACKEND_NAME!r}>"


def install():
    """Put the finder at the front of ``sys.meta_path`` (idempotent)."""
    for finder in sys.meta_path:
        if getattr(finder, "_keras_swift_hook_finder", False):
            return finder
    finder = KerasSwiftFinder()
    sys.meta_path.insert(0, finder)
    _trace("installed")
    already = [name for name in _PATCHERS if name in sys.modules]
    if already:
        _trace(f"installed after {already} were imported; they stay unpatched")
    return finder


def uninstall():
    """Remove every finder installed by this module (for tests)."""
    sys.meta_path[:] = [
        f for f in sys.meta_path if not getattr(f, "_keras_swift_hook_finder", False)
    ]


def _install_at_startup():
    # Called from the .pth line: whatever goes wrong, Python must start.
    try:
        install()
    except Exception as e:
        if _debug_enabled():
            print(f"[keras_swift_hook] install failed: {e!r}", file=sys.stderr)


_install_at_startup()
