"""Models the export tests (test_export_onnx.py, test_export_saved_model.py) check in each
format, each with a function building its inputs for any batch size."""

import numpy as np

import keras
from keras import layers


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def mlp():
    model = keras.Sequential([
        keras.Input((12,)),
        layers.Dense(16, activation="relu"),
        layers.Dropout(0.3),
        layers.Dense(8, activation="gelu"),
        layers.Dense(4, activation="softmax"),
    ])
    return model, lambda n: [rand(n, 12)]


def convnet_with_batchnorm():
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        layers.Conv2D(6, 3, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.DepthwiseConv2D(3, strides=2, padding="same"),
        layers.MaxPooling2D(2),
        layers.ZeroPadding2D(1),
        layers.Conv2D(4, 3, groups=2, padding="valid", activation="sigmoid"),
        layers.AveragePooling2D(2, padding="same"),
        layers.Flatten(),
        layers.Dense(5),
    ])
    x = rand(16, 10, 10, 3, seed=1)
    # Moving statistics away from their initial values, so inference normalisation matters.
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, rand(16, 5, seed=2), epochs=1, batch_size=8, verbose=0)
    return model, lambda n: [x[:n]]


def recurrent(layer, go_backwards):
    model = keras.Sequential([
        keras.Input((5, 3)),
        layer(4, return_sequences=True, go_backwards=go_backwards),
        layer(3),
    ])
    return model, lambda n: [rand(n, 5, 3, seed=6)]


def two_inputs_two_outputs():
    a = keras.Input((6,), name="a")
    b = keras.Input((4,), name="b")
    h = layers.Concatenate()([layers.Dense(5, activation="gelu")(a), b])
    h = layers.LayerNormalization()(h)
    out1 = layers.Dense(3, name="out1")(h)
    out2 = layers.Dense(2, activation="sigmoid", name="out2")(layers.Reshape((3, 3))(h)[:, 0])
    model = keras.Model([a, b], [out1, out2])
    return model, lambda n: [rand(n, 6, seed=3), rand(n, 4, seed=4)]


def multi_head_attention(causal):
    q = keras.Input((5, 8))
    kv = keras.Input((6, 8))
    out = layers.MultiHeadAttention(num_heads=2, key_dim=4)(q, kv, use_causal_mask=causal)
    model = keras.Model([q, kv], layers.Flatten()(out))
    return model, lambda n: [rand(n, 5, 8, seed=7), rand(n, 6, 8, seed=8)]


def dynamic_dims():
    """A model whose image size and sequence length are left ``None``, and a function
    building its inputs for a batch size and each of two other (height, width, steps)."""
    image = keras.Input((None, None, 3), name="image")
    text = keras.Input((None, 4), name="text")
    h = layers.Conv2D(5, 3, strides=2, padding="same", activation="relu")(image)
    h = layers.GlobalAveragePooling2D()(layers.MaxPooling2D(2, padding="same")(h))
    t = layers.GlobalMaxPooling1D()(layers.Dense(3)(text))
    model = keras.Model([image, text], layers.Dense(2)(layers.Concatenate()([h, t])))

    def inputs(n):
        for hh, ww, steps in [(9, 6, 2), (16, 17, 5)]:
            yield [rand(n, hh, ww, 3, seed=hh), rand(n, steps, 4, seed=ww)]

    return model, inputs
