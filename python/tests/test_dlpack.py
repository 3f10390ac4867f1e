"""DLPack both ways, and when memory coming in is shared rather than copied.

Out: ``Tensor.__dlpack__`` hands the engine's storage to numpy/JAX/PyTorch
without a copy, read-only (DLPack 1.x flag), and keeps the tensor's storage
alive for as long as the consumer holds it.
In: ``_swiftkeras.from_dlpack`` and ``convert_to_tensor`` share a producer's
memory when it is C-contiguous and 64-byte aligned, copy otherwise. A numpy
array is shared only when nobody can write to its memory (read-only down to
bytes or an engine tensor); a writeable one is always copied, so writing to
it later cannot change a tensor.
"""

import gc
import os

os.environ.setdefault("KERAS_BACKEND", "swift")

import numpy as np
import pytest

C = pytest.importorskip("_swiftkeras")


def addr(x):
    """Address of the first element: numpy's, or through the buffer protocol."""
    if isinstance(x, C.Tensor):
        return np.asarray(memoryview(x)).ctypes.data
    return np.asarray(x).ctypes.data


def aligned(shape, dtype, fill=None):
    """A writeable C-contiguous numpy array whose data is 64-byte aligned."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    a = raw[off:off + n].view(dtype).reshape(shape)
    a[...] = np.arange(a.size).reshape(shape) if fill is None else fill
    return a


def tensor(a):
    a = np.ascontiguousarray(a)
    return C.from_buffer(a, str(a.dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "int64", "uint16", "bool",
                                   "float16", "complex64"])
def test_numpy_from_tensor_shares_storage_read_only(dtype):
    t = tensor((np.arange(12) % 3).astype(dtype).reshape(3, 4))
    a = np.from_dlpack(t)
    assert a.ctypes.data == addr(t)
    assert a.dtype == np.dtype(dtype) and a.shape == (3, 4)
    np.testing.assert_array_equal(a, (np.arange(12) % 3).astype(dtype).reshape(3, 4))
    assert not a.flags.writeable  # DLPack 1.0's read-only flag reached numpy
    with pytest.raises(ValueError):
        a[0, 0] = 1


def test_exported_storage_outlives_the_tensor():
    t = tensor(np.arange(100000, dtype=np.float32))
    a = np.from_dlpack(t)
    del t
    gc.collect()
    # Allocate over whatever the pool might have handed out again.
    junk = [tensor(np.full(100000, 7, np.float32)) for _ in range(4)]
    np.testing.assert_array_equal(a, np.arange(100000, dtype=np.float32))
    del junk


def test_dlpack_device_and_arguments():
    t = tensor(np.ones(3, np.float32))
    assert t.__dlpack_device__() == (1, 0)
    with pytest.raises(BufferError):
        t.__dlpack__(dl_device=(2, 0))
    with pytest.raises(ValueError):
        t.__dlpack__(stream=1)
    with pytest.raises(TypeError):
        t.__dlpack__(max_version=3)
    copied = np.from_dlpack(t, copy=True)
    assert copied.ctypes.data != addr(t)
    np.testing.assert_array_equal(copied, np.ones(3, np.float32))
    # An unconsumed capsule frees what it holds.
    for versioned in (None, (1, 0)):
        cap = t.__dlpack__(max_version=versioned)
        del cap
    gc.collect()


def test_float8_refuses_dlpack():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = C.from_buffer(np.zeros(4, np.uint8), "float8_e4m3fn")
    with pytest.raises(BufferError):
        t.__dlpack__()
    assert ml_dtypes  # the dtype exists on the Python side; DLPack 1.0 has no code for it


def test_from_dlpack_shares_aligned_contiguous_memory():
    a = aligned((4, 16), np.float32)
    t = C.from_dlpack(a)
    assert addr(t) == a.ctypes.data
    assert t.shape == (4, 16) and t.dtype == "float32"
    # The engine computes from that memory and never writes into it.
    s = C.op("add", t, t)
    np.testing.assert_array_equal(np.asarray(s), 2 * a)
    np.testing.assert_array_equal(a, np.arange(64, dtype=np.float32).reshape(4, 16))
    # The tensor keeps the producer's memory alive.
    base = a.base
    del a
    gc.collect()
    np.testing.assert_array_equal(np.asarray(t), np.arange(64, dtype=np.float32).reshape(4, 16))
    assert base is not None


def test_from_dlpack_copies_what_it_cannot_share():
    a = aligned((8, 8), np.float64)
    sliced = a[:, ::2]  # strided
    t = C.from_dlpack(sliced)
    assert addr(t) != sliced.ctypes.data
    np.testing.assert_array_equal(np.asarray(t), sliced)
    misaligned = aligned((65,), np.uint8)[1:]
    t = C.from_dlpack(misaligned)
    assert addr(t) != misaligned.ctypes.data
    np.testing.assert_array_equal(np.asarray(t), misaligned)
    with pytest.raises(BufferError):
        C.from_dlpack(misaligned, copy=False)
    forced = C.from_dlpack(aligned((16,), np.int32), copy=True)
    assert forced.shape == (16,)
    empty = C.from_dlpack(np.zeros((0, 3), np.float32))
    assert empty.shape == (0, 3)
    with pytest.raises(TypeError):
        C.from_dlpack([1, 2, 3])


def test_round_trip_keeps_the_pointer():
    t = tensor(np.arange(32, dtype=np.float32))
    back = C.from_dlpack(np.from_dlpack(t))
    assert addr(back) == addr(t)
    np.testing.assert_array_equal(np.asarray(back), np.arange(32, dtype=np.float32))


def test_convert_to_tensor_aliasing_rules():
    from keras import ops

    from keras_swift.src.engine import numpy_view

    # A writeable numpy array is copied: writing to it later changes nothing.
    a = aligned((16,), np.float32)
    t = ops.convert_to_tensor(a)
    assert addr(t) != a.ctypes.data
    a[:] = -1
    np.testing.assert_array_equal(np.asarray(t), np.arange(16, dtype=np.float32))
    # So is a read-only array that owns its memory (it can be made writeable again).
    b = aligned((16,), np.float32)
    b.flags.writeable = False
    assert addr(ops.convert_to_tensor(b)) != b.ctypes.data
    # A read-only view of an engine tensor is shared: nobody can write to it.
    src = ops.convert_to_tensor(np.arange(16, dtype=np.float32))
    view = numpy_view(src)
    assert addr(ops.convert_to_tensor(view)) == addr(src)
    # And bytes, which nobody can change.
    raw = np.frombuffer(bytes(256), np.float32)
    if raw.ctypes.data % 64 == 0:
        assert addr(ops.convert_to_tensor(raw)) == raw.ctypes.data


def test_convert_to_tensor_of_jax_is_zero_copy():
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.arange(1024, dtype=jnp.float32).reshape(32, 32)
    from keras import ops

    t = ops.convert_to_tensor(x)
    ptr = x.unsafe_buffer_pointer()
    if ptr % 64 == 0:
        assert addr(t) == ptr
    np.testing.assert_array_equal(np.asarray(t), np.asarray(x))
    # And back: JAX reads the engine's storage.
    import jax

    y = jax.dlpack.from_dlpack(t)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    assert y.unsafe_buffer_pointer() == addr(t)


def test_torch_both_ways():
    torch = pytest.importorskip("torch")
    x = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    t = C.from_dlpack(x)
    if x.data_ptr() % 64 == 0:
        assert addr(t) == x.data_ptr()
    np.testing.assert_array_equal(np.asarray(t), x.numpy())
    y = torch.from_dlpack(t)
    assert y.data_ptr() == addr(t)
