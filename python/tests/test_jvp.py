"""Forward mode (ops.linalg.jvp) and create_graph gradients on the Swift tape."""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import ops  # noqa: E402

from _swiftkeras import _C  # noqa: E402

rng = np.random.default_rng(3)


def test_jvp_matches_analytic_derivatives():
    x = rng.normal(size=(3, 4)).astype("float32")
    t = rng.normal(size=(3, 4)).astype("float32")
    y, dy = ops.linalg.jvp(lambda a: ops.sin(a) * a**2, (x,), (t,))
    np.testing.assert_allclose(ops.convert_to_numpy(y), np.sin(x) * x**2, rtol=1e-5)
    want = (np.cos(x) * x**2 + 2 * x * np.sin(x)) * t
    np.testing.assert_allclose(ops.convert_to_numpy(dy), want, rtol=1e-4, atol=1e-5)


def test_jvp_of_matrix_function_with_two_primals_and_aux():
    a = rng.normal(size=(4, 4)).astype("float32")
    b = rng.normal(size=(4, 2)).astype("float32")
    ta = rng.normal(size=(4, 4)).astype("float32")
    tb = rng.normal(size=(4, 2)).astype("float32")

    def f(a, b):
        return {"ab": ops.matmul(a, b), "a2": ops.matmul(a, a)}, ops.sum(b)

    out, tan, aux = ops.linalg.jvp(f, (a, b), (ta, tb), has_aux=True)
    np.testing.assert_allclose(ops.convert_to_numpy(out["ab"]), a @ b, rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(tan["ab"]), ta @ b + a @ tb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(tan["a2"]), ta @ a + a @ ta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(aux), b.sum(), rtol=1e-5)


def test_jvp_output_independent_of_input_has_zero_tangent():
    x = np.ones((2,), "float32")
    _, dy = ops.linalg.jvp(lambda a: ops.ones((3,)), (x,), (x,))
    np.testing.assert_array_equal(ops.convert_to_numpy(dy), np.zeros(3))


def test_jvp_rejects_mismatched_tangents():
    with pytest.raises(ValueError):
        ops.linalg.jvp(ops.sin, (np.ones(2, "float32"),), (np.ones(3, "float32"),))
    with pytest.raises(ValueError):
        ops.linalg.jvp(ops.sin, (np.ones(2, "float32"),), [])


def test_create_graph_gives_second_derivatives():
    x = ops.convert_to_tensor(np.array([0.5, -1.0, 2.0], "float32"))
    x = ops.stop_gradient(x)
    x.requires_grad = True
    _C.tape_push()
    try:
        _C.tape_push()
        y = ops.sum(x**3)
        (dx,) = _C.gradient(y, [x], create_graph=True)  # pops the inner tape
        (d2x,) = _C.gradient(ops.sum(dx), [x])
    finally:
        _C.tape_pop()
    np.testing.assert_allclose(ops.convert_to_numpy(dx), 3 * np.array([0.25, 1, 4]), rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(d2x), 6 * np.array([0.5, -1, 2]), rtol=1e-6)
    # create_graph needs a tape beneath the one it consumes.
    _C.tape_push()
    try:
        with pytest.raises(ValueError, match="outer tape"):
            _C.gradient(ops.sum(x * 2), [x], create_graph=True)
    finally:
        _C.tape_pop()
    assert _C.tape_depth() == 0
