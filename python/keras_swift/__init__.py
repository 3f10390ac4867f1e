"""keras-swift: a Keras 3 backend computed by the Swift tensor engine.

Select it with ``KERAS_BACKEND=swift``. The backend itself lives in
``keras_swift.src``; ``install()`` activates the import hook by hand for
interpreters that skip ``.pth`` files (``python -S``/``-I``, embedding).

``GradientTape``, ``value_and_grad`` and ``grad`` (custom training; see
``keras_swift.autodiff``) load on first use: Keras imports this package
while it picks its backend, so importing Keras from here would be circular. ``show_config()`` prints the loaded engine build, CPU
features, OpenBLAS and Keras versions; ``set_num_threads(n)`` (or
``KERAS_SWIFT_NUM_THREADS=n`` before import) sizes the engine's thread pool.
"""

__version__ = "0.1.0"

try:
    from keras_swift_hook import install  # noqa: F401
except ImportError:  # the hook ships separately; the backend works without it

    def install():
        raise ImportError(
            "keras_swift_hook is not installed; reinstall keras-swift "
            "(`pip install .`) to get the KERAS_BACKEND=swift import hook."
        )


_AUTODIFF = ("GradientTape", "grad", "value_and_grad")
# keras_swift.config: the build and machine (show_config) and the thread count.
_CONFIG = ("show_config", "set_num_threads", "get_num_threads")


def __getattr__(name):
    if name in _AUTODIFF:
        from keras_swift import autodiff

        return getattr(autodiff, name)
    if name in _CONFIG:
        from keras_swift import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_AUTODIFF) + list(_CONFIG))
