"""Compiled steps: predict_step and test_step traced into engine graphs and replayed.

A compiled step must give what the eager one gives, follow the variables as
they change, retrace for a new signature, fall back (with one warning) where a
graph cannot replay the step, and a traced graph must survive save and load.
"""

import warnings

import numpy as np
import pytest
from swift_env import require_swift

keras = require_swift()

from keras import layers  # noqa: E402
from keras import ops  # noqa: E402

import _swiftkeras  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(7)
    yield
    assert not _swiftkeras.trace_active(), "a trace was left active"
    assert _swiftkeras.tape_depth() == 0


def _mlp():
    return keras.Sequential([keras.Input((12,)), layers.Dense(16, activation="relu"), layers.Dense(3)])


def _convnet():
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Dropout(0.5),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ])


def _lstm():
    return keras.Sequential([keras.Input((5, 4)), layers.LSTM(6), layers.Dense(2)])


def _transformer():
    # Keras's text-classification block in small: attention (with dropout), residuals,
    # LayerNorm, a feed-forward pair, pooling.
    inp = keras.Input((6, 8))
    h = layers.LayerNormalization()(inp + layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1)(inp, inp))
    f = layers.Dense(8)(layers.Dense(16, activation="relu")(h))
    h = layers.LayerNormalization()(h + layers.Dropout(0.1)(f))
    return keras.Model(inp, layers.Dense(3)(layers.GlobalAveragePooling1D()(h)))


def _two_in_two_out():
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = layers.Dense(5, activation="tanh")(layers.Concatenate()([a, b]))
    return keras.Model([a, b], [layers.Dense(2)(h), layers.Dense(1, activation="sigmoid")(h)])


def _compiled(model):
    step = model.make_predict_function().compiled
    assert step is not None
    return step


@pytest.mark.parametrize("build,shape", [(_mlp, (12,)), (_convnet, (8, 8, 2)), (_lstm, (5, 4))])
def test_compiled_predict_equals_eager(build, shape):
    model = build()
    model.compile(loss="mse", jit_compile=True)
    eager = build()
    eager.set_weights(model.get_weights())
    eager.compile(loss="mse", jit_compile=False)
    x = np.random.default_rng(0).normal(size=(10, *shape)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        for _ in range(3):  # trace, then replays
            np.testing.assert_allclose(model.predict(x, batch_size=4, verbose=0),
                                       eager.predict(x, batch_size=4, verbose=0), rtol=1e-5, atol=1e-6)
    step = _compiled(model)
    assert step.eager_reason is None
    # Batches of 4, then the last partial batch of 2: two signatures.
    assert len(step.graphs) == 2
    np.testing.assert_allclose(model.predict_on_batch(x[:1]), eager.predict_on_batch(x[:1]), rtol=1e-5, atol=1e-6)

def test_a_conv_and_its_max_pool_fuse_in_predict_and_train_as_the_ops():
    # The MNIST convnet's layers in small: in predict each conv + bias + relu + pool is one
    # node that never writes the conv's output; fit runs the same node under the tape.
    def build():
        return keras.Sequential([
            keras.Input((12, 12, 1)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ])

    model, eager = build(), build()
    eager.set_weights(model.get_weights())
    model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    eager.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 12, 12, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 16)]
    np.testing.assert_array_equal(model.predict(x, batch_size=8, verbose=0), eager.predict(x, batch_size=8, verbose=0))
    (graph, *_), = _compiled(model).graphs.values()
    ops_run = [n.get("op") for n in _swiftkeras.graph_describe(graph)["nodes"]]
    assert "max_pool" not in ops_run
    assert sum("max_pool_size" in n.get("attrs", {}) for n in _swiftkeras.graph_describe(graph)["nodes"]) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    eager.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), eager.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build,shape", [(_mlp, (12,)), (_convnet, (8, 8, 2))])
def test_compiled_evaluate_equals_eager(build, shape):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(22, *shape)).astype("float32")
    y = rng.integers(0, 3, size=(22,))
    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(7)
        model = build()
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=jit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # Two evaluations (metrics reset between), batches of 8 and a last one of 6.
            results.append([model.evaluate(x, y, batch_size=8, verbose=0) for _ in range(2)])
        if jit:
            step = model.test_function.compiled
            assert step.eager_reason is None and len(step.graphs) == 2
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5)


def test_replay_reads_the_current_weights():
    model = _mlp()
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(1).normal(size=(8, 12)).astype("float32")
    y = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
    before = model.predict_on_batch(x)
    model.predict_on_batch(x)  # replayed
    model.fit(x, y, epochs=2, verbose=0)
    after = model.predict_on_batch(x)
    assert not np.allclose(before, after)
    want = np.maximum(x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy(), 0)
    want = want @ model.layers[1].kernel.numpy() + model.layers[1].bias.numpy()
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-5)


def test_several_inputs_and_outputs():
    model = _two_in_two_out()
    model.compile(loss="mse")
    rng = np.random.default_rng(3)
    xa, xb = rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(6, 3)).astype("float32")
    first = model.predict_on_batch({"a": xa, "b": xb})
    again = model.predict_on_batch({"a": xa, "b": xb})
    for f, g in zip(first, again):
        np.testing.assert_array_equal(f, g)
    assert len(_compiled(model).graphs) == 1


class _HostRead(layers.Layer):
    """Branches on a value read on the host: a graph cannot replay that."""

    def call(self, x):
        if float(ops.sum(x)) > 0:
            return x * 2.0
        return x * -1.0


def test_a_host_read_falls_back_with_one_warning_and_stays_right():
    model = keras.Sequential([keras.Input((3,)), _HostRead()])
    model.compile(loss="mse")
    pos, neg = np.ones((2, 3), "float32"), -np.ones((2, 3), "float32")
    with pytest.warns(UserWarning, match="predict_step runs eagerly.*read on the host"):
        np.testing.assert_array_equal(model.predict_on_batch(pos), 2 * pos)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        np.testing.assert_array_equal(model.predict_on_batch(neg), -neg)
        np.testing.assert_array_equal(model.predict_on_batch(pos), 2 * pos)
    assert "read on the host" in _compiled(model).eager_reason


class _Cond(layers.Layer):
    def call(self, x):
        return ops.cond(ops.sum(x) > 0, lambda: x * 2.0, lambda: -x)


def test_tensor_control_flow_compiles_and_replays_each_branch():
    model = keras.Sequential([keras.Input((3,)), _Cond()])
    model.compile(loss="mse")
    pos = np.ones((2, 3), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        np.testing.assert_array_equal(model.predict_on_batch(pos), 2 * pos)  # traced
        np.testing.assert_array_equal(model.predict_on_batch(-pos), pos)  # replayed
        np.testing.assert_array_equal(model.predict_on_batch(pos), 2 * pos)
    step = _compiled(model)
    assert step.eager_reason is None and len(step.graphs) == 1
    (graph, *_), = step.graphs.values()
    kinds = [n["kind"] for n in _swiftkeras.graph_describe(graph)["nodes"]]
    assert "cond" in kinds


class _Loops(layers.Layer):
    """switch on a tensor index, while_loop on a tensor condition, fori_loop with a tensor bound."""

    def call(self, x):
        s = ops.sum(x)
        index = ops.cast(ops.clip(ops.floor(s), -1, 3), "int32")
        y = ops.switch(index, [lambda a: a + 1.0, lambda a: a * 3.0, lambda a: -a], x)
        # Doubles y until its absolute sum passes 50 (at most 10 times).
        _, y = ops.while_loop(lambda i, v: ops.sum(ops.abs(v)) < 50.0,
                              lambda i, v: (i + 1, v * 2.0), (0, y), maximum_iterations=10)
        n = ops.cast(ops.clip(s, 0, 4), "int32")
        return ops.fori_loop(0, n, lambda i, v: v + ops.cast(i, "float32"), y)


def _loops_reference(x):
    s = x.sum()
    index = int(np.clip(np.floor(s), -1, 3))
    index = min(max(index, 0), 2)
    y = [x + 1.0, x * 3.0, -x][index]
    for _ in range(10):
        if np.abs(y).sum() >= 50.0:
            break
        y = y * 2.0
    for i in range(int(np.clip(s, 0, 4))):
        y = y + i
    return y


def test_switch_while_loop_and_fori_loop_compile():
    model = keras.Sequential([keras.Input((3,)), _Loops()])
    model.compile(loss="mse")
    batches = [np.full((1, 3), v, "float32") for v in (0.1, 0.5, 1.2, -3.0, 7.0, 40.0, 0.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        for x in batches:
            np.testing.assert_allclose(model.predict_on_batch(x), _loops_reference(x), rtol=1e-6)
    step = _compiled(model)
    assert step.eager_reason is None and len(step.graphs) == 1
    (graph, *_), = step.graphs.values()
    kinds = [n["kind"] for n in _swiftkeras.graph_describe(graph)["nodes"]]
    assert kinds.count("while") == 2 and "cond" in kinds


def test_an_untaken_branch_that_raises_falls_back_and_stays_right():
    class Raises(layers.Layer):
        def call(self, x):
            def bad():
                raise ValueError("only for negative sums")

            return ops.cond(ops.sum(x) >= 0, lambda: x * 2.0, bad)

    model = keras.Sequential([keras.Input((3,)), Raises()])
    model.compile(loss="mse")
    pos = np.ones((2, 3), "float32")
    with pytest.warns(UserWarning, match="did not take raised ValueError"):
        np.testing.assert_array_equal(model.predict_on_batch(pos), 2 * pos)
    np.testing.assert_array_equal(model.predict_on_batch(pos), 2 * pos)


def test_a_graph_with_a_cond_saves_and_loads(tmp_path):
    model = keras.Sequential([keras.Input((3,)), _Cond()])
    model.compile(loss="mse")
    pos = np.ones((2, 3), "float32")
    model.predict_on_batch(pos)
    step = _compiled(model)
    (graph, *_), = step.graphs.values()
    path = str(tmp_path / "cond.graph")
    _swiftkeras.graph_save(graph, path)
    loaded = _swiftkeras.graph_load(path)
    state = [v._value for v in step.variables()]
    for x, want in ((pos, 2 * pos), (-pos, pos)):
        (out,) = _swiftkeras.graph_run(loaded, state + [_swiftkeras.from_buffer(x, "float32")])
        np.testing.assert_array_equal(np.asarray(out), want)


def test_jit_compile_false_stays_eager():
    model = _mlp()
    model.compile(loss="mse", jit_compile=False)
    assert model.make_predict_function().compiled is None


def test_a_traced_graph_saves_and_loads(tmp_path):
    model = _mlp()
    model.compile(loss="mse")
    x = np.random.default_rng(4).normal(size=(5, 12)).astype("float32")
    want = model.predict_on_batch(x)
    step = _compiled(model)
    (graph, *_), = step.graphs.values()
    path = str(tmp_path / "predict.graph")
    _swiftkeras.graph_save(graph, path)
    loaded = _swiftkeras.graph_load(path)
    n_in, n_out, n_nodes = _swiftkeras.graph_info(loaded)
    state = [v._value for v in step.variables()]  # 4 weights and the global seed state
    assert (n_in, n_out) == (len(state) + 1, 1) and n_nodes > 0
    inputs = state + [_swiftkeras.from_buffer(x, "float32")]
    (out,) = _swiftkeras.graph_run(loaded, inputs)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)
    with pytest.raises(TypeError, match="expected a graph"):
        _swiftkeras.graph_run(object(), inputs)


def _fit_twice(build, x, y, jit, optimizer="adam", **fit_kw):
    keras.utils.set_random_seed(11)
    model = build()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, **fit_kw)
    return model, history.history


@pytest.mark.parametrize("build,shape,optimizer", [
    (_mlp, (12,), "adam"),
    (_mlp, (12,), "sgd"),
    (_convnet, (8, 8, 2), "adam"),  # BatchNorm updates and Dropout draws in the graph
    (_lstm, (5, 4), "rmsprop"),
    (_transformer, (6, 8), "adam"),
])
def test_compiled_fit_equals_eager(build, shape, optimizer):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(20, *shape)).astype("float32")
    y = rng.integers(0, 2, size=(20,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        compiled, h1 = _fit_twice(build, x, y, True, optimizer)
    eager, h2 = _fit_twice(build, x, y, False, optimizer)
    step = compiled.train_function.compiled
    assert step.eager_reason is None and step.graphs  # full batches of 8 and the last one of 4
    for k in h2:
        np.testing.assert_allclose(h1[k], h2[k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(compiled.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    # The seed generators advanced alike (the Dropout masks of every step were drawn anew).
    for a, b in zip(compiled.non_trainable_variables, eager.non_trainable_variables):
        if "seed_generator" in a.path:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)


def test_compiled_fit_with_validation_and_a_custom_train_step():
    class Custom(keras.Model):
        def train_step(self, data):
            x, y = data
            with keras_swift.GradientTape() as tape:
                loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss}

    import keras_swift

    rng = np.random.default_rng(8)
    x = rng.normal(size=(24, 12)).astype("float32")
    y = rng.normal(size=(24, 3)).astype("float32")
    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(3)
        inp = keras.Input((12,))
        model = Custom(inp, layers.Dense(3)(layers.Dense(8, activation="relu")(inp)))
        model.compile(optimizer="adam", loss="mse", jit_compile=jit)
        h = model.fit(x, y, batch_size=8, epochs=3, verbose=0, validation_split=0.25, shuffle=False)
        results.append((h.history, model.get_weights()))
        if jit:
            assert model.train_function.compiled.eager_reason is None
    for k in results[1][0]:
        np.testing.assert_allclose(results[0][0][k], results[1][0][k], rtol=2e-5, atol=1e-6, err_msg=k)


def _fit_state(jit, optimizer, x, y, build=_mlp, policy=None, epochs=2):
    keras.utils.set_random_seed(11)
    previous = keras.config.dtype_policy()
    if policy is not None:
        keras.config.set_dtype_policy(policy)
    try:
        model = build()
        model.compile(optimizer=optimizer(), loss="sparse_categorical_crossentropy", jit_compile=jit)
        history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False)
    finally:
        keras.config.set_dtype_policy(previous)
    return model, history.history


def _assert_same_training(compiled, eager, h1, h2):
    for k in h2:
        np.testing.assert_allclose(h1[k], h2[k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(compiled.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    for a, b in zip(compiled.optimizer.variables, eager.optimizer.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6, err_msg=a.path)


def _compiles_without_fallback(model):
    step = model.train_function.compiled
    assert step.eager_reason is None and step.graphs
    for graph, *_ in step.graphs.values():
        assert "cond" in [n["kind"] for n in _swiftkeras.graph_describe(graph)["nodes"]]


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(gradient_accumulation_steps=2),
    lambda: keras.optimizers.SGD(0.05, momentum=0.5, gradient_accumulation_steps=3),
    lambda: keras.optimizers.Adam(use_ema=True, ema_overwrite_frequency=2),
], ids=["adam-accumulate-2", "sgd-accumulate-3", "adam-ema-overwrite"])
def test_optimizer_control_flow_compiles_and_equals_eager(optimizer):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(28, 12)).astype("float32")  # 3 full batches of 8 and one of 4 per epoch
    y = rng.integers(0, 3, size=(28,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        compiled, h1 = _fit_state(True, optimizer, x, y)
    eager, h2 = _fit_state(False, optimizer, x, y)
    _compiles_without_fallback(compiled)
    _assert_same_training(compiled, eager, h1, h2)


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    lambda: keras.optimizers.RMSprop(0.01),
], ids=["sgd-momentum", "rmsprop"])
def test_optimizer_update_chains_fuse_and_train_as_eager(optimizer):
    # Keras updates each variable through a chain of elementwise ops, which the graph runs
    # as fused_elementwise nodes (Program.fusingElementwise).
    rng = np.random.default_rng(12)
    x = rng.normal(size=(24, 12)).astype("float32")
    y = rng.integers(0, 3, size=(24,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        compiled, h1 = _fit_state(True, optimizer, x, y)
    eager, h2 = _fit_state(False, optimizer, x, y)
    step = compiled.train_function.compiled
    assert step.eager_reason is None and step.graphs
    for graph, *_ in step.graphs.values():
        assert "fused_elementwise" in [n.get("op") for n in _swiftkeras.graph_describe(graph)["nodes"]]
    _assert_same_training(compiled, eager, h1, h2)


@pytest.mark.parametrize("policy", [None, "mixed_float16"])
def test_loss_scaling_compiles_and_equals_eager_through_non_finite_steps(policy):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 12)).astype("float32")
    # Batch 2 of each epoch: non-finite gradients, the update is skipped. An infinite input
    # rather than a huge finite one, whose overflow depended on the GEMM kernel's summation
    # order (3e38 stayed finite with OpenBLAS's Zen kernel).
    x[17] = np.inf
    y = rng.integers(0, 3, size=(40,))

    def optimizer():
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(), dynamic_growth_steps=2)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        compiled, h1 = _fit_state(True, optimizer, x, y, policy=policy)
    eager, h2 = _fit_state(False, optimizer, x, y, policy=policy)
    _compiles_without_fallback(compiled)
    assert not np.isfinite(h1["loss"]).all(), "some steps had non-finite gradients"
    assert all(np.isfinite(w).all() for w in compiled.get_weights()), "and skipped their update"
    _assert_same_training(compiled, eager, h1, h2)


def test_control_flow_in_a_custom_train_step():
    import keras_swift

    class Custom(keras.Model):
        def train_step(self, data):
            x, y = data
            with keras_swift.GradientTape() as tape:
                pred = self(x, training=True)
                # A loss that takes a branch on its own value, inside the tape.
                loss = self.compute_loss(x=x, y=y, y_pred=pred)
                loss = ops.cond(loss > 1.0, lambda: loss * 0.5, lambda: loss)
            grads = tape.gradient(loss, self.trainable_variables)
            # Scales the gradients by 0.5 until their norm is under 1 (at most 4 times).
            norm = lambda gs: ops.sqrt(sum(ops.sum(g * g) for g in gs))  # noqa: E731
            _, grads = ops.while_loop(lambda i, gs: norm(gs) > 1.0,
                                      lambda i, gs: (i + 1, [g * 0.5 for g in gs]),
                                      (0, grads), maximum_iterations=4)
            mode = ops.cast(self.optimizer.iterations % 3, "int32")
            grads = ops.switch(mode, [lambda *g: list(g), lambda *g: [v * 2.0 for v in g],
                                      lambda *g: [v * 0.0 for v in g]], *grads)
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss}

    rng = np.random.default_rng(8)
    x = rng.normal(size=(24, 12)).astype("float32") * 3
    y = rng.normal(size=(24, 3)).astype("float32") * 3
    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(3)
        inp = keras.Input((12,))
        model = Custom(inp, layers.Dense(3)(layers.Dense(8, activation="relu")(inp)))
        model.compile(optimizer="adam", loss="mse", jit_compile=jit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        results.append((h.history, model.get_weights()))
        if jit:
            assert model.train_function.compiled.eager_reason is None
    for k in results[1][0]:
        np.testing.assert_allclose(results[0][0][k], results[1][0][k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


class _Counter(layers.Layer):
    """State assigned inside a cond nested in a while_loop body (found and carried)."""

    def build(self, shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
        self.last = self.add_weight(shape=(), initializer="zeros", trainable=False, name="last")

    def call(self, x):
        s = ops.sum(x)

        def body(i, acc):
            ops.cond(s > 0, lambda: self.count.assign_add(1.0), lambda: self.count.assign_sub(2.0))
            return i + 1, acc + self.count

        _, acc = ops.while_loop(lambda i, acc: i < ops.cast(ops.abs(s), "int32"), body, (0, 0.0))
        self.last.assign(acc)
        return x * acc


def test_state_assigned_in_nested_control_flow_is_carried():
    model = keras.Sequential([keras.Input((2,)), _Counter()])
    model.compile(loss="mse")
    count = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        for v in (1.0, 0.5, -1.0, 2.0, 0.0, -0.5):
            x = np.full((1, 2), v, "float32")
            acc = 0.0
            for _ in range(int(abs(2 * v))):
                count += 1.0 if v > 0 else -2.0
                acc += count
            np.testing.assert_allclose(model.predict_on_batch(x), x * acc, rtol=1e-6)
            layer = model.layers[0]
            assert float(layer.count.numpy()) == count and float(layer.last.numpy()) == acc
    step = _compiled(model)
    assert step.eager_reason is None and len(step.graphs) == 1


@pytest.mark.parametrize("case", ["cosine-warmup", "cosine-restarts", "hinge-spectral"])
def test_keras_code_that_branches_on_tensors_compiles(case):
    """Learning-rate schedules, a loss and a layer of Keras's own that call ops.cond."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(32, 12)).astype("float32")
    y = rng.integers(0, 2, size=(32, 1)).astype("float32")

    def build():
        if case == "hinge-spectral":
            return keras.Sequential([keras.Input((12,)), layers.SpectralNormalization(layers.Dense(8)),
                                     layers.Dense(1)])
        return keras.Sequential([keras.Input((12,)), layers.Dense(8, activation="relu"), layers.Dense(1)])

    def optimizer():
        if case == "cosine-warmup":
            return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                0.01, decay_steps=6, warmup_target=0.05, warmup_steps=3))
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecayRestarts(
            0.02, first_decay_steps=2, t_mul=1.5, m_mul=0.9))

    results = []
    for jit in (True, False):
        keras.utils.set_random_seed(5)
        model = build()
        model.compile(optimizer=optimizer(), loss="hinge" if case == "hinge-spectral" else "mse", jit_compile=jit)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback
            # SpectralNormalization assigns its kernel rather than differentiating it (eager too).
            warnings.filterwarnings("ignore", message="Gradients do not exist")
            h = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        results.append((h.history, model.get_weights()))
        if jit:
            _compiles_without_fallback(model)
    for k in results[1][0]:
        np.testing.assert_allclose(results[0][0][k], results[1][0][k], rtol=2e-5, atol=1e-6, err_msg=k)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_control_flow_calls_out_of_place_raise():
    t = _swiftkeras.from_buffer(np.ones((1,), "float32"), "float32")
    with pytest.raises(ValueError, match="no active trace"):
        _swiftkeras.trace_cond_next()
    with pytest.raises(ValueError, match="no active trace"):
        _swiftkeras.trace_while_body(t)
    _swiftkeras.trace_begin()
    try:
        with pytest.raises(ValueError, match="selector"):
            _swiftkeras.trace_cond_begin(t, 2)  # a float selector
        with pytest.raises(ValueError, match="no cond"):
            _swiftkeras.trace_cond_end([t, t], 2)
        with pytest.raises(ValueError, match="split"):
            _swiftkeras.trace_cond_end([t, t, t], 2)
        with pytest.raises(TypeError):
            _swiftkeras.trace_cond_begin("yes", 2)
        with pytest.raises(ValueError, match="no cond or while_loop"):
            _swiftkeras.trace_block_abort()
        with pytest.raises(TypeError):
            _swiftkeras.trace_while_begin([t, "x"])
        with pytest.raises(ValueError, match="negative"):
            _swiftkeras.trace_while_end([], -1)
    finally:
        _swiftkeras.trace_abort()
