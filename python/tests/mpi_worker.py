"""One process of the multi-process tests (test_distribution_mpi.py), or the single
process they compare with: ``python mpi_worker.py MODE OUTDIR``.

With MPI_WORKER_DIST=1 the process joins the others (keras.distribution.initialize())
and trains under DataParallel(); without it, it trains alone on the same global
batches. It writes ``OUTDIR/<mode>_<rank>.npz``: the weights, the history, evaluate's
results and predict's outputs.
"""

import os
import signal
import sys
import time

import numpy as np

import keras

MODE, OUT = sys.argv[1], sys.argv[2]
DIST = os.environ.get("MPI_WORKER_DIST") == "1"
JIT = os.environ.get("MPI_WORKER_JIT", "1") == "1"

if DIST:
    keras.distribution.initialize()
    keras.distribution.set_distribution(keras.distribution.DataParallel())
RANK = keras.src.backend.distribution_lib.process_id()

# 250 rows in batches of 60: the last batch of 10 gives 2 ranks 5 + 5 rows and 3 ranks
# 3 + 3 + 4, so the gradient mean must weight the ranks by their rows.
rng = np.random.default_rng(0)
x = rng.normal(size=(250, 12)).astype("float32")
y = rng.integers(0, 4, 250)


def make_model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=JIT,
    )
    return model


class Die(keras.callbacks.Callback):
    """Rank 1 dies (SIGKILL) or hangs as epoch ``at`` begins."""

    def __init__(self, at, how):
        super().__init__()
        self.at, self.how = at, how

    def on_epoch_begin(self, epoch, logs=None):
        if RANK == 1 and epoch == self.at:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)


def save(model, history=None, **extra):
    np.savez(
        os.path.join(OUT, f"{MODE}_{RANK}.npz"),
        *model.get_weights(),
        loss=np.array(history.history["loss"] if history else []),
        **extra,
    )


if MODE == "train":
    model = make_model()
    history = model.fit(x, y, batch_size=60, epochs=3, shuffle=False, verbose=0)
    ev = model.evaluate(x, y, batch_size=60, verbose=0)
    pred = model.predict(x, batch_size=60, verbose=0)
    # Shuffled batches: the ranks must still agree (same seed, same order).
    shuffled = make_model()
    shuffled.fit(x, y, batch_size=60, epochs=2, shuffle=True, verbose=0)
    # Row-sparse gradients (Embedding) and an AUC metric (confusion counts).
    keras.utils.set_random_seed(3)
    tokens = rng.integers(0, 50, (250, 6))
    embedding = keras.Sequential([
        keras.Input((6,), dtype="int32"), keras.layers.Embedding(50, 8),
        keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1, activation="sigmoid"),
    ])
    embedding.compile(optimizer="adam", loss="binary_crossentropy",
                      metrics=[keras.metrics.AUC()], jit_compile=JIT)
    embedding_history = embedding.fit(tokens, y % 2, batch_size=60, epochs=2,
                                      shuffle=False, verbose=0)
    # BatchNormalization: each rank normalises its own rows, the moving statistics are
    # averaged, so the ranks agree (one process differs: it normalises whole batches).
    keras.utils.set_random_seed(5)
    batchnorm = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8),
                                  keras.layers.BatchNormalization(), keras.layers.Dense(4)])
    batchnorm.compile(optimizer="sgd", loss="mse", jit_compile=JIT)
    batchnorm.fit(x, np.eye(4)[y], batch_size=60, epochs=1, shuffle=False, verbose=0)
    save(model, history, evaluate=np.array(ev), predict=pred,
         accuracy=np.array(history.history["accuracy"]),
         shuffled=np.concatenate([w.ravel() for w in shuffled.get_weights()]),
         embedding=np.concatenate([w.ravel() for w in embedding.get_weights()]),
         embedding_auc=np.array(embedding_history.history["auc"]),
         batchnorm=np.concatenate([w.ravel() for w in batchnorm.get_weights()]))
elif MODE == "hang":
    model = make_model()
    model.fit(x, y, batch_size=60, epochs=3, shuffle=False, verbose=0,
              callbacks=[Die(1, "hang")])
elif MODE in ("resume_die", "resume"):
    model = make_model()
    callbacks = [keras.callbacks.BackupAndRestore(os.path.join(OUT, "backup"))]
    if MODE == "resume_die":
        callbacks.append(Die(2, "kill"))
    history = model.fit(x, y, batch_size=60, epochs=3, shuffle=False, verbose=0,
                        callbacks=callbacks)
    save(model, history)
elif MODE == "api":
    # The backend module as Keras sees it in a job of several processes, then a
    # LayoutMap that would shard: NotImplementedError, never an unsharded model.
    from keras.distribution import DeviceMesh, LayoutMap, ModelParallel, TensorLayout
    from keras.src.backend import distribution_lib as backend_dl

    devices = keras.distribution.list_devices()
    n = len(devices)
    mismatched = []
    for kwargs in ({"num_processes": n + 1}, {"process_id": (RANK + 1) % n},
                   {"job_addresses": ",".join(["h"] * (n + 1))}):
        try:
            keras.distribution.initialize(**kwargs)
        except ValueError as e:
            mismatched.append(str(e))
    # Agreeing arguments are accepted (MPI's launcher already joined the processes).
    keras.distribution.initialize(",".join(["h"] * n), n, RANK)
    mesh = DeviceMesh((n,), ("batch",), devices)
    data_layout = TensorLayout(("batch", None), mesh)
    batch = np.ones((2, 3), "float32")
    api = {
        "devices": np.array(devices),
        "device_count": np.array(keras.distribution.get_device_count()),
        "processes": np.array([backend_dl.num_processes(), backend_dl.process_id()]),
        "mesh_ranks": mesh.backend_mesh.ranks,
        "replicas": np.array(keras.distribution.DataParallel().num_model_replicas),
        "data_input_kept": np.array(
            backend_dl.distribute_data_input(batch, data_layout, "batch") is batch
        ),
        "mismatched": np.array(mismatched),
    }
    mesh = DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    layout_map = LayoutMap(mesh)
    layout_map[".*dense.*kernel"] = (None, "model")
    errors = []
    keras.distribution.set_distribution(ModelParallel(layout_map=layout_map))
    try:
        # Sequential's build swallows the error (it takes it for missing shape
        # inference): fit raises it again.
        make_model().fit(x, y, batch_size=60, verbose=0)
    except NotImplementedError as e:
        errors.append(str(e))
    try:
        keras.distribution.distribute_tensor(
            np.ones((4, 4), "float32"), TensorLayout((None, "model"), mesh)
        )
    except NotImplementedError as e:
        errors.append(str(e))
    np.savez(os.path.join(OUT, f"{MODE}_{RANK}.npz"), errors=np.array(errors), **api)
else:
    raise SystemExit(f"unknown mode {MODE}")
