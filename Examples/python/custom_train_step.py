"""Customize what happens in ``fit()`` on the Swift backend.

Keras's guide "Customizing what happens in fit()" (TensorFlow version), with
``tf.GradientTape`` replaced by ``keras_swift.GradientTape``: the model
overrides ``train_step`` and ``test_step``, keeps its own metrics, and adds
a gradient penalty (the squared norm of the loss's gradient with respect to
the inputs, "double backpropagation"), which takes the gradient of a
gradient through nested tapes. Data: scikit-learn's 8x8 digits.

    KERAS_BACKEND=swift python Examples/python/custom_train_step.py
"""

import os
import time

os.environ.setdefault("KERAS_BACKEND", "swift")

import keras  # noqa: E402
from keras import layers  # noqa: E402
from keras import ops  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_swift  # noqa: E402


@keras.saving.register_keras_serializable(package="examples")
class PenalizedModel(keras.Model):
    def __init__(self, *args, penalty=0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.penalty = penalty
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        # Listed here, the trackers are reset at the start of each epoch.
        return [self.loss_tracker, self.penalty_tracker, self.accuracy]

    def train_step(self, data):
        x, y = data
        x = ops.convert_to_tensor(x)
        with keras_swift.GradientTape() as tape:
            with keras_swift.GradientTape() as input_tape:
                input_tape.watch(x)
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            # Recorded onto the outer tape: the penalty is differentiable.
            input_grad = input_tape.gradient(loss, x)
            penalty = ops.sum(ops.square(input_grad)) * ops.cast(ops.shape(x)[0], "float32")
            total = loss + self.penalty * penalty
        grads = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.penalty_tracker.update_state(penalty)
        self.accuracy.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        self.loss_tracker.update_state(self.compute_loss(y=y, y_pred=y_pred))
        self.accuracy.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy.result()}

    def get_config(self):
        return {**super().get_config(), "penalty": self.penalty}


digits = load_digits()
x = (digits.data / 16.0).astype("float32")
x_train, x_test, y_train, y_test = train_test_split(
    x, digits.target, test_size=0.25, random_state=42, stratify=digits.target
)

keras.utils.set_random_seed(42)
inputs = keras.Input(shape=(64,))
h = layers.Dense(64, activation="tanh")(inputs)
outputs = layers.Dense(10, activation="softmax")(h)
model = PenalizedModel(inputs, outputs, penalty=0.1)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

start = time.perf_counter()
model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=2)
print(f"training time: {time.perf_counter() - start:.1f}s "
      f"(backend: {keras.backend.backend()})")

results = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
print(f"test accuracy: {results['accuracy']:.4f}")
