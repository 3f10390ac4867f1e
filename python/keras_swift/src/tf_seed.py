"""TensorFlow's global seed for ``keras.utils.set_random_seed``, without importing it.

Keras seeds TensorFlow's global RNG whenever TensorFlow is installed, whatever the
backend, because ``tf.data`` pipelines may shuffle with it; to do so it imports
TensorFlow, which puts about 700 MB in a swift process that may never use it
(docs/benchmarks.md, "RSS"). Under swift the seed is set the same way when TensorFlow
is already imported, and otherwise the moment it is: no TensorFlow op can run before
that, so a program sees the same seeded state either way.
"""

import importlib.abc
import sys

_MODULE = "tensorflow"


def set_tensorflow_seed(seed):
    tf = sys.modules.get(_MODULE)
    if tf is not None:
        tf.random.set_seed(seed)
        return
    _SeedOnImport.arm(seed)


class _SeedOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders give TensorFlow, so
    that its module is seeded right after it has executed."""

    _armed = None

    def __init__(self):
        self.seed = None

    @classmethod
    def arm(cls, seed):
        if cls._armed is None or cls._armed not in sys.meta_path:
            cls._armed = cls()
            sys.meta_path.insert(0, cls._armed)
        cls._armed.seed = seed  # a later set_random_seed wins, as it would in Keras

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        # The spec the other finders give; a probe that finds it without importing leaves
        # us armed for the import itself.
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is not self and find is not None:
                spec = find(name, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, run = spec.loader, spec.loader.exec_module

        def exec_module(module):
            run(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            module.random.set_seed(self.seed)

        loader.exec_module = exec_module
        return spec
