"""The flat namespace Keras 3.15's ``keras.src.backend`` star-imports.

Mirrors what ``keras.src.backend.numpy.__init__`` exports, plus the flags
and ``distribution_lib`` that 3.15 sets inside its built-in branches.
"""

import functools

from keras.src.backend.common.name_scope import name_scope
from keras_swift.src import SUPPORTS_GRADIENT
from keras_swift.src import distribution_lib
from keras_swift.src import random
from keras_swift.src import rnn as _rnn
from keras_swift.src import tensor  # noqa: F401  (registers the tensor class)
from keras_swift.src.ops import core
from keras_swift.src.ops import image
from keras_swift.src.ops import linalg
from keras_swift.src.ops import math
from keras_swift.src.ops import nn
from keras_swift.src.ops import numpy
from keras_swift.src.ops.core import IS_THREAD_SAFE
from keras_swift.src.ops.core import SUPPORTS_COMPLEX_DTYPES
from keras_swift.src.ops.core import SUPPORTS_RAGGED_TENSORS
from keras_swift.src.ops.core import SUPPORTS_SPARSE_TENSORS
from keras_swift.src.ops.core import Variable
from keras_swift.src.ops.core import cast
from keras_swift.src.ops.core import compute_output_spec
from keras_swift.src.ops.core import cond
from keras_swift.src.ops.core import convert_to_numpy
from keras_swift.src.ops.core import convert_to_tensor
from keras_swift.src.ops.core import device_scope
from keras_swift.src.ops.core import is_tensor
from keras_swift.src.ops.core import random_seed_dtype
from keras_swift.src.ops.core import shape
from keras_swift.src.ops.core import stop_gradient
from keras_swift.src.ops.core import vectorized_map
from keras_swift.src.rnn import bidirectional_gru
from keras_swift.src.rnn import bidirectional_lstm
from keras_swift.src.rnn import cudnn_ok
from keras_swift.src.rnn import gru
from keras_swift.src.rnn import lstm


# 3.15 calls ``backend.rnn(...)``; upstream's plan makes ``backend.rnn`` a
# module (``backend.rnn.lstm``). This function serves both.
@functools.wraps(_rnn.rnn)
def rnn(*args, **kwargs):
    return _rnn.rnn(*args, **kwargs)


for _name in ("rnn", "lstm", "gru", "bidirectional_lstm", "bidirectional_gru",
              "cudnn_ok"):
    setattr(rnn, _name, getattr(_rnn, _name))
del _name

__all__ = [
    "IS_THREAD_SAFE",
    "SUPPORTS_COMPLEX_DTYPES",
    "SUPPORTS_GRADIENT",
    "SUPPORTS_RAGGED_TENSORS",
    "SUPPORTS_SPARSE_TENSORS",
    "Variable",
    "bidirectional_gru",
    "bidirectional_lstm",
    "cast",
    "compute_output_spec",
    "cond",
    "convert_to_numpy",
    "convert_to_tensor",
    "core",
    "cudnn_ok",
    "device_scope",
    "distribution_lib",
    "gru",
    "image",
    "is_tensor",
    "linalg",
    "lstm",
    "math",
    "name_scope",
    "nn",
    "numpy",
    "random",
    "random_seed_dtype",
    "rnn",
    "shape",
    "stop_gradient",
    "vectorized_map",
]
