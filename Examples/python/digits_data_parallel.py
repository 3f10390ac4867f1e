"""The digits convnet trained data-parallel across MPI processes (keras.distribution).

    mpirun -np 2 python Examples/python/digits_data_parallel.py

Each process trains on its share of every batch of 64; the gradients are averaged over
the processes, so the model is the one a single process would train on batches of 64.
Only rank 0 prints the progress bar and writes the checkpoint. Run alone (plain
``python``, mpi4py still installed) it trains in one process.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "swift")

import keras  # noqa: E402
from keras import layers  # noqa: E402
from keras.src.backend import distribution_lib  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

keras.distribution.initialize()
keras.distribution.set_distribution(keras.distribution.DataParallel())
processes = keras.distribution.distribution().num_processes
rank = distribution_lib.process_id()

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = keras.utils.to_categorical(digits.target, 10)
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.25, random_state=42, stratify=digits.target
)

model = keras.Sequential(
    [
        keras.Input(shape=(8, 8, 1)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ]
)
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(
    x_train, y_train, epochs=10, batch_size=64, verbose=2,
    callbacks=[keras.callbacks.BackupAndRestore("/tmp/digits_data_parallel_backup")],
)
loss, accuracy = model.evaluate(x_test, y_test, batch_size=64, verbose=0)
if rank == 0:
    print(f"{processes} processes, test accuracy: {accuracy:.4f}")
