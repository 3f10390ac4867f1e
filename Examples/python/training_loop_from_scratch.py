"""A training loop written from scratch on the Swift backend, JAX style.

Keras's guide "Writing a training loop from scratch in JAX", with
``jax.value_and_grad`` replaced by ``keras_swift.value_and_grad`` (and no
``jax.jit``): the model runs through ``stateless_call``, the optimizer
through ``stateless_apply`` and the metrics through
``stateless_update_state``, so all state travels explicitly through the
loop. Data: scikit-learn's 8x8 digits.

    KERAS_BACKEND=swift python Examples/python/training_loop_from_scratch.py
"""

import os
import time

os.environ.setdefault("KERAS_BACKEND", "swift")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_swift  # noqa: E402

digits = load_digits()
x = (digits.data / 16.0).astype("float32")
y = keras.utils.to_categorical(digits.target, 10)
x_train, x_val, y_train, y_val = train_test_split(
    x, y, test_size=0.25, random_state=42, stratify=digits.target
)

keras.utils.set_random_seed(42)
inputs = keras.Input(shape=(64,), name="digits")
h = keras.layers.Dense(64, activation="relu")(inputs)
h = keras.layers.Dense(64, activation="relu")(h)
outputs = keras.layers.Dense(10, name="predictions")(h)
model = keras.Model(inputs=inputs, outputs=outputs)

loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
optimizer = keras.optimizers.Adam(learning_rate=1e-3)
train_acc_metric = keras.metrics.CategoricalAccuracy()
val_acc_metric = keras.metrics.CategoricalAccuracy()


def compute_loss_and_updates(
    trainable_variables, non_trainable_variables, metric_variables, x, y
):
    y_pred, non_trainable_variables = model.stateless_call(
        trainable_variables, non_trainable_variables, x
    )
    loss = loss_fn(y, y_pred)
    metric_variables = train_acc_metric.stateless_update_state(
        metric_variables, y, y_pred
    )
    return loss, (non_trainable_variables, metric_variables)


grad_fn = keras_swift.value_and_grad(compute_loss_and_updates, has_aux=True)


def train_step(state, data):
    (
        trainable_variables,
        non_trainable_variables,
        optimizer_variables,
        metric_variables,
    ) = state
    x, y = data
    (loss, (non_trainable_variables, metric_variables)), grads = grad_fn(
        trainable_variables, non_trainable_variables, metric_variables, x, y
    )
    trainable_variables, optimizer_variables = optimizer.stateless_apply(
        optimizer_variables, grads, trainable_variables
    )
    return loss, (
        trainable_variables,
        non_trainable_variables,
        optimizer_variables,
        metric_variables,
    )


def eval_step(state, data):
    trainable_variables, non_trainable_variables, metric_variables = state
    x, y = data
    y_pred, non_trainable_variables = model.stateless_call(
        trainable_variables, non_trainable_variables, x
    )
    loss = loss_fn(y, y_pred)
    metric_variables = val_acc_metric.stateless_update_state(
        metric_variables, y, y_pred
    )
    return loss, (trainable_variables, non_trainable_variables, metric_variables)


def batches(x, y, batch_size, rng=None):
    order = np.arange(len(x)) if rng is None else rng.permutation(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        yield x[idx], y[idx]


optimizer.build(model.trainable_variables)
state = (
    model.trainable_variables,
    model.non_trainable_variables,
    optimizer.variables,
    train_acc_metric.variables,
)

rng = np.random.default_rng(0)
start = time.perf_counter()
for epoch in range(20):
    # A fresh accuracy each epoch: reset the metric, restart from its state.
    train_acc_metric.reset_state()
    state = state[:3] + (train_acc_metric.variables,)
    for data in batches(x_train, y_train, 32, rng):
        loss, state = train_step(state, data)
    if epoch % 5 == 4:
        for variable, value in zip(train_acc_metric.variables, state[3]):
            variable.assign(value)
        print(
            f"epoch {epoch + 1}: loss {float(loss):.4f}, "
            f"training accuracy {float(train_acc_metric.result()):.4f}"
        )
print(f"training time: {time.perf_counter() - start:.1f}s "
      f"(backend: {keras.backend.backend()})")

trainable_variables, non_trainable_variables, optimizer_variables, _ = state
eval_state = (trainable_variables, non_trainable_variables, val_acc_metric.variables)
for data in batches(x_val, y_val, 128):
    _, eval_state = eval_step(eval_state, data)
for variable, value in zip(val_acc_metric.variables, eval_state[2]):
    variable.assign(value)
print(f"validation accuracy: {float(val_acc_metric.result()):.4f}")

# Write the trained state back into the model's Variables.
for variable, value in zip(model.trainable_variables, trainable_variables):
    variable.assign(value)
for variable, value in zip(model.non_trainable_variables, non_trainable_variables):
    variable.assign(value)
