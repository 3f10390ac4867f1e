"""The engine's dtypes and their numpy types: the one dtype table in Python.

The engine's own list is ``_swiftkeras.DTYPES`` (Swift's ``DType``, exported
by the C extension); ``python/tests/test_native.py`` checks that this table
names exactly those. This module imports neither Keras nor the engine, so
the extension's own tests can use it.
"""

import ml_dtypes
import numpy as np

NUMPY_DTYPES = {
    "bool": np.dtype(np.bool_),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
}

# The buffer protocol has no format code for ml_dtypes' types, so these cross
# it as raw bits: the unsigned integer type of the same size.
BITS_DTYPES = {
    name: np.dtype(f"u{d.itemsize}")
    for name, d in NUMPY_DTYPES.items()
    if d.type.__module__ == ml_dtypes.__name__
}
