"""Native binding of the keras-swift tensor engine.

The package is a thin shell around the C extension ``_swiftkeras._C``, which
links ``libTensorEngineC.so`` (shipped next to it and found through an
``$ORIGIN`` rpath; in a wheel built for distribution on x86-64, a second build
for x86-64-v3 sits in ``glibc-hwcaps/x86-64-v3/`` and the loader prefers it on
CPUs with AVX2 and FMA: ``engine_library()`` says which one loaded; a source
install holds one engine, built for its CPU's level).

It lives outside the ``keras*`` namespace on purpose: ``keras.config.set_backend``
purges ``keras*`` modules from ``sys.modules``, and a C extension cannot be
initialised twice in one process.
"""


def _check_cpu_level():
    # A source install builds one engine for the installing CPU's level
    # (setup.py, KERAS_SWIFT_HWCAPS=host); copied to an older CPU it would die
    # of an illegal instruction on the first vector kernel, so say why first.
    try:
        from ._build import LEVEL
    except ImportError:  # a source checkout not built yet, or an older build
        return
    if LEVEL is None:
        return
    from ._cpu import cpu_flags
    from ._cpu import missing_flags

    flags = cpu_flags()
    missing = [] if flags is None else missing_flags(LEVEL, flags)
    if missing:
        raise ImportError(
            f"this keras-swift engine was compiled for {LEVEL} (the CPU it was "
            f"installed on), and this CPU lacks {', '.join(missing)}. Reinstall "
            "here, or build with KERAS_SWIFT_HWCAPS=x86-64-v3 (a baseline engine "
            "plus an x86-64-v3 one the loader picks where the CPU has it)."
        )


_check_cpu_level()

try:
    from ._C import *  # noqa: F401,F403
    from ._C import ABI_VERSION
    from ._C import DTYPES
    from ._C import Dispatch
    from ._C import MAX_OUTPUTS
    from ._C import MAX_RANK
    from ._C import Tensor
    from ._C import abi_version
    from ._C import engine_library
    from ._C import from_buffer
    from ._C import from_dlpack
    from ._C import get_num_threads
    from ._C import get_tensor_class
    from ._C import gradient
    from ._C import op
    from ._C import op_names
    from ._C import op_schemas as _op_schemas
    from ._C import set_num_threads
    from ._C import set_tensor_class
    from ._C import tape_depth
    from ._C import tape_pop
    from ._C import tape_push
except ImportError as e:
    # The usual cause on a new machine is a missing system OpenBLAS, which the
    # engine links dynamically; say so instead of leaving only the loader's
    # message.
    raise ImportError(
        f"{e}\n_swiftkeras could not load the Swift tensor engine. The engine "
        "needs the system OpenBLAS (libopenblas.so.0; e.g. `apt-get install "
        "libopenblas0`); a source checkout must be built with `pip install .`."
    ) from e



def _threads_from_env():
    # One setting for the engine's pool (GEMM included: OpenBLAS is held to
    # the calling thread) that works before any Keras code runs.
    import os

    value = os.environ.get("KERAS_SWIFT_NUM_THREADS", "").strip()
    if not value:
        return
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"KERAS_SWIFT_NUM_THREADS must be a positive integer, got {value!r}"
        )
    set_num_threads(int(value))


_threads_from_env()


def get_include():
    """Directory holding ``tensor_engine.h``, the engine's C ABI, for C/C++
    programs and other languages' bindings built against this installation
    (``-I$(python -c 'import _swiftkeras; print(_swiftkeras.get_include())')``)."""
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


def get_lib():
    """Directory holding ``libTensorEngineC.so`` (link with ``-L<it>
    -lTensorEngineC -Wl,-rpath,<it>``; on x86-64 the loader picks the
    ``glibc-hwcaps/x86-64-v3`` build below it on CPUs that have AVX2/FMA)."""
    import os

    return os.path.dirname(os.path.abspath(__file__))


def get_pkgconfig_dir():
    """Directory of ``tensor_engine.pc``, for ``PKG_CONFIG_PATH``
    (``pkg-config --cflags --libs tensor_engine``)."""
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkgconfig")


def op_schemas():
    """Every engine op's schema, by name: inputs, outputs, attributes (type,
    default or what leaving it out means, choices), input dtypes, complex
    support, differentiability and a one-line doc (see te_op_schema in
    tensor_engine.h). The engine checks every call against it."""
    import json

    return {s["name"]: s for s in map(json.loads, _op_schemas())}


__all__ = [
    "ABI_VERSION",
    "DTYPES",
    "Dispatch",
    "MAX_OUTPUTS",
    "MAX_RANK",
    "Tensor",
    "abi_version",
    "engine_library",
    "from_buffer",
    "from_dlpack",
    "get_include",
    "get_lib",
    "get_num_threads",
    "get_pkgconfig_dir",
    "get_tensor_class",
    "gradient",
    "op",
    "op_names",
    "op_schemas",
    "set_num_threads",
    "set_tensor_class",
    "tape_depth",
    "tape_pop",
    "tape_push",
]
