"""Classify scikit-learn's 8x8 digits with a small convnet on the Swift backend.

    KERAS_BACKEND=swift python Examples/python/digits_convnet.py
"""

import os
import time

os.environ.setdefault("KERAS_BACKEND", "swift")

import keras  # noqa: E402
from keras import layers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]  # (1797, 8, 8, 1)
y = keras.utils.to_categorical(digits.target, 10)
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.25, random_state=42, stratify=digits.target
)

keras.utils.set_random_seed(42)
model = keras.Sequential(
    [
        keras.Input(shape=(8, 8, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ]
)
model.compile(
    optimizer="adam",
    loss="categorical_crossentropy",
    metrics=["accuracy"],
)

start = time.perf_counter()
model.fit(
    x_train, y_train, epochs=20, batch_size=32, validation_split=0.1, verbose=2
)
print(f"training time: {time.perf_counter() - start:.1f}s "
      f"(backend: {keras.backend.backend()})")

loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"test accuracy: {accuracy:.4f}")
