"""``keras.distribution`` on the swift backend: one CPU device per process, the
processes joined by MPI (Open MPI through mpi4py).

Each process launched by ``mpirun`` is one device, ``"cpu:<rank>"``; ``list_devices()``
names all of them in rank order, so ``DataParallel()`` builds a 1-D mesh over every
process. A process holds its whole batch shard and whole replicated variables, so a
``TensorLayout`` that only splits the batch dimension over the data axis is what this
backend runs: data parallelism across processes (``keras_swift.src.distributed`` does
the sharding, gradient allreduce and the reductions of metrics). A layout that would
split a variable or an intermediate tensor over more than one device (``ModelParallel``
with a ``LayoutMap`` that shards) raises ``NotImplementedError``; it is never ignored.

mpi4py is imported by ``initialize()`` only, so a process that never calls it needs
neither MPI nor mpi4py.
"""

import os
import sys
import warnings

import numpy as np

# Set by initialize(): the world communicator (None: one process, no MPI).
_COMM = None
# The environment variables the MPI launchers set (Open MPI, then the PMI of MPICH /
# Slurm / Hydra): how a process knows it was started as one of several.
_LAUNCHER_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
_warned_not_initialized = False


def launched_size():
    """The number of processes the MPI launcher started (1 when not launched by one)."""
    for name in _LAUNCHER_SIZE:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def comm():
    """The MPI communicator of ``initialize()``, or None in a single process."""
    return _COMM


def list_devices(device_type=None):
    """``["cpu:0", ..., "cpu:<n-1>"]``: one CPU device per process, global across them."""
    device_type = _check_device_type(device_type)
    if device_type != "cpu":
        return []
    return [f"cpu:{i}" for i in range(num_processes())]


def get_device_count(device_type=None):
    return len(list_devices(device_type))


def _check_device_type(device_type):
    if device_type is None:
        return "cpu"
    device_type = str(device_type).lower()
    if device_type not in ("cpu", "gpu", "tpu"):
        raise ValueError(
            f"Unknown device type {device_type!r}: expected 'cpu', 'gpu' or 'tpu' "
            "(the swift backend has CPU devices only)."
        )
    return device_type


def initialize(job_addresses=None, num_processes=None, process_id=None):
    """Join the processes started by ``mpirun`` (``MPI_Init`` through mpi4py).

    MPI's launcher wires the processes together, so ``job_addresses`` (hosts are
    ``mpirun``'s ``--host`` / ``--hostfile``) only has to agree with it: when given,
    its number of comma-separated addresses, ``num_processes`` and ``process_id``
    are checked against the MPI world. A random seed common to all processes is
    set when none was, so variables start identical (they are also broadcast from
    rank 0 when ``fit`` starts).
    """
    global _COMM
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            "keras.distribution.initialize() on the swift backend needs mpi4py and an "
            "MPI library: install Open MPI (Debian: apt-get install openmpi-bin "
            "libopenmpi-dev) and `pip install mpi4py` (or keras-swift[mpi]), then "
            f"launch with `mpirun -np N python script.py`. ({e})"
        ) from e
    world = MPI.COMM_WORLD
    size, rank = world.Get_size(), world.Get_rank()
    if job_addresses:
        addresses = [a for a in str(job_addresses).split(",") if a]
        if len(addresses) > 1 and len(addresses) != size:
            raise ValueError(
                f"job_addresses names {len(addresses)} processes but mpirun started "
                f"{size}: {job_addresses}"
            )
    if num_processes is not None and int(num_processes) != size:
        raise ValueError(
            f"num_processes={num_processes}, but mpirun started {size} processes "
            "(set it with `mpirun -np`)."
        )
    if process_id is not None and int(process_id) != rank:
        raise ValueError(
            f"process_id={process_id}, but MPI gave this process rank {rank}."
        )
    if size > 1 and _COMM is None:
        _abort_on_uncaught_exception(world)
    _COMM = world
    _initialize_rng(world)


def _abort_on_uncaught_exception(world):
    # A process that ends on an exception would wait in MPI_Finalize while the others
    # wait for it in their next collective: end the whole job instead, as
    # `python -m mpi4py` does.
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        sys.stderr.write(
            f"keras_swift: rank {world.Get_rank()} ended on {kind.__name__}; "
            "aborting every process of the job (MPI_Abort).\n"
        )
        sys.stderr.flush()
        world.Abort(1)

    sys.excepthook = hook


def _initialize_rng(world):
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    if world.Get_size() == 1 or rng_utils.get_random_seed() is not None:
        return
    seed = world.bcast(
        seed_generator.make_default_seed() if world.Get_rank() == 0 else None, root=0
    )
    rng_utils.set_random_seed(seed)


def num_processes():
    if _COMM is not None:
        return _COMM.Get_size()
    _warn_if_launched()
    return 1


def process_id():
    if _COMM is not None:
        return _COMM.Get_rank()
    return 0


def _warn_if_launched():
    global _warned_not_initialized
    if _warned_not_initialized or launched_size() == 1:
        return
    _warned_not_initialized = True
    warnings.warn(
        f"keras_swift: this process is one of {launched_size()} started by an MPI "
        "launcher, but keras.distribution.initialize() was not called: it sees one "
        "device and trains alone. Call keras.distribution.initialize() first.",
        stacklevel=3,
    )


# -- meshes and layouts -------------------------------------------------------------


class _Mesh:
    """A ``DeviceMesh`` as ranks: ``ranks[i, j, ...]`` is the process of that device."""

    def __init__(self, ranks, axis_names):
        self.ranks = ranks
        self.axis_names = tuple(axis_names)
        self.shape = dict(zip(self.axis_names, ranks.shape))

    def __repr__(self):
        return f"<swift mesh {self.shape} ranks={self.ranks.tolist()}>"


class _Layout:
    """A ``TensorLayout`` on a ``_Mesh``: ``axes[d]`` names the mesh axis dimension d is
    split over (None: whole on every device)."""

    def __init__(self, axes, mesh):
        self.axes = tuple(axes)
        self.mesh = mesh

    def split_dims(self):
        """The dimensions split over more than one device."""
        return [
            d
            for d, axis in enumerate(self.axes)
            if axis is not None and _axis_size(self.mesh, axis) > 1
        ]

    def __repr__(self):
        return f"<swift layout axes={self.axes} mesh={self.mesh}>"


def _axis_size(mesh, axis):
    names = axis if isinstance(axis, (tuple, list)) else (axis,)
    size = 1
    for name in names:
        if name not in mesh.shape:
            raise ValueError(f"Axis {name!r} is not in the device mesh {mesh.axis_names}.")
        size *= mesh.shape[name]
    return size


def _to_backend_device(device_name):
    device_name = str(device_name)
    device_type, _, index = device_name.partition(":")
    device_type = device_type.lower()
    index = index or "0"
    n = num_processes()
    if device_type == "cpu" and index.isdigit() and int(index) < n:
        return int(index)
    raise ValueError(
        f"Device not found: {device_name} (the devices are "
        f"{', '.join(list_devices()) or 'none'}: one CPU per process)."
    )


def _to_backend_mesh(device_mesh):
    devices = np.asarray(device_mesh.devices)
    ranks = np.array(
        [_to_backend_device(d) for d in devices.flatten()], dtype=np.int64
    ).reshape(devices.shape)
    if len(set(ranks.flatten().tolist())) != ranks.size:
        raise ValueError(f"A device appears twice in the mesh: {devices.tolist()}")
    return _Mesh(ranks, device_mesh.axis_names)


def _to_backend_layout(tensor_layout):
    if tensor_layout.device_mesh is None:
        raise ValueError(
            "Cannot create sharding when device mesh is not set for TensorLayout."
        )
    return _Layout(tensor_layout.axes, tensor_layout.device_mesh.backend_mesh)


def _backend_layout(layout):
    from keras.src.distribution import TensorLayout

    if isinstance(layout, TensorLayout):
        return layout.backend_layout
    if isinstance(layout, _Layout):
        return layout
    raise ValueError(
        f"Expected a keras.distribution.TensorLayout, got {type(layout).__name__}: {layout}"
    )


def _model_parallel_error(what, layout):
    return NotImplementedError(
        f"keras_swift: {what} with layout {tuple(layout.axes)} would be split over "
        f"several devices of the mesh {layout.mesh.shape}. Model parallelism "
        "(keras.distribution.ModelParallel / a LayoutMap that shards) is not implemented "
        "on the swift backend: each process holds whole variables. Use DataParallel, or "
        "map the variable to a replicated layout (all axes None)."
    )


def distribute_tensor(tensor, layout):
    """``tensor`` itself when ``layout`` replicates it (one device per process holds
    it whole); a layout that splits it over several devices raises."""
    backend_layout = _backend_layout(layout)
    if backend_layout.split_dims():
        raise _model_parallel_error("a tensor", backend_layout)
    return tensor


def distribute_variable(value, layout):
    backend_layout = _backend_layout(layout)
    if backend_layout.split_dims():
        raise _model_parallel_error("a variable", backend_layout)
    return value


def distribute_data_input(per_process_batch, layout, batch_dim_name):
    """The process's batch shard as it is: with one device per process it is already
    what this process's device holds. Only the batch dimension may be split."""
    backend_layout = _backend_layout(layout)
    split = backend_layout.split_dims()
    if split and (split != [0] or backend_layout.axes[0] != batch_dim_name):
        raise _model_parallel_error("a data input", backend_layout)
    return per_process_batch


def check_variable(variable, value):
    """Called as a variable is created under a distribution: its layout must
    replicate it."""
    from keras.src.backend.common import global_state

    distribution = global_state.get_global_attribute("distribution")
    if distribution is None:
        return
    if getattr(variable, "_shape", None) is None:
        variable._shape = variable._validate_shape(value.shape)
    layout = distribution.get_variable_layout(variable)
    if layout is not None:
        backend_layout = _backend_layout(layout)
        if backend_layout.split_dims():
            error = _model_parallel_error(f"variable {variable.path!r}", backend_layout)
            # Sequential.build swallows NotImplementedError (shape inference): fit,
            # evaluate and predict raise it again (distributed.current()).
            distribution._swift_refused = str(error)
            raise error
