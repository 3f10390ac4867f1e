"""Sparse tensors on KERAS_BACKEND=swift: values against numpy, the
sparseness of results (jax BCOO rules), and errors.

Skipped while ``_swiftkeras`` is not built.
"""

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import ops  # noqa: E402

from keras_swift.src import sparse  # noqa: E402
from keras_swift.src.sparse import SparseTensor  # noqa: E402
from keras_swift.src.tensor import SwiftTensor  # noqa: E402

rng = np.random.default_rng(0)
X = np.array([[1.0, 0.0, -3.0], [0.0, 2.5, 0.0]], "float32")
Y = np.array([[0.0, 4.0, 1.0], [2.0, 0.0, -1.0]], "float32")
T3 = (rng.normal(size=(4, 2, 3)) * (rng.random((4, 2, 3)) < 0.5)).astype("float32")


def sp(a, n_dense=0):
    return SparseTensor.fromdense(a, n_dense=n_dense)


def dense(x):
    return ops.convert_to_numpy(x)


def kind(x):
    if isinstance(x, SparseTensor):
        return "slices" if x.n_dense else "sparse"
    assert isinstance(x, SwiftTensor), type(x)
    return "dense"


# -- construction and conversion -------------------------------------------


def test_fromdense_roundtrip_and_layout():
    s = sp(X)
    assert s.shape == (2, 3) and s.dtype == "float32" and s.ndim == 2
    assert s.nnz == 3 and s.n_dense == 0
    np.testing.assert_array_equal(dense(s), X)
    np.testing.assert_array_equal(np.asarray(s), X)
    s1 = sp(X, n_dense=1)  # rows holding a non-zero
    assert s1.nnz == 2 and s1.n_dense == 1 and s1.values.shape == (2, 3)
    np.testing.assert_array_equal(dense(s1), X)


def test_constructor_duplicates_sum_and_slices():
    s = SparseTensor([[0, 1], [0, 1], [1, 0]], [1.0, 2.0, 5.0], (2, 2))
    np.testing.assert_array_equal(dense(s), [[0, 3], [5, 0]])
    sl = SparseTensor([[1]], [[1.0, 2.0]], (3, 2))
    assert sl.n_dense == 1
    np.testing.assert_array_equal(dense(sl), [[0, 0], [1, 2], [0, 0]])


def test_convert_to_tensor_keeps_or_densifies():
    s = sp(X)
    assert ops.convert_to_tensor(s) is s
    assert isinstance(ops.convert_to_tensor(s, sparse=True), SparseTensor)
    d = ops.convert_to_tensor(s, sparse=False)
    assert isinstance(d, SwiftTensor)
    np.testing.assert_array_equal(dense(d), X)
    # A dense input stays dense (Keras: `sparse` says whether to *keep*).
    assert isinstance(ops.convert_to_tensor(X, sparse=True), SwiftTensor)
    c = ops.cast(s, "int32")
    assert isinstance(c, SparseTensor) and c.dtype == "int32"
    assert ops.is_tensor(s)
    assert ops.shape(s) == (2, 3)


@pytest.mark.parametrize(
    "args, error",
    [
        (([[0, 3]], [1.0], (2, 3)), IndexError),  # out of range
        (([[-1, 0]], [1.0], (2, 3)), IndexError),  # negative
        (([[0, 0]], [1.0, 2.0], (2, 3)), ValueError),  # values/indices count
        (([[0, 0, 0]], [1.0], (2, 3)), ValueError),  # too many index columns
        (([[0.5, 0]], [1.0], (2, 3)), TypeError),  # non-integer indices
        (([[0, 0]], [1.0], (2, -3)), ValueError),  # negative dimension
    ],
)
def test_constructor_errors(args, error):
    with pytest.raises(error):
        SparseTensor(*args)


# -- element-wise ------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["abs", "negative", "sin", "tanh", "square", "sign", "floor", "expm1"]
)
@pytest.mark.parametrize("n_dense", [0, 1])
def test_zero_preserving_unary_keeps_sparseness(name, n_dense):
    x = sp(X, n_dense)
    out = getattr(ops, name)(x)
    assert kind(out) == kind(x)
    np.testing.assert_allclose(dense(out), getattr(np, name)(X), rtol=1e-6)


def test_nonlinear_unary_merges_duplicates_first():
    # sqrt(4 + 5) != sqrt(4) + sqrt(5): duplicates must be summed first.
    s = SparseTensor([[0], [0]], [4.0, 5.0], (2,))
    np.testing.assert_allclose(dense(ops.sqrt(s)), [3.0, 0.0])
    np.testing.assert_allclose(dense(ops.negative(s)), [-9.0, 0.0])


@pytest.mark.parametrize("name", ["exp", "cos", "log1p", "reciprocal"])
def test_densifying_unary(name):
    out = getattr(ops, name)(sp(np.abs(X)))
    with np.errstate(divide="ignore"):
        expected = getattr(np, name)(np.abs(X))
    if name == "log1p":  # log1p(0) == 0: stays sparse
        assert kind(out) == "sparse"
    else:
        assert kind(out) == "dense"
    np.testing.assert_allclose(dense(out), expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["add", "subtract", "maximum", "minimum"])
def test_union_ops(name):
    f, ref = getattr(ops, name), getattr(np, name)(X, Y)
    out = f(sp(X), sp(Y))  # different index sets
    assert kind(out) == "sparse"
    np.testing.assert_allclose(dense(out), ref)
    assert kind(f(sp(X), Y)) == "dense"
    np.testing.assert_allclose(dense(f(X, sp(Y))), ref)
    out = f(sp(X, 1), sp(Y, 1))
    assert kind(out) == "slices"
    np.testing.assert_allclose(dense(out), ref)


def test_union_same_indices_object():
    a = sp(X)
    b = SparseTensor(a.indices, ops.multiply(a.values, 2.0), a.shape)
    out = ops.add(a, b)
    assert out.indices is a.indices
    np.testing.assert_allclose(dense(out), 3 * X)


def test_multiply_intersection():
    np.testing.assert_allclose(dense(ops.multiply(sp(X), sp(Y))), X * Y)
    assert kind(ops.multiply(sp(X), sp(Y))) == "sparse"
    out = ops.multiply(sp(X), Y)
    assert kind(out) == "sparse" and out.nnz == 3
    np.testing.assert_allclose(dense(out), X * Y)
    out = ops.multiply(2.0, sp(X, 1))
    assert kind(out) == "slices"
    np.testing.assert_allclose(dense(out), 2 * X)
    # a dense operand that broadcasts to the sparse shape stays sparse
    row = np.array([1.0, 2.0, 3.0], "float32")
    out = ops.multiply(sp(X), row)
    assert kind(out) == "sparse"
    np.testing.assert_allclose(dense(out), X * row)


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_divide_zero_and_nan_divisors(dtype):
    x = np.array([[0, 2, 3], [3, 2, 1]], dtype)
    s = SparseTensor([[0, 0], [0, 2], [1, 1]], x[[0, 0, 1], [0, 2, 1]], (2, 3))
    if dtype == "int32":
        y = np.array([[0, 0, 3], [0, 0, 1]], dtype)
    else:
        y = np.array([[np.nan, np.nan, 3], [0, 0, 1]], dtype)
    out = ops.divide(s, y)
    assert kind(out) == "sparse"
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.divide(dense(s), y)
    np.testing.assert_allclose(dense(out), expected)
    # a sparse divisor divides by zero off its indices: dense result
    assert kind(ops.divide(X, sp(Y))) == "dense"
    assert kind(ops.divide(sp(X), 2)) == "sparse"


# -- reductions and shapes ---------------------------------------------------


@pytest.mark.parametrize(
    "axis, keepdims",
    [(None, False), (None, True), ((), False), (0, False), (1, True), ((0, 2), False), ((1, 2), True)],
)
@pytest.mark.parametrize("n_dense", [0, 1, 2])
def test_sum_and_mean(axis, keepdims, n_dense):
    x = sp(T3, n_dense)
    out = ops.sum(x, axis=axis, keepdims=keepdims)
    assert isinstance(out, SparseTensor)
    np.testing.assert_allclose(
        dense(out), np.sum(T3, axis=axis, keepdims=keepdims), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        dense(ops.mean(x, axis=axis, keepdims=keepdims)),
        np.mean(T3, axis=axis, keepdims=keepdims),
        rtol=1e-5,
        atol=1e-6,
    )


def test_int_sum_and_mean_dtypes():
    x = sp(np.array([[1, 0], [0, 2]], "int8"))
    assert ops.sum(x).dtype == "int32"
    assert ops.mean(x).dtype == "float32"


@pytest.mark.parametrize("n_dense", [0, 1])
def test_shape_ops(n_dense):
    x = sp(T3, n_dense)
    cases = [
        (ops.reshape(x, (3, 8)), T3.reshape(3, 8)),
        (ops.reshape(x, (-1, 4)), T3.reshape(-1, 4)),
        (ops.transpose(x), T3.T),
        (ops.transpose(x, (1, 0, 2)), T3.transpose(1, 0, 2)),
        (ops.expand_dims(x, 0), T3[None]),
        (ops.expand_dims(x, -1), T3[..., None]),
        (ops.squeeze(ops.expand_dims(x, 1), 1), T3),
        (ops.squeeze(ops.expand_dims(x, -1)), T3),
    ]
    for out, expected in cases:
        assert isinstance(out, SparseTensor)
        np.testing.assert_array_equal(dense(out), expected)
    assert kind(ops.transpose(sp(X))) == "sparse"
    with pytest.raises(ValueError):
        ops.squeeze(x, 0)
    with pytest.raises(ValueError):
        ops.reshape(x, (5, 5))


def test_concatenate():
    for axis in (0, 1):
        out = ops.concatenate([sp(X), sp(Y)], axis=axis)
        assert kind(out) == "sparse"
        np.testing.assert_array_equal(dense(out), np.concatenate([X, Y], axis))
        out = ops.concatenate([sp(X), Y], axis=axis)
        assert kind(out) == "dense"
        np.testing.assert_array_equal(dense(out), np.concatenate([X, Y], axis))
    out = ops.concatenate([sp(X, 1), sp(Y, 1)], axis=0)
    assert kind(out) == "slices"
    np.testing.assert_array_equal(dense(out), np.concatenate([X, Y], 0))
    with pytest.raises(ValueError):
        ops.concatenate([sp(X), sp(np.ones((2, 2), "float32"))], axis=0)


# -- products ----------------------------------------------------------------


@pytest.mark.parametrize(
    "xs, ys", [((5, 3), (3, 4)), ((2, 5, 3), (2, 3, 4)), ((2, 2, 5, 3), (2, 2, 3, 4))]
)
@pytest.mark.parametrize("which", ["left", "right", "both"])
def test_matmul(xs, ys, which):
    a = (rng.normal(size=xs) * (rng.random(xs) < 0.6)).astype("float32")
    b = (rng.normal(size=ys) * (rng.random(ys) < 0.6)).astype("float32")
    x = sp(a) if which in ("left", "both") else a
    y = sp(b) if which in ("right", "both") else b
    out = ops.matmul(x, y)
    assert kind(out) == ("sparse" if which == "both" else "dense")
    np.testing.assert_allclose(dense(out), a @ b, rtol=1e-5, atol=1e-5)


def test_matmul_int_and_dot():
    a = np.array([[1, 0, 2], [0, 3, 0]], "int32")
    b = np.array([[1, 2], [3, 4], [5, 6]], "int32")
    out = ops.matmul(sp(a), b)
    assert out.dtype == "int32"
    np.testing.assert_array_equal(dense(out), a @ b)
    np.testing.assert_array_equal(dense(ops.dot(sp(a), b)), a @ b)
    with pytest.raises(ValueError):
        ops.matmul(sp(a), a)


def test_einsum_densifies():
    np.testing.assert_allclose(
        dense(ops.einsum("ij,kj->ik", sp(X), Y)), X @ Y.T, rtol=1e-6
    )


# -- encodings and counting --------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot_sparse(axis):
    idx = np.array([[0, 2], [3, -1]])
    out = ops.one_hot(idx, 3, axis=axis, sparse=True)
    assert isinstance(out, SparseTensor)
    expected = ops.convert_to_numpy(ops.one_hot(idx, 3, axis=axis))
    np.testing.assert_array_equal(dense(out), expected)


def test_multi_hot_sparse():
    idx = np.array([[0, 2, 2], [1, 1, 0]])
    out = ops.multi_hot(idx, 4, sparse=True, dtype="int32")
    assert isinstance(out, SparseTensor) and out.dtype == "int32"
    np.testing.assert_array_equal(dense(out), [[1, 0, 1, 0], [1, 1, 0, 0]])


def test_bincount_sparse():
    x = np.array([1, 1, 2, 3, 2, 4, 4, 6])
    w = np.array([0, 0, 3, 2, 1, 1, 4, 2])
    out = ops.bincount(x, weights=w, minlength=3, sparse=True)
    assert isinstance(out, SparseTensor)
    np.testing.assert_array_equal(dense(out), np.bincount(x, w, minlength=3))
    # a sparse input counts its stored values (not the implicit zeros)
    ind = np.arange(1, 16, 2)[:, None]
    xs, ws = SparseTensor(ind, x, (16,)), SparseTensor(ind, w, (16,))
    out = ops.bincount(xs, weights=ws)
    assert isinstance(out, SparseTensor)
    np.testing.assert_array_equal(dense(out), np.bincount(x, w))
    out = ops.bincount(ops.expand_dims(xs, 0))
    np.testing.assert_array_equal(dense(out), [np.bincount(x)])
    with pytest.raises(ValueError):
        ops.bincount(xs, weights=SparseTensor(ind[::-1], w, (16,)))


def test_take_with_sparse_indices():
    x = rng.normal(size=(3, 4)).astype("float32")
    ind = SparseTensor([[0, 0], [1, 2]], [-1, 2], (2, 3))
    np.testing.assert_allclose(
        dense(ops.take(x, ind, axis=0)), np.take(x, dense(ind), axis=0)
    )


def test_symbolic_sparse_output_spec():
    # backend.compute_output_spec runs the op on an empty SparseTensor
    from keras_swift.src.ops import core

    x = keras.KerasTensor((None, 3), sparse=True)
    spec = core.compute_output_spec(lambda t: ops.sin(t), x)
    assert spec.sparse and spec.shape == (None, 3)
    spec = core.compute_output_spec(lambda t: ops.exp(t), x)
    assert not spec.sparse


def test_dense_path_untouched():
    # the dispatch wrappers hand dense operands to the dense functions
    from keras_swift.src.ops import numpy as knp

    assert knp.add.__wrapped__ is not knp.add
    np.testing.assert_allclose(dense(knp.add(X, Y)), X + Y)
    assert sparse.is_tensor(ops.convert_to_tensor(X))


def _fit_dense_layer(x_batches, y_batches, optimizer, extra_dense_use=False):
    class TwiceUsed(keras.layers.Dense):
        def call(self, x):
            out = super().call(x)
            if extra_dense_use:  # the kernel is also read densely
                out = out + ops.sum(self.kernel) * 0.01
            return out

    inputs = keras.Input((6,), sparse=True)
    model = keras.Model(inputs, TwiceUsed(3, use_bias=False, kernel_initializer="ones")(inputs))
    model.compile(optimizer=optimizer, loss="mse")
    seen = []
    original = model.optimizer.assign_sub

    def spy(variable, value):
        seen.append(type(value).__name__)
        return original(variable, value)

    model.optimizer.assign_sub = spy
    for xb, yb in zip(x_batches, y_batches):
        model.train_on_batch(xb, yb)
    return ops.convert_to_numpy(model.layers[-1].kernel), seen


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
@pytest.mark.parametrize("extra_dense_use", [False, True])
def test_sparse_input_gives_row_sparse_updates(optimizer, extra_dense_use):
    xs = [(rng.normal(size=(4, 6)) * (rng.random((4, 6)) < 0.3)).astype("float32") for _ in range(3)]
    ys = [rng.normal(size=(4, 3)).astype("float32") for _ in range(3)]
    k_sparse, seen = _fit_dense_layer([sp(x) for x in xs], ys, optimizer, extra_dense_use)
    k_dense, _ = _fit_dense_layer(xs, ys, optimizer, extra_dense_use)
    # Same training as on the dense input, but the kernel's updates stay row-sparse
    # unless the kernel is also used densely.
    np.testing.assert_allclose(k_sparse, k_dense, rtol=1e-5, atol=1e-6)
    kernel_updates = set(seen)
    if extra_dense_use:
        assert "IndexedSlices" not in kernel_updates
    else:
        assert kernel_updates == {"IndexedSlices"}
