"""Data-parallel training across MPI processes (``keras.distribution.DataParallel``).

Active when the current distribution spans several processes
(``keras.distribution.initialize()`` under ``mpirun``). Each process is one replica:

- Batches: every process walks the same global batches (same order: the seed is common)
  and keeps its contiguous share of rows, rows ``[B*r/n, B*(r+1)/n)`` of a batch of B on
  rank r of n, as Keras's ``distribute_dataset`` shards a batched dataset (a
  ``tf.data.Dataset`` is sharded by Keras itself; ``auto_shard_dataset=False`` means the
  data is already per process).
- A train step is cut in two where the gradients exist. The first part runs the forward
  pass and the loss, takes the gradients, updates the metrics and packs the gradients
  into one flat tensor per dtype, scaled by the local batch size, with that size
  appended. An MPI allreduce sums those buffers (mpi4py reads the engine tensor's
  buffer in place and writes into a reused numpy buffer). The second part divides by
  the summed size, so the gradient is the mean over the global batch as one process
  would take it, whatever the shares, and applies the optimizer. With ``jit_compile``
  both parts are compiled steps (one graph replay each); the single-process step is
  not touched.
- Variables are broadcast from rank 0 when ``fit``, ``evaluate`` or ``predict`` starts
  (after ``BackupAndRestore`` has restored them there). Metric states are kept global:
  after each step function the change of every metric variable is summed over the
  processes, which is exact for states that accumulate (totals, counts, confusion
  matrices: Keras's built-in metrics). ``predict`` gathers every batch's outputs in
  global order, so every process returns the whole result.
- Only rank 0 shows the progress bar and runs the callbacks that write files
  (``ModelCheckpoint``, ``BackupAndRestore``, ``CSVLogger``, ``TensorBoard``).
- Every collective runs under a watchdog: one that has not completed within
  ``KERAS_SWIFT_MPI_TIMEOUT`` seconds (default 300) prints which one and calls
  ``MPI_Abort``, which ends every process of the job; a process that dies makes
  ``mpirun`` end the others.

Layers whose training forward pass depends on the whole batch (BatchNormalization's
batch statistics) see the local share only, as with Horovod without SyncBatchNorm; the
moving statistics they update are averaged over the processes after each step function.
"""

import os
import sys
import threading
import time

import numpy as np

from keras.src import callbacks as callbacks_module
from keras.src import ops
from keras.src import tree
from keras.src.backend.common import global_state
from keras_swift.src import distribution_lib
from keras_swift.src.core import convert_to_numpy
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.sparse import IndexedSlices

DEFAULT_TIMEOUT_S = 300.0
# Callbacks that write files: only rank 0 runs them.
_WRITERS = (
    callbacks_module.ModelCheckpoint,
    callbacks_module.BackupAndRestore,
    callbacks_module.CSVLogger,
    callbacks_module.TensorBoard,
)


def current():
    """The ``DataParallelRun`` of the current distribution, or None when training runs
    in this process alone."""
    distribution = global_state.get_global_attribute("distribution")
    if distribution is None:
        return None
    refused = getattr(distribution, "_swift_refused", None)
    if refused is not None:
        raise NotImplementedError(refused)
    if not getattr(distribution, "_is_multi_process", False):
        return None
    run = getattr(distribution, "_swift_run", None)
    if run is None:
        run = DataParallelRun(distribution)
        distribution._swift_run = run
    return run


class DataParallelRun:
    def __init__(self, distribution):
        comm = distribution_lib.comm()
        if comm is None or comm.Get_size() != distribution.num_processes:
            raise RuntimeError(
                f"The distribution spans {distribution.num_processes} processes but MPI "
                "is not initialized: call keras.distribution.initialize() first."
            )
        if distribution.num_model_replicas != distribution.num_processes:
            raise NotImplementedError(
                f"keras_swift: a distribution with {distribution.num_model_replicas} "
                f"model replicas over {distribution.num_processes} processes: the swift "
                "backend runs one replica per process (a DataParallel mesh over every "
                "process, list_devices())."
            )
        self.distribution = distribution
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.collectives = Collectives(comm)
        self._recv = {}

    # -- batches --------------------------------------------------------------
    def sharder(self, x, batch_size):
        """A function from a global batch to this process's rows, or None when the data
        is per process already (a tf.data.Dataset Keras shards, or auto_shard off)."""
        if not self.distribution.auto_shard_dataset or _is_tf_dataset(x):
            return None
        if batch_size is not None and batch_size % self.size != 0:
            raise ValueError(
                "Global batch size must be divisible by the number of processes. "
                f"`global_batch_size`={batch_size} and `num_processes`={self.size}"
            )
        rank, size = self.rank, self.size

        def shard(batch):
            def rows(a):
                if a is None or not hasattr(a, "shape") or not a.shape:
                    return a
                n = a.shape[0]
                return a[n * rank // size : n * (rank + 1) // size]

            return tree.map_structure(rows, batch, none_is_leaf=False)

        return shard

    # -- training -------------------------------------------------------------
    def make_train_function(self, model, builtin_train_step):
        if type(model).train_step is not builtin_train_step:
            raise NotImplementedError(
                f"keras_swift: {type(model).__name__} overrides train_step; multi-process "
                "DataParallel cuts the built-in train_step at its gradients to average "
                "them, and cannot do so inside a custom one."
            )
        split = _SplitStep(model)
        grad_step = model._compiled_step(
            split.gradients, "train_step (gradients)", optimizer=True
        )
        apply_step = model._compiled_step(split.apply, "train_step (apply)", optimizer=True)

        def train_function(data):
            before = self._metric_state(model)
            # Non-trainable state the step updates from its rows (BatchNormalization's
            # moving statistics) is averaged, so every rank holds the same model. Which
            # variables: those the first step assigned (an assignment swaps the stored
            # tensor), so frozen weights are never read or sent.
            tracked = split.averaged
            if tracked is None:
                tracked = [
                    v for v in model.non_trainable_variables if np.dtype(v.dtype).kind == "f"
                ]
            held = [v._value for v in tracked]
            logs = None
            for batch in data:
                if _rows(batch):
                    packed, logs = grad_step(batch)
                else:
                    # No rows here (a last batch smaller than the number of
                    # processes): this process adds nothing to the sums.
                    packed = split.zero_buffers()
                apply_step(self.allreduce_sum(packed, "gradient allreduce"))
            if split.averaged is None:
                split.averaged = [v for v, h in zip(tracked, held) if v._value is not h]
                held = [h for v, h in zip(tracked, held) if v._value is not h]
            return self._reduce_metrics(model, before, logs, split.averaged, held)

        train_function.compiled = grad_step if model.jit_compile else None
        return train_function

    def allreduce_sum(self, tensors, what):
        """Sum of each tensor over the processes, into numpy buffers reused from step
        to step (they are copied into the engine when a step takes them)."""
        from mpi4py import MPI

        out = []
        for t in tensors:
            dtype = np.dtype(t.dtype)
            key = (dtype.str, tuple(t.shape))
            recv = self._recv.get(key)
            if recv is None:
                recv = self._recv[key] = np.empty(t.shape, dtype)
            with self.collectives.guard(what):
                self.comm.Allreduce(t, recv, op=MPI.SUM)
            out.append(recv)
        return out

    # -- metrics ----------------------------------------------------------------
    def _metric_state(self, model):
        return [np.array(convert_to_numpy(v.value), copy=True) for v in model.metrics_variables]

    def _reduce_metrics(self, model, before, logs, averaged=(), held=()):
        """Make every metric variable ``before`` plus the sum over processes of its
        change during this step function (the logs are then the global results), and
        each variable of ``averaged`` its value ``held`` before the step function plus
        the mean of its change over processes. One allreduce."""
        from mpi4py import MPI

        variables = model.metrics_variables
        parts = [
            (np.asarray(convert_to_numpy(v.value), np.float64) - b).ravel()
            for v, b in zip(variables, before)
        ]
        start = [np.asarray(convert_to_numpy(h), np.float64) for h in held]
        parts += [
            (np.asarray(convert_to_numpy(v.value), np.float64) - h).ravel() / self.size
            for v, h in zip(averaged, start)
        ]
        if parts:
            total = np.concatenate(parts)
            with self.collectives.guard("metrics allreduce"):
                self.comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
            offset = 0
            for v, b in zip(variables, before):
                v.assign((b + total[offset : offset + b.size].reshape(b.shape)).astype(b.dtype))
                offset += b.size
            for v, h in zip(averaged, start):
                v.assign((h + total[offset : offset + h.size].reshape(h.shape)).astype(v.dtype))
                offset += h.size
        metric_logs = model.get_metrics_result()
        if logs is None or (isinstance(logs, dict) and set(logs) == set(metric_logs)):
            return metric_logs
        return logs

    def make_test_function(self, model, test_step):
        def test_function(data):
            before = self._metric_state(model)
            logs = None
            for batch in data:
                if _rows(batch):
                    logs = test_step(batch)
            return self._reduce_metrics(model, before, logs)

        return test_function

    # -- predict, state, callbacks ---------------------------------------------------
    def gather_batch(self, outputs):
        """The global batch's outputs from every process's share, in rank order."""
        with self.collectives.guard("predict allgather"):
            parts = self.comm.allgather(outputs)
        parts = [p for p in parts if p is not None]
        return tree.map_structure_up_to(
            parts[0], lambda *xs: np.concatenate(xs), *parts
        )

    def broadcast_variables(self, variables):
        for v in variables:
            value = np.array(convert_to_numpy(v.value), copy=True, order="C")
            if value.dtype.kind not in "biufc":
                continue
            with self.collectives.guard(f"broadcast of {v.path}"):
                self.comm.Bcast(value, root=0)
            if self.rank != 0:
                v.assign(value)

    def broadcast(self, value, what):
        with self.collectives.guard(what):
            return self.comm.bcast(value, root=0)

    def callbacks_for_rank(self, callbacks, verbose):
        """Rank 0 keeps everything; the others drop the progress bar and the callbacks
        that write files."""
        if self.rank == 0 or isinstance(callbacks, callbacks_module.CallbackList):
            return callbacks, verbose
        kept = [c for c in (callbacks or []) if not isinstance(c, _WRITERS)]
        return kept, 0


class _SplitStep:
    """One model's train step cut at its gradients: ``gradients(batch)`` gives the packed
    gradients and the logs, ``apply(summed)`` the optimizer update. The packing is fixed
    by the first call (a traced or eager run: replays do not run this code)."""

    def __init__(self, model):
        self.model = model
        self.layout = None
        # The non-trainable variables the step assigns (set by the first step function).
        self.averaged = None

    def gradients(self, data):
        model = self.model
        x, y, sample_weight, y_pred, loss, grads, trainable = model._loss_and_gradients(
            data
        )
        n = _rows(data)
        model._loss_tracker.update_state(loss, sample_weight=n)
        logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        layout = _GradientLayout(trainable, tuple(g is not None for g in grads))
        if self.layout is None:
            self.layout = layout
        elif self.layout.key != layout.key:
            raise NotImplementedError(
                "keras_swift: the trainable variables, or which of them get a gradient, "
                "changed between batches under multi-process DataParallel."
            )
        return layout.pack(grads, n), logs

    def apply(self, sums):
        grads = self.layout.unpack(sums)
        self.model.optimizer.apply(grads, list(self.model.trainable_weights))
        return ()

    def zero_buffers(self):
        if self.layout is None:
            raise ValueError(
                "The first batch of this process has no rows: give every process at "
                "least one row of each batch (batch size >= number of processes)."
            )
        return [np.zeros(size + 1, dtype) for dtype, size in self.layout.buffers]


class _GradientLayout:
    """How a step's gradients travel: one flat buffer per dtype, in variable order,
    each gradient times the local batch size, then the local batch size."""

    def __init__(self, variables, present):
        self.shapes = [tuple(v.shape) for v in variables]
        self.dtypes = [v.dtype for v in variables]
        self.present = present
        self.key = (tuple(self.shapes), tuple(self.dtypes), present)
        order = {}
        for i, (dtype, ok) in enumerate(zip(self.dtypes, present)):
            if ok:
                order.setdefault(dtype, []).append(i)
        self.groups = list(order.items())
        self.buffers = [
            (np.dtype(dtype), sum(int(np.prod(self.shapes[i])) for i in idx))
            for dtype, idx in self.groups
        ]

    def pack(self, grads, n):
        out = []
        for dtype, idx in self.groups:
            flats = []
            for i in idx:
                g = grads[i]
                if isinstance(g, IndexedSlices):
                    g = g.todense()
                flats.append(ops.reshape(ops.cast(g, dtype), (-1,)))
            body = ops.multiply(ops.concatenate(flats), ops.cast(n, dtype))
            out.append(ops.concatenate([body, ops.cast(ops.reshape(n, (1,)), dtype)]))
        return out

    def unpack(self, sums):
        grads = [None] * len(self.shapes)
        for (dtype, idx), total in zip(self.groups, sums):
            total = convert_to_tensor(total)
            size = int(total.shape[0]) - 1
            body = ops.divide(
                ops.slice(total, (0,), (size,)), ops.slice(total, (size,), (1,))
            )
            offset = 0
            for i in idx:
                count = int(np.prod(self.shapes[i]))
                grads[i] = ops.reshape(ops.slice(body, (offset,), (count,)), self.shapes[i])
                offset += count
        return grads


def _rows(batch):
    for leaf in tree.flatten(batch):
        if leaf is not None and getattr(leaf, "shape", None):
            return int(leaf.shape[0])
    return 0


def _is_tf_dataset(x):
    from keras.src.trainers import data_adapters

    return data_adapters.is_tf_dataset(x)


class Collectives:
    """A watchdog over blocking MPI calls: one that does not return within the timeout
    ends the job (``MPI_Abort``) instead of hanging every process. The calls release the
    GIL while they wait, so the watchdog thread runs."""

    def __init__(self, comm, timeout=None):
        if timeout is None:
            timeout = float(os.environ.get("KERAS_SWIFT_MPI_TIMEOUT", DEFAULT_TIMEOUT_S))
        self.comm = comm
        self.timeout = timeout
        self._active = None
        self._thread = None

    def guard(self, what):
        return _Guard(self, what)

    def _start(self):
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="keras_swift MPI watchdog", daemon=True
            )
            self._thread.start()

    def _watch(self):
        poll = min(1.0, max(0.05, self.timeout / 10))
        while True:
            time.sleep(poll)
            active = self._active
            if active is None or time.monotonic() < active[0]:
                continue
            rank = self.comm.Get_rank()
            sys.stderr.write(
                f"keras_swift: rank {rank}: the {active[1]} did not complete within "
                f"{self.timeout:g} s (KERAS_SWIFT_MPI_TIMEOUT): another process died, "
                "hangs or lags behind. Aborting every process of the job (MPI_Abort).\n"
            )
            sys.stderr.flush()
            self.comm.Abort(1)


class _Guard:
    __slots__ = ("owner", "what")

    def __init__(self, owner, what):
        self.owner = owner
        self.what = what

    def __enter__(self):
        self.owner._start()
        self.owner._active = (time.monotonic() + self.owner.timeout, self.what)

    def __exit__(self, *exc):
        self.owner._active = None
