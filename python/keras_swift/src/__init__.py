"""The keras-swift backend package (upstream pluggable-backend layout).

Keras 3.15 star-imports ``keras_swift.src.compat_3_15`` (the flat namespace
of ``keras.src.backend``); this package carries the feature flags and ``distribution_lib``.
"""

SUPPORTS_SPARSE_TENSORS = True
SUPPORTS_RAGGED_TENSORS = False
SUPPORTS_COMPLEX_DTYPES = True
IS_THREAD_SAFE = False
SUPPORTS_GRADIENT = True

from keras_swift.src import distribution_lib  # noqa: E402,F401
