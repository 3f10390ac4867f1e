"""keras.utils.set_random_seed under swift seeds TensorFlow without importing it
(keras_swift.src.tf_seed): seeded now if TensorFlow is imported, else at its import.

A stand-in ``tensorflow`` package on sys.path records the seed it is given, so these
run whether or not TensorFlow is installed.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("_swiftkeras", reason="native module _swiftkeras not built")

STUB = '''
class random:
    seeds = []

    @staticmethod
    def set_seed(seed):
        random.seeds.append(seed)
'''


def run(tmp_path, body):
    pkg = tmp_path / "tensorflow"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(STUB)
    script = textwrap.dedent(
        """
        import json, sys
        import keras
        def imported():
            return "tensorflow" in sys.modules
        """
    ) + textwrap.dedent(body)
    env = dict(os.environ, KERAS_BACKEND="swift", PYTHONPATH=os.pathsep.join([str(tmp_path)] + sys.path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_seed_waits_for_the_import(tmp_path):
    result = run(
        tmp_path,
        """
        keras.utils.set_random_seed(3)
        before = imported()
        keras.utils.set_random_seed(7)   # the later seed wins
        import tensorflow as tf
        print(json.dumps([before, tf.random.seeds]))
        """,
    )
    assert result == [False, [7]]


def test_seed_is_set_at_once_when_tensorflow_is_imported(tmp_path):
    result = run(
        tmp_path,
        """
        import tensorflow as tf
        keras.utils.set_random_seed(5)
        keras.utils.set_random_seed(6)
        print(json.dumps(tf.random.seeds))
        """,
    )
    assert result == [5, 6]


def test_a_probe_without_import_keeps_the_seed_armed(tmp_path):
    result = run(
        tmp_path,
        """
        import importlib.util
        keras.utils.set_random_seed(11)
        assert importlib.util.find_spec("tensorflow") is not None
        import tensorflow as tf
        print(json.dumps(tf.random.seeds))
        """,
    )
    assert result == [11]
