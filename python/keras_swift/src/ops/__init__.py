"""Op modules of the backend (upstream layout: ``ops.core`` is flattened
into ``ops``; ``ops.numpy``/``nn``/``math``/``linalg``/``image`` are the
``backend.<module>`` namespaces)."""

from keras_swift.src.ops.core import *  # noqa: F403
