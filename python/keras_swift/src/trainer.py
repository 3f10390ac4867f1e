"""The Trainer: tape-based ``train_step`` plus eager fit/evaluate/predict.

A training step pushes a fresh tape, runs the forward pass and the loss
(reading each trainable Variable's value registers its leaf tensor), asks the
engine for the gradient of the loss with respect to those leaves, pops the
tape and hands the gradients to the optimizer. Leaves are keyed by Variable,
not by storage, because an assignment swaps in a new tensor. Evaluation and
prediction never push a tape, so nothing is recorded.
"""

import warnings

import numpy as np

from keras.src import callbacks as callbacks_module
from keras.src import optimizers as optimizers_module
from keras.src import tree
from keras.src.backend import config
from keras.src.trainers import trainer as base_trainer
from keras.src.trainers.data_adapters import array_slicing
from keras.src.trainers.data_adapters import data_adapter_utils
from keras.src.random.seed_generator import global_seed_generator
from keras.src.trainers.epoch_iterator import EpochIterator as _EpochIterator
from keras.src.utils import traceback_utils
from keras.src.utils.python_utils import pythonify_logs
from keras_swift.src import distributed
from keras_swift.src.compiled import CompiledStep
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.engine import _C
from keras_swift.src.sparse import collect_row_reads
from keras_swift.src.sparse import from_foreign
from keras_swift.src.sparse import gradient_with_row_reads

_BaseTrainer = getattr(base_trainer, "BaseTrainer", None) or base_trainer.Trainer


def _batch_size(x):
    return next(i for i in tree.flatten(x) if i is not None).shape[0]


class EpochIterator(_EpochIterator):
    """Keras's numpy batches, with sparse batches made SparseTensors.

    The numpy iterator passes scipy / jax / TensorFlow sparse matrices
    through unchanged (they have no ``__array__``); the jax backend's
    iterator converts them to BCOO the same way. Under multi-process DataParallel each
    process keeps its share of every global batch (``distributed``).
    """

    def __init__(self, *args, **kwargs):
        run = distributed.current()
        self._shard = None
        if run is not None:
            x = kwargs["x"] if "x" in kwargs else args[0]
            self._shard = run.sharder(x, kwargs.get("batch_size"))
        if self._shard is None:
            super().__init__(*args, **kwargs)
            return
        # Keras's adapters ask for a tf.data.Dataset under a multi-process distribution
        # that shards; the shares are taken here from the global batches instead.
        run.distribution.auto_shard_dataset = False
        try:
            super().__init__(*args, **kwargs)
        finally:
            run.distribution.auto_shard_dataset = True

    def _get_iterator(self):
        for batch in super()._get_iterator():
            if self._shard is not None:
                batch = self._shard(batch)
            yield tree.map_structure(from_foreign, batch, none_is_leaf=False)


class Trainer(_BaseTrainer):
    def __init__(self):
        super().__init__()
        self.train_function = None
        self.test_function = None
        self.predict_function = None

    # -- single steps --------------------------------------------------------
    def train_step(self, data):
        x, y, sample_weight, y_pred, loss, grads, trainable_weights = (
            self._loss_and_gradients(data)
        )
        self._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
        if trainable_weights:
            self.optimizer.apply(grads, trainable_weights)
        else:
            warnings.warn("The model does not have any trainable weights.")
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _loss_and_gradients(self, data):
        """The forward pass, the loss and its gradients: the part of ``train_step`` before
        the optimizer (multi-process training averages the gradients in between)."""
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        trainable_weights = list(self.trainable_weights)
        leaves = [v._value for v in trainable_weights]

        _C.tape_push()
        try:
            with collect_row_reads() as reads:
                if self._call_has_training_arg:
                    y_pred = self(x, training=True)
                else:
                    y_pred = self(x)
                loss = self._compute_loss(
                    x=x,
                    y=y,
                    y_pred=y_pred,
                    sample_weight=sample_weight,
                    training=True,
                )
            scaled_loss = loss
            if self.optimizer is not None:
                scaled_loss = self.optimizer.scale_loss(loss)
            grads = None
            if trainable_weights:
                grads = gradient_with_row_reads(scaled_loss, leaves, reads)
        finally:
            _C.tape_pop()
        return x, y, sample_weight, y_pred, loss, grads, trainable_weights

    def test_step(self, data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        if self._call_has_training_arg:
            y_pred = self(x, training=False)
        else:
            y_pred = self(x)
        loss = self._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
        )
        self._loss_tracker.update_state(loss, sample_weight=_batch_size(x))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def predict_step(self, data):
        x, _, _ = data_adapter_utils.unpack_x_y_sample_weight(data)
        if self._call_has_training_arg:
            return self(x, training=False)
        return self(x)

    # -- step functions (a list of batches per call: steps_per_execution) ---
    def _compiled_step(self, step, name, metrics=True, optimizer=False):
        """``step`` compiled when jit_compile is on, over the state it may read or assign:
        the model's variables, the metrics' and the optimizer's where it uses them, and the
        global seed state (random ops called without a seed draw from it)."""
        if not self.jit_compile:
            return step

        def state():
            variables = self.trainable_variables + self.non_trainable_variables
            if metrics:
                variables += self.metrics_variables
            if optimizer and self.optimizer is not None:
                variables += self.optimizer.variables
            return variables + [global_seed_generator().state]

        return CompiledStep(step, state, name)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        run = distributed.current()
        if run is not None:
            self.train_function = run.make_train_function(self, Trainer.train_step)
            return self.train_function
        train_step = self._compiled_step(self.train_step, "train_step", optimizer=True)

        def train_function(data):
            logs = {}
            for batch in data:
                logs = train_step(batch)
            return logs

        train_function.compiled = train_step if self.jit_compile else None
        self.train_function = train_function
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        test_step = self._compiled_step(self.test_step, "test_step")

        def test_function(data):
            logs = {}
            for batch in data:
                logs = test_step(batch)
            return logs

        run = distributed.current()
        if run is not None:
            test_function = run.make_test_function(self, test_step)
        test_function.compiled = test_step if self.jit_compile else None
        self.test_function = test_function
        return self.test_function

    def make_predict_function(self, force=False):
        if self.predict_function is not None and not force:
            return self.predict_function
        predict_step = self._compiled_step(self.predict_step, "predict_step", metrics=False)

        def predict_function(data):
            outputs = [predict_step(batch) for batch in data]
            if len(outputs) == 1:
                return outputs[0]
            outputs = [tree.map_structure(convert_to_numpy, o) for o in outputs]
            return tree.map_structure(
                lambda *parts: np.concatenate(parts), *outputs
            )

        predict_function.compiled = predict_step if self.jit_compile else None
        self.predict_function = predict_function
        return self.predict_function

    # -- loops ---------------------------------------------------------------
    @traceback_utils.filter_traceback
    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        self._assert_compile_called("fit")
        max_epochs = config.max_epochs()
        if max_epochs and max_epochs < epochs:
            warnings.warn("Limiting epochs to %d" % max_epochs)
            epochs = max_epochs

        self._eval_epoch_iterator = None
        if validation_split and validation_data is None:
            # Create the validation data using the training data.
            (x, y, sample_weight), validation_data = (
                array_slicing.train_validation_split(
                    (x, y, sample_weight), validation_split=validation_split
                )
            )
        if validation_data is not None:
            val_x, val_y, val_sample_weight = (
                data_adapter_utils.unpack_x_y_sample_weight(validation_data)
            )

        epoch_iterator = EpochIterator(
            x=x,
            y=y,
            sample_weight=sample_weight,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            shuffle=shuffle,
            class_weight=class_weight,
            steps_per_execution=self.steps_per_execution,
        )
        self._symbolic_build(iterator=epoch_iterator)
        epoch_iterator.reset()

        run = distributed.current()
        if run is not None:
            callbacks, verbose = run.callbacks_for_rank(callbacks, verbose)
        if not isinstance(callbacks, callbacks_module.CallbackList):
            callbacks = callbacks_module.CallbackList(
                callbacks,
                add_history=True,
                add_progbar=verbose != 0,
                verbose=verbose,
                epochs=epochs,
                steps=epoch_iterator.num_batches,
                model=self,
            )

        self.stop_training = False
        training_logs = {}
        self.make_train_function()
        callbacks.on_train_begin()
        if run is not None:
            # After BackupAndRestore has restored rank 0's state (only rank 0 runs it).
            run.broadcast_variables(self._state_to_broadcast())
            self._initial_epoch = run.broadcast(self._initial_epoch, "initial epoch")
        initial_epoch = self._initial_epoch or initial_epoch
        logs = {}
        for epoch in range(initial_epoch, epochs):
            self.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            logs = {}
            for begin_step, end_step, data in epoch_iterator:
                callbacks.on_train_batch_begin(begin_step)
                logs = self.train_function(data)
                callbacks.on_train_batch_end(end_step, logs)
                if self.stop_training:
                    break

            epoch_logs = dict(self._get_metrics_result_or_logs(logs))

            if validation_data is not None and self._should_eval(
                epoch, validation_freq
            ):
                if getattr(self, "_eval_epoch_iterator", None) is None:
                    self._eval_epoch_iterator = EpochIterator(
                        x=val_x,
                        y=val_y,
                        sample_weight=val_sample_weight,
                        batch_size=validation_batch_size or batch_size,
                        steps_per_execution=self.steps_per_execution,
                        steps_per_epoch=validation_steps,
                        shuffle=False,
                    )
                val_logs = self.evaluate(
                    x=val_x,
                    y=val_y,
                    sample_weight=val_sample_weight,
                    batch_size=validation_batch_size or batch_size,
                    steps=validation_steps,
                    callbacks=callbacks,
                    return_dict=True,
                    _use_cached_eval_dataset=True,
                )
                epoch_logs.update(
                    {f"val_{name}": val for name, val in val_logs.items()}
                )

            callbacks.on_epoch_end(epoch, epoch_logs)
            training_logs = epoch_logs
            if run is not None:
                self.stop_training = run.broadcast(self.stop_training, "stop_training")
            if self.stop_training:
                break

        if (
            isinstance(self.optimizer, optimizers_module.Optimizer)
            and epochs > 0
        ):
            self.optimizer.finalize_variable_values(self.trainable_weights)

        if getattr(self, "_eval_epoch_iterator", None) is not None:
            del self._eval_epoch_iterator
        callbacks.on_train_end(logs=training_logs)
        return self.history

    @traceback_utils.filter_traceback
    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        use_cached_eval_dataset = kwargs.pop("_use_cached_eval_dataset", False)
        if kwargs:
            raise ValueError(f"Arguments not recognized: {kwargs}")

        if use_cached_eval_dataset:
            epoch_iterator = self._eval_epoch_iterator
        else:
            epoch_iterator = EpochIterator(
                x=x,
                y=y,
                sample_weight=sample_weight,
                batch_size=batch_size,
                steps_per_epoch=steps,
                shuffle=False,
                steps_per_execution=self.steps_per_execution,
            )

        self._symbolic_build(iterator=epoch_iterator)
        epoch_iterator.reset()

        run = distributed.current()
        if run is not None:
            callbacks, verbose = run.callbacks_for_rank(callbacks, verbose)
            if not use_cached_eval_dataset:
                run.broadcast_variables(self._state_to_broadcast())
        if not isinstance(callbacks, callbacks_module.CallbackList):
            callbacks = callbacks_module.CallbackList(
                callbacks,
                add_progbar=verbose != 0,
                verbose=verbose,
                epochs=1,
                steps=epoch_iterator.num_batches,
                model=self,
            )

        self.make_test_function()
        self.stop_evaluating = False
        callbacks.on_test_begin()
        logs = {}
        self.reset_metrics()
        for begin_step, end_step, data in epoch_iterator:
            callbacks.on_test_batch_begin(begin_step)
            logs = self.test_function(data)
            callbacks.on_test_batch_end(end_step, logs)
            if self.stop_evaluating:
                break
        logs = pythonify_logs(self._get_metrics_result_or_logs(logs))
        callbacks.on_test_end(logs)

        if return_dict:
            return logs
        return self._flatten_metrics_in_order(logs)

    @traceback_utils.filter_traceback
    def predict(
        self, x, batch_size=None, verbose="auto", steps=None, callbacks=None
    ):
        epoch_iterator = EpochIterator(
            x=x,
            batch_size=batch_size,
            steps_per_epoch=steps,
            shuffle=False,
            steps_per_execution=self.steps_per_execution,
        )

        run = distributed.current()
        if run is not None:
            callbacks, verbose = run.callbacks_for_rank(callbacks, verbose)
            run.broadcast_variables(self._state_to_broadcast())
        if not isinstance(callbacks, callbacks_module.CallbackList):
            callbacks = callbacks_module.CallbackList(
                callbacks,
                add_progbar=verbose != 0,
                verbose=verbose,
                epochs=1,
                steps=epoch_iterator.num_batches,
                model=self,
            )

        self.make_predict_function()
        self.stop_predicting = False
        callbacks.on_predict_begin()
        outputs = None
        batch_outputs = None
        for begin_step, end_step, data in epoch_iterator:
            callbacks.on_predict_batch_begin(begin_step)
            batch_outputs = self.predict_function(data)
            batch_outputs = tree.map_structure(convert_to_numpy, batch_outputs)
            if run is not None:
                batch_outputs = run.gather_batch(batch_outputs)
            if outputs is None:
                outputs = tree.map_structure(lambda o: [o], batch_outputs)
            else:
                tree.map_structure_up_to(
                    batch_outputs,
                    lambda output, o: output.append(o),
                    outputs,
                    batch_outputs,
                )
            callbacks.on_predict_batch_end(end_step, {"outputs": batch_outputs})
            if self.stop_predicting:
                break
        callbacks.on_predict_end()
        if outputs is None:
            raise ValueError(
                "Unexpected result of `predict`: no batches were processed. "
                "Received empty input."
            )
        return tree.map_structure_up_to(batch_outputs, np.concatenate, outputs)

    def _state_to_broadcast(self):
        state = list(self.variables)
        if self.optimizer is not None:
            state += list(self.optimizer.variables)
        return state

    def train_on_batch(
        self,
        x,
        y=None,
        sample_weight=None,
        class_weight=None,
        return_dict=False,
    ):
        self._assert_compile_called("train_on_batch")
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError(
                    "Arguments `sample_weight` and `class_weight` "
                    "cannot be specified at the same time. "
                    f"Received: sample_weight={sample_weight}, "
                    f"class_weight={class_weight}"
                )
            sample_weight = data_adapter_utils.class_weight_to_sample_weights(
                y, class_weight
            )

        data = (x, y, sample_weight)
        self._symbolic_build(data_batch=data)
        self.make_train_function()
        self.reset_metrics()
        logs = self.train_function([data])
        logs = pythonify_logs(logs)
        if return_dict:
            return logs
        return self._flatten_metrics_in_order(logs)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._assert_compile_called("test_on_batch")
        data = (x, y, sample_weight)
        self._symbolic_build(data_batch=data)
        self.make_test_function()
        self.reset_metrics()
        logs = self.test_function([data])
        logs = pythonify_logs(logs)
        if return_dict:
            return logs
        return self._flatten_metrics_in_order(logs)

    def predict_on_batch(self, x):
        self.make_predict_function()
        batch_outputs = self.predict_function([(x,)])
        return tree.map_structure(convert_to_numpy, batch_outputs)
