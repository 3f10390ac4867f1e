"""Op modules of the backend (upstream layout: ``ops.core`` is flattened
into ``ops``; ``ops.numpy``/``nn``/``math``/``linalg``/``image`` are the
``backend.<module>`` namespaces)."""

from keras_swift.src.ops.core import *  # noqa: F403

# Sparse tensors: wrap the sparse-aware functions of the op modules once,
# whichever of them is imported first (see keras_swift.src.sparse).
from keras_swift.src import sparse as _sparse  # noqa: E402
from keras_swift.src.ops import nn as _nn  # noqa: E402
from keras_swift.src.ops import numpy as _numpy  # noqa: E402

_sparse.install(_numpy, _nn)
