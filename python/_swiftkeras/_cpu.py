"""Which x86-64 micro-architecture levels this CPU runs.

Shared by ``setup.py`` (a source install builds the engine for the host's
level alone: ``KERAS_SWIFT_HWCAPS=host``) and by ``_swiftkeras`` at import,
which refuses an engine compiled for a level the CPU lacks before any of its
code can run into an illegal instruction. Plain Python with no imports from
the package, so ``setup.py`` can load it by path before anything is built.

The levels are the x86-64 psABI's, as glibc's loader tests them for its
``glibc-hwcaps`` directories, written as Linux's ``/proc/cpuinfo`` flag names
(``abm`` is LZCNT; the kernel shows ``avx`` only when the OS saves the AVX
state, which is what glibc checks through XGETBV).
"""

_V2 = ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3")
_V3 = _V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
LEVEL_FLAGS = {"x86-64-v2": _V2, "x86-64-v3": _V3, "x86-64-v4": _V4}


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags, or None where ``/proc/cpuinfo`` cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def missing_flags(level, flags):
    """The flags of ``level`` (a ``LEVEL_FLAGS`` key) absent from ``flags``, in order."""
    return [f for f in LEVEL_FLAGS[level] if f not in flags]


def host_level(candidates, flags):
    """The last of ``candidates`` (levels, lowest first) that ``flags`` cover
    entirely, or None (the baseline) when none is."""
    best = None
    for level in candidates:
        if flags is not None and not missing_flags(level, flags):
            best = level
    return best
