"""The preamble of every in-process swift test module.

``require_swift()`` selects the swift backend (unless one is already chosen),
activates the import hook when its ``.pth`` file is not installed (source
checkout), and skips the calling module while the native ``_swiftkeras`` module
is not built or Keras already runs on another backend in this process.
"""

import os

import pytest


def require_swift():
    os.environ.setdefault("KERAS_BACKEND", "swift")
    pytest.importorskip("_swiftkeras", reason="native module _swiftkeras not built")
    try:
        import keras_swift_hook  # noqa: F401
    except ImportError:
        pass
    import keras

    if keras.backend.backend() != "swift":
        pytest.skip(
            f"Keras already runs on {keras.backend.backend()!r} in this process",
            allow_module_level=True,
        )
    return keras
