"""Regenerates Tests/SwiftKerasTests/Fixtures: small models saved by Python Keras (JAX backend),
an input for each and Keras's predictions, which the SwiftKeras tests must match within 1e-5.

    KERAS_BACKEND=jax python scripts/gen_swiftkeras_fixtures.py            # everything
    KERAS_BACKEND=jax python scripts/gen_swiftkeras_fixtures.py training   # optimizers.json, fit_*

"training" writes only what the training tests read: a few optimizer steps of every optimizer
(optimizers.json) and models fitted by Keras (fit_<name>: the untrained .keras, the data, the
weights and losses after fit), without touching the inference fixtures.
"""
import json
import sys
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "Tests" / "SwiftKerasTests" / "Fixtures"


def mlp():
    return keras.Sequential([
        keras.Input((8,)),
        layers.Dense(16, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(12, activation="tanh", use_bias=False),
        layers.Dense(4, activation="softmax"),
    ], name="mlp")


def convnet():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Rescaling(0.5, offset=0.1),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(2),
        layers.Conv2D(6, (2, 3), strides=(1, 2), padding="valid"),
        layers.AveragePooling2D(2, strides=1, padding="same"),
        layers.ReLU(max_value=2.0, negative_slope=0.1),
        layers.Flatten(),
        layers.Dense(3),
        layers.Softmax(),
    ], name="convnet")


def rnn():
    inp = keras.Input((6,), dtype="int32")
    x = layers.Embedding(10, 4)(inp)
    x = layers.LSTM(5, return_sequences=True)(x)
    x = layers.Bidirectional(layers.GRU(3, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(2), merge_mode="sum")(x)
    y = layers.SimpleRNN(4)(layers.Reshape((5, 2))(layers.Dense(10)(x)))
    return keras.Model(inp, layers.Dense(2)(y), name="rnn")


def two_in_two_out():
    a_in = keras.Input((8,), name="a")
    b_in = keras.Input((6, 4), name="b")
    a = layers.Dense(5, activation="gelu")(a_in)
    b = layers.Conv1D(4, 3, padding="causal", activation="elu")(b_in)
    b = layers.MaxPooling1D(2)(b)
    b = layers.AveragePooling1D(2, padding="same")(b)
    b = layers.Conv1D(5, 2, strides=1, dilation_rate=1)(b)
    g = layers.GlobalAveragePooling1D()(b)
    shared = layers.Dense(5, activation="selu", name="shared")
    s1, s2 = shared(a), shared(g)
    added = layers.Add()([s1, s2, a])
    prod = layers.Multiply()([s1, layers.Activation("sigmoid")(s2)])
    cat = layers.Concatenate()([added, prod, layers.GlobalMaxPooling1D()(b)])
    cat = layers.LayerNormalization()(cat)
    out1 = layers.Dense(3, activation="softmax", name="probs")(cat)
    out2 = layers.Dense(1, name="value")(layers.Activation("swish")(added))
    return keras.Model([a_in, b_in], [out1, out2], name="two_in_two_out")


def attention():
    inp = keras.Input((5, 8))
    ctx = keras.Input((3, 6))
    x = layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    x = layers.LayerNormalization(epsilon=1e-5)(layers.Add()([inp, x]))
    y = layers.MultiHeadAttention(num_heads=3, key_dim=2, output_shape=8)(x, ctx)
    y = layers.Conv2D(2, 2)(layers.Reshape((5, 8, 1))(y))
    y = layers.GlobalMaxPooling2D()(y)
    z = layers.GlobalAveragePooling2D()(layers.Reshape((5, 4, 2))(x))
    return keras.Model([inp, ctx], layers.Concatenate()([y, z]), name="attention")


def misc():
    """The remaining layer classes and options, one small graph."""
    seq = keras.Input((4, 3))
    x = layers.ZeroPadding1D((1, 2))(seq)
    x = layers.Conv1D(4, 2, dilation_rate=2, use_bias=False)(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Permute((2, 1))(x)
    x = layers.BatchNormalization(axis=1)(x)
    x = layers.GlobalMaxPooling1D(keepdims=True)(x)
    x = layers.Flatten()(x)
    r = layers.RepeatVector(3)(x)
    r = layers.GRU(2, return_sequences=True, go_backwards=True)(r)
    r = layers.SimpleRNN(3, activation="relu", return_sequences=True)(r)
    r = layers.MultiHeadAttention(num_heads=1, key_dim=2)(r, r, use_causal_mask=True)
    r = layers.LayerNormalization(rms_scaling=True)(r)
    r = layers.Flatten()(r)
    y = layers.ELU(alpha=0.5)(layers.Dense(6)(x))
    sub = layers.Subtract()([y, layers.Dense(6, activation="hard_sigmoid")(x)])
    ave = layers.Average()([sub, y])
    mx = layers.Maximum()([ave, layers.GaussianNoise(0.1)(sub)])
    mn = layers.Minimum()([mx, layers.Activation("softplus")(y)])
    vol = keras.Input((4, 4, 4, 1))
    v = layers.Conv3D(2, 2, padding="same")(vol)
    v = layers.AveragePooling3D(2)(v)
    v = layers.GlobalAveragePooling3D()(v)
    img = keras.Input((5, 5, 2))
    i = layers.ZeroPadding2D(((1, 0), (0, 1)))(img)
    i = layers.Conv2D(3, 2, strides=2, activation="mish")(i)
    i = layers.GlobalMaxPooling2D()(i)
    return keras.Model([seq, vol, img], [layers.Concatenate()([mn, r, v, i]), r], name="misc")


def more():
    """Depthwise, separable and transposed convolutions, cropping, upsampling, PReLU, GroupNorm."""
    img = keras.Input((6, 6, 4))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu")(img)
    x = layers.SeparableConv2D(6, 2, strides=2, depth_multiplier=2)(x)
    x = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(3, 2, strides=1, padding="valid", dilation_rate=1)(x)
    x = layers.Cropping2D(((1, 0), (0, 2)))(x)
    x = layers.UpSampling2D((1, 2))(x)
    x = layers.GroupNormalization(groups=3)(x)
    x = layers.PReLU(shared_axes=[1, 2])(x)
    seq = keras.Input((5, 2))
    s = layers.Normalization()(seq)
    s = layers.Normalization(axis=None, mean=0.5, variance=2.0)(s)
    s = layers.Normalization(axis=1, mean=[1, 2, 3, 4, 5], variance=[1, 2, 3, 4, 5], invert=True)(s)
    s = layers.Conv1DTranspose(3, 3, strides=2)(s)
    s = layers.Cropping1D((1, 2))(s)
    s = layers.UpSampling1D(2)(s)
    s = layers.SeparableConv1D(4, 3, padding="same")(s)
    s = layers.DepthwiseConv1D(2)(s)
    return keras.Model([img, seq], [x, s], name="more")


def einsum():
    """EinsumDense in its three equation forms, with bias on some axes."""
    seq = keras.Input((4, 6))
    x = layers.EinsumDense("abc,cd->abd", output_shape=(None, 5), bias_axes="d", activation="relu")(seq)
    x = layers.EinsumDense("...b,bc->...c", output_shape=3)(x)
    x = layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de")(x)
    y = layers.EinsumDense("ab...,bc->ac...", output_shape=(7,), bias_axes="c")(seq)
    return keras.Model(seq, [x, y], name="einsum")


def inputs_for(model, rng):
    xs = []
    for t in model.inputs:
        shape = (3,) + tuple(t.shape[1:])
        if "int" in str(t.dtype):
            xs.append(rng.integers(0, 10, size=shape).astype("int32"))
        else:
            xs.append(rng.normal(size=shape).astype("float32"))
    return xs


def write_gradients(name):
    """Gradients of L = sum_k sum(output_k * R_k) (inference mode) for NAME.keras's inputs:
    NAME.r<k>.npy holds R_k, NAME.gin<i>.npy d L / d float input i, and NAME.grads.weights.h5
    d L / d each trainable weight laid out as the model's own weights file (zeros for the
    non-trainable ones), so the Swift test reads them with loadWeights."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(sum(map(ord, name)))  # per model: adding a fixture changes no other
    model = keras.models.load_model(OUT / f"{name}.keras")
    xs = [np.load(OUT / f"{name}.in{i}.npy") for i in range(len(model.inputs))]
    ys = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    ys = ys if isinstance(ys, list) else [ys]
    rs = [rng.normal(size=np.shape(y)).astype("float32") for y in ys]
    floats = [i for i, x in enumerate(xs) if x.dtype.kind == "f"]
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def loss(tv, fx):
        args = list(xs)
        for i, x in zip(floats, fx):
            args[i] = x
        out, _ = model.stateless_call(tv, frozen, args if len(args) > 1 else args[0], training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return sum(jnp.sum(o * r) for o, r in zip(out, rs))

    g_weights, g_inputs = jax.grad(loss, argnums=(0, 1))(trainable, [xs[i] for i in floats])
    for k, r in enumerate(rs):
        np.save(OUT / f"{name}.r{k}.npy", r)
    for i, g in zip(floats, g_inputs):
        np.save(OUT / f"{name}.gin{i}.npy", np.asarray(g))
    for v, g in zip(model.trainable_variables, g_weights):
        v.assign(g)
    for v in model.non_trainable_variables:
        v.assign(np.zeros(v.shape, v.dtype))
    model.save_weights(OUT / f"{name}.grads.weights.h5")


def rest():
    """The layer classes no other fixture has: 3-D transposed convolution, cropping, upsampling
    and max pooling, and the layers that are the identity at inference."""
    vol = keras.Input((3, 3, 3, 2))
    v = layers.Conv3DTranspose(3, 2, strides=2, padding="same", activation="tanh")(vol)
    v = layers.Cropping3D(((1, 0), (0, 1), (1, 1)))(v)
    v = layers.UpSampling3D((1, 2, 1))(v)
    v = layers.MaxPooling3D(2, strides=1, padding="same")(v)
    v = layers.GlobalMaxPooling3D()(v)
    img = keras.Input((4, 4, 3))
    i = layers.SpatialDropout2D(0.3)(img)
    i = layers.GaussianDropout(0.2)(i)
    i = layers.Conv2D(2, 2)(i)
    i = layers.Flatten()(i)
    seq = keras.Input((5, 2))
    s = layers.SpatialDropout1D(0.3)(seq)
    s = layers.AlphaDropout(0.2)(s)
    s = layers.ActivityRegularization(l1=0.1)(s)
    s = layers.Identity()(layers.Flatten()(s))
    return keras.Model([vol, img, seq], layers.Concatenate()([v, i, s]), name="rest")


def write_model(build, rng):
    model = build()
    # Non-trivial moving statistics and biases, so inference paths are really checked.
    for w in (w for w in model.weights if "float" in str(w.dtype)):
        w.assign(rng.normal(scale=0.5, size=w.shape).astype("float32")
                 if "variance" not in w.path else rng.uniform(0.5, 1.5, size=w.shape).astype("float32"))
    name = build.__name__
    model.save(OUT / f"{name}.keras")
    # Predict with the model Keras loads from the file: a layer may cache state derived
    # from its weights (Normalization's mean) that assigning the weights does not refresh.
    model = keras.models.load_model(OUT / f"{name}.keras")
    xs = inputs_for(model, rng)
    ys = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    ys = ys if isinstance(ys, list) else [ys]
    for i, x in enumerate(xs):
        np.save(OUT / f"{name}.in{i}.npy", x)
    for i, y in enumerate(ys):
        np.save(OUT / f"{name}.out{i}.npy", np.asarray(y))


def write_later(build):
    """One fixture added after the first eight, with its gradients."""
    name = build.__name__
    keras.utils.set_random_seed(sum(map(ord, name)))
    write_model(build, np.random.default_rng(sum(map(ord, name))))
    write_gradients(name)


# Fixtures added after the first eight draw from a generator of their own, so that adding one
# leaves every other fixture as it was.
LATER = (rest,)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(7)
    for build in (mlp, convnet, rnn, two_in_two_out, attention, misc, more, einsum):
        write_model(build, rng)
    for name in ("mlp", "convnet", "rnn", "two_in_two_out", "attention", "misc", "more", "einsum"):
        write_gradients(name)
    mlp_model = keras.models.load_model(OUT / "mlp.keras")
    mlp_model.save_weights(OUT / "mlp.weights.h5")
    for build in LATER:
        write_later(build)


OPTIMIZER_CASES = {
    "sgd": lambda: keras.optimizers.SGD(learning_rate=0.1),
    "sgd_momentum": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(learning_rate=0.01),
    "adam_amsgrad": lambda: keras.optimizers.Adam(learning_rate=0.01, amsgrad=True),
    "adamw": lambda: keras.optimizers.AdamW(learning_rate=0.01),
    "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate=0.01),
    "rmsprop_centered_momentum": lambda: keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.5, centered=True),
    "adagrad": lambda: keras.optimizers.Adagrad(learning_rate=0.1),
    "nadam": lambda: keras.optimizers.Nadam(learning_rate=0.01),
    "lion": lambda: keras.optimizers.Lion(learning_rate=0.01),
    "adam_clipnorm": lambda: keras.optimizers.Adam(learning_rate=0.01, clipnorm=0.5),
    "sgd_clipvalue": lambda: keras.optimizers.SGD(learning_rate=0.1, clipvalue=0.3),
    "sgd_global_clipnorm": lambda: keras.optimizers.SGD(learning_rate=0.1, global_clipnorm=0.5),
    "adam_weight_decay": lambda: keras.optimizers.Adam(learning_rate=0.01, weight_decay=0.1),
    "sgd_exponential_decay": lambda: keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.ExponentialDecay(
        0.1, decay_steps=2, decay_rate=0.5)),
    "sgd_cosine_warmup": lambda: keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.CosineDecay(
        0.01, decay_steps=3, alpha=0.1, warmup_target=0.1, warmup_steps=2)),
    "sgd_piecewise": lambda: keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.PiecewiseConstantDecay(
        [1, 2], [0.1, 0.05, 0.01])),
}


def optimizer_steps():
    """Five steps of each optimizer on two variables with fixed gradients."""
    rng = np.random.default_rng(11)
    start = [rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    grads = [[rng.normal(size=v.shape).astype("float32") for v in start] for _ in range(5)]
    out = {"start": [v.tolist() for v in start], "grads": [[g.tolist() for g in step] for step in grads], "cases": {}}
    for name, make in OPTIMIZER_CASES.items():
        opt = make()
        variables = [keras.Variable(v) for v in start]
        values = []
        for step in grads:
            opt.apply(step, variables)
            values.append([np.asarray(v).tolist() for v in variables])
        out["cases"][name] = values
    (OUT / "optimizers.json").write_text(json.dumps(out))


def fit_convnet():
    return keras.Sequential([
        keras.Input((6, 6, 2)),
        layers.Conv2D(3, 3, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(3, activation="softmax"),
    ], name="fit_convnet")


def fit_rnn():
    inp = keras.Input((5, 3))
    h = layers.LSTM(4, return_sequences=True)(inp)
    h = layers.GRU(3)(h)
    return keras.Model(inp, layers.Dense(2)(h), name="fit_rnn")


def fit_fixtures():
    """Models fitted by Keras without shuffling, so Swift's fit on the same data, batches and
    start weights must end at the same weights."""
    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    cases = [
        (fit_convnet, keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
         rng.normal(size=(10, 6, 6, 2)).astype("float32"), (np.arange(10) % 3).astype("int32"),
         {"class_weight": {0: 1.0, 1: 2.0, 2: 0.5}}),
        (fit_rnn, keras.optimizers.RMSprop(0.01, momentum=0.5), "mse",
         rng.normal(size=(10, 5, 3)).astype("float32"), rng.normal(size=(10, 2)).astype("float32"),
         {"sample_weight": rng.uniform(0.5, 1.5, size=(10,)).astype("float32")}),
    ]
    for build, optimizer, loss, x, y, extra in cases:
        name = build.__name__
        model = build()
        model.save(OUT / f"{name}.keras")
        np.save(OUT / f"{name}.x.npy", x)
        np.save(OUT / f"{name}.y.npy", y)
        if "sample_weight" in extra:
            np.save(OUT / f"{name}.sw.npy", extra["sample_weight"])
        model.compile(optimizer=optimizer, loss=loss)
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, **extra)
        model.save_weights(OUT / f"{name}.after.weights.h5")
        (OUT / f"{name}.losses.json").write_text(json.dumps(history.history["loss"]))


if __name__ == "__main__":
    if sys.argv[1:] == ["training"]:
        optimizer_steps()
        fit_fixtures()
    else:
        main()
        optimizer_steps()
        fit_fixtures()
