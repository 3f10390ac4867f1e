/*
 * DLPack both ways: Tensor.__dlpack__ / __dlpack_device__ hand a tensor's
 * storage to numpy, JAX, PyTorch... without a copy, and from_dlpack(obj) takes
 * theirs in (zero-copy when the layout allows, through te_tensor_wrap).
 *
 * The structures below are the DLPack ABI (dlpack.h, versions 0.8 and 1.x),
 * written out here because the header is not installed on build machines.
 * Their layout is fixed by that specification.
 */
#include "internal.h"

#include <string.h>

typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;

enum { kDLCPU = 1, kDLCUDAHost = 3, kDLCUDAManaged = 13 };
enum { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLComplex = 5, kDLBool = 6 };

typedef struct {
    int32_t device_type;
    int32_t device_id;
} DLDevice;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides; /* in elements; NULL means C-contiguous */
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;

#define DLPACK_FLAG_BITMASK_READ_ONLY (1ULL << 0)
#define DLPACK_FLAG_BITMASK_IS_COPIED (1ULL << 1)

typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;

/* The newest DLPack version this module speaks. */
#define DLPACK_MAJOR 1
#define DLPACK_MINOR 0

static const DLDataType dl_types[N_DTYPES] = {
    [TE_BOOL] = {kDLBool, 8, 1},
    [TE_INT8] = {kDLInt, 8, 1},
    [TE_INT16] = {kDLInt, 16, 1},
    [TE_INT32] = {kDLInt, 32, 1},
    [TE_INT64] = {kDLInt, 64, 1},
    [TE_UINT8] = {kDLUInt, 8, 1},
    [TE_UINT16] = {kDLUInt, 16, 1},
    [TE_UINT32] = {kDLUInt, 32, 1},
    [TE_UINT64] = {kDLUInt, 64, 1},
    [TE_FLOAT16] = {kDLFloat, 16, 1},
    [TE_BFLOAT16] = {kDLBfloat, 16, 1},
    [TE_FLOAT32] = {kDLFloat, 32, 1},
    [TE_FLOAT64] = {kDLFloat, 64, 1},
    /* float8: DLPack 1.0 has no code for them (bits 0 marks "none"). */
    [TE_COMPLEX64] = {kDLComplex, 64, 1},
    [TE_COMPLEX128] = {kDLComplex, 128, 1},
};

static int32_t
engine_dtype(DLDataType t)
{
    if (t.lanes != 1) {
        return -1;
    }
    for (int32_t i = 0; i < N_DTYPES; i++) {
        if (dl_types[i].bits != 0 && dl_types[i].code == t.code && dl_types[i].bits == t.bits) {
            return i;
        }
    }
    return -1;
}

/* -------------------------------------------------------------------------- */
/* Out: Tensor.__dlpack__                                                      */
/* -------------------------------------------------------------------------- */

/* One allocation per export: the managed tensor (either kind), the engine
 * reference that keeps the storage alive, and the shape and strides it points
 * to. The deleter only releases an engine reference and frees raw memory, so
 * it may run on any thread, with or without the GIL. */
typedef struct {
    union {
        DLManagedTensor legacy;
        DLManagedTensorVersioned versioned;
    } m;
    te_tensor handle;
    int64_t dims[]; /* shape[0..ndim), then strides[0..ndim) */
} Export;

static void
export_free(Export *e)
{
    te_tensor_release(e->handle);
    PyMem_RawFree(e);
}

static void
legacy_deleter(DLManagedTensor *self)
{
    export_free((Export *)self->manager_ctx);
}

static void
versioned_deleter(DLManagedTensorVersioned *self)
{
    export_free((Export *)self->manager_ctx);
}

static const char CAPSULE_LEGACY[] = "dltensor";
static const char CAPSULE_VERSIONED[] = "dltensor_versioned";
static const char CAPSULE_LEGACY_USED[] = "used_dltensor";
static const char CAPSULE_VERSIONED_USED[] = "used_dltensor_versioned";

/* A capsule nobody consumed still owns its managed tensor. */
static void
capsule_destructor(PyObject *capsule)
{
    if (PyCapsule_IsValid(capsule, CAPSULE_VERSIONED)) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(capsule, CAPSULE_VERSIONED);
        if (m != NULL && m->deleter != NULL) {
            m->deleter(m);
        }
    }
    else if (PyCapsule_IsValid(capsule, CAPSULE_LEGACY)) {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, CAPSULE_LEGACY);
        if (m != NULL && m->deleter != NULL) {
            m->deleter(m);
        }
    }
    PyErr_Clear(); /* a destructor must not leave an exception behind */
}

/* dl_device, when given, must be this CPU: (kDLCPU, 0). */
static int
check_cpu_device(PyObject *dl_device)
{
    if (dl_device == NULL || dl_device == Py_None) {
        return 0;
    }
    long type = -1, id = -1;
    if (PyTuple_Check(dl_device) && PyTuple_GET_SIZE(dl_device) == 2) {
        type = PyLong_AsLong(PyTuple_GET_ITEM(dl_device, 0));
        id = PyLong_AsLong(PyTuple_GET_ITEM(dl_device, 1));
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    if (type != kDLCPU || id != 0) {
        PyErr_Format(PyExc_BufferError,
                     "__dlpack__: tensors live on the CPU (device (1, 0)), not %R", dl_device);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(Tensor_dlpack_doc,
"__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
"A DLPack capsule of this tensor's storage, without a copy unless copy=True.\n"
"Consumers asking for DLPack 1.x get the read-only flag set: the engine's\n"
"tensors are immutable and may share storage.");

static PyObject *
Tensor_dlpack(TensorObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOO:__dlpack__", kwlist, &stream,
                                     &max_version, &dl_device, &copy)) {
        return NULL;
    }
    if (stream != Py_None) {
        PyErr_Format(PyExc_ValueError, "__dlpack__: a CPU tensor takes stream=None, not %R",
                     stream);
        return NULL;
    }
    if (check_cpu_device(dl_device) < 0) {
        return NULL;
    }
    int versioned = 0;
    if (max_version != Py_None) {
        if (!PyTuple_Check(max_version) || PyTuple_GET_SIZE(max_version) != 2) {
            PyErr_Format(PyExc_TypeError, "__dlpack__: max_version must be a (major, minor) tuple, not %R",
                         max_version);
            return NULL;
        }
        long major = PyLong_AsLong(PyTuple_GET_ITEM(max_version, 0));
        if (major == -1 && PyErr_Occurred()) {
            return NULL;
        }
        versioned = major >= 1;
    }
    int want_copy = 0;
    if (copy != Py_None) {
        want_copy = PyObject_IsTrue(copy);
        if (want_copy < 0) {
            return NULL;
        }
    }
    DLDataType dt = dl_types[self->dtype];
    if (dt.bits == 0) {
        PyErr_Format(PyExc_BufferError, "__dlpack__: DLPack %d.%d has no float8 types",
                     DLPACK_MAJOR, DLPACK_MINOR);
        return NULL;
    }

    te_tensor h = te_tensor_retain(self->handle);
    if (want_copy) {
        int64_t shape[MAX_RANK];
        int32_t nd = te_tensor_shape(h, shape, MAX_RANK);
        te_tensor c = NULL;
        te_status st = te_tensor_create(self->dtype, shape, nd, te_tensor_data(h),
                                        te_tensor_nbytes(h), &c);
        te_tensor_release(h);
        if (st != TE_OK) {
            return set_engine_error(st);
        }
        h = c;
    }
    int32_t nd = self->ndim;
    Export *e = PyMem_RawCalloc(1, sizeof(Export) + 2 * (size_t)(nd > 0 ? nd : 1) * sizeof(int64_t));
    if (e == NULL) {
        te_tensor_release(h);
        return PyErr_NoMemory();
    }
    e->handle = h;
    for (int32_t i = 0; i < nd; i++) {
        e->dims[i] = (int64_t)self->dims[i];
        /* DLPack strides count elements; ours (the buffer protocol's) bytes. */
        e->dims[nd + i] = (int64_t)(self->dims[nd + i] / te_dtype_itemsize(self->dtype));
    }
    DLTensor *t = versioned ? &e->m.versioned.dl_tensor : &e->m.legacy.dl_tensor;
    t->data = (void *)te_tensor_data(h);
    t->device.device_type = kDLCPU;
    t->device.device_id = 0;
    t->ndim = nd;
    t->dtype = dt;
    t->shape = nd > 0 ? e->dims : NULL;
    t->strides = nd > 0 ? e->dims + nd : NULL;
    t->byte_offset = 0;
    PyObject *capsule;
    if (versioned) {
        e->m.versioned.version.major = DLPACK_MAJOR;
        e->m.versioned.version.minor = DLPACK_MINOR;
        e->m.versioned.manager_ctx = e;
        e->m.versioned.deleter = versioned_deleter;
        e->m.versioned.flags = DLPACK_FLAG_BITMASK_READ_ONLY |
                               (want_copy ? DLPACK_FLAG_BITMASK_IS_COPIED : 0);
        capsule = PyCapsule_New(&e->m.versioned, CAPSULE_VERSIONED, capsule_destructor);
    }
    else {
        e->m.legacy.manager_ctx = e;
        e->m.legacy.deleter = legacy_deleter;
        capsule = PyCapsule_New(&e->m.legacy, CAPSULE_LEGACY, capsule_destructor);
    }
    if (capsule == NULL) {
        export_free(e);
    }
    return capsule;
}

PyDoc_STRVAR(Tensor_dlpack_device_doc,
"__dlpack_device__()\n--\n\n"
"(1, 0): kDLCPU, device 0.");

static PyObject *
Tensor_dlpack_device(TensorObject *self, PyObject *unused)
{
    return Py_BuildValue("(ii)", kDLCPU, 0);
}

PyMethodDef tensor_dlpack_methods[] = {
    {"__dlpack__", (PyCFunction)(void (*)(void))Tensor_dlpack, METH_VARARGS | METH_KEYWORDS,
     Tensor_dlpack_doc},
    {"__dlpack_device__", (PyCFunction)Tensor_dlpack_device, METH_NOARGS,
     Tensor_dlpack_device_doc},
    {NULL, NULL, 0, NULL},
};

/* -------------------------------------------------------------------------- */
/* In: from_dlpack                                                             */
/* -------------------------------------------------------------------------- */

/* What te_tensor_wrap's release gets: the consumed managed tensor. Producers'
 * deleters (numpy's, torch's) drop Python references, so the GIL is taken:
 * the engine may release the last tensor on any thread. */
typedef struct {
    void *managed;
    int versioned;
} Import;

static void
import_release(void *ctx)
{
    Import *imp = ctx;
    if (Py_IsInitialized()) {
        PyGILState_STATE g = PyGILState_Ensure();
        if (imp->versioned) {
            DLManagedTensorVersioned *m = imp->managed;
            if (m->deleter != NULL) {
                m->deleter(m);
            }
        }
        else {
            DLManagedTensor *m = imp->managed;
            if (m->deleter != NULL) {
                m->deleter(m);
            }
        }
        PyGILState_Release(g);
    }
    PyMem_RawFree(imp);
}

/* Copies a strided CPU array into C order at dst (shape and element strides
 * checked by the caller; itemsize bytes an element). */
static void
gather(char *dst, const char *src, int32_t ndim, const int64_t *shape, const int64_t *strides,
       int64_t itemsize)
{
    int64_t idx[MAX_RANK] = {0};
    int64_t total = 1;
    for (int32_t i = 0; i < ndim; i++) {
        total *= shape[i];
    }
    for (int64_t n = 0; n < total; n++) {
        int64_t off = 0;
        for (int32_t i = 0; i < ndim; i++) {
            off += idx[i] * strides[i];
        }
        memcpy(dst + n * itemsize, src + off * itemsize, (size_t)itemsize);
        for (int32_t i = ndim - 1; i >= 0; i--) {
            if (++idx[i] < shape[i]) {
                break;
            }
            idx[i] = 0;
        }
    }
}

PyDoc_STRVAR(from_dlpack_doc,
"from_dlpack(obj, copy=None)\n--\n\n"
"A tensor of obj, any CPU object with __dlpack__ (numpy, JAX, PyTorch...).\n"
"The tensor shares obj's memory when it is C-contiguous and 64-byte aligned\n"
"and copy is not True; otherwise (or with copy=True) it holds a copy; copy=False\n"
"raises BufferError where sharing is impossible. A shared tensor keeps obj's\n"
"memory alive; the engine never writes to it, but obj's owner still can, and\n"
"the tensor then sees the change (DLPack's rule).");

static PyObject *
py_from_dlpack(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj", "copy", NULL};
    PyObject *obj, *copy_arg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$O:from_dlpack", kwlist, &obj, &copy_arg)) {
        return NULL;
    }
    int copy = -1; /* -1: when needed */
    if (copy_arg != Py_None) {
        copy = PyObject_IsTrue(copy_arg);
        if (copy < 0) {
            return NULL;
        }
    }
    if (Tensor_Check(obj) && copy != 1) {
        return Py_NewRef(obj);
    }
    PyObject *device = PyObject_CallMethod(obj, "__dlpack_device__", NULL);
    if (device == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "from_dlpack() needs an object with __dlpack__, not %.200s",
                         Py_TYPE(obj)->tp_name);
        }
        return NULL;
    }
    long dev_type = -1;
    if (PyTuple_Check(device) && PyTuple_GET_SIZE(device) == 2) {
        dev_type = PyLong_AsLong(PyTuple_GET_ITEM(device, 0));
    }
    if (PyErr_Occurred()) {
        Py_DECREF(device);
        return NULL;
    }
    if (dev_type != kDLCPU && dev_type != kDLCUDAHost && dev_type != kDLCUDAManaged) {
        PyErr_Format(PyExc_BufferError, "from_dlpack(): %.200s is on device %R; the engine reads CPU memory only",
                     Py_TYPE(obj)->tp_name, device);
        Py_DECREF(device);
        return NULL;
    }
    Py_DECREF(device);

    /* Ask for DLPack 1.0 (it carries the read-only flag); producers that
     * predate the keyword get the old call. */
    PyObject *kw = Py_BuildValue("{s(ii)}", "max_version", DLPACK_MAJOR, DLPACK_MINOR);
    if (kw == NULL) {
        return NULL;
    }
    PyObject *meth = PyObject_GetAttrString(obj, "__dlpack__");
    if (meth == NULL) {
        Py_DECREF(kw);
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    PyObject *capsule = empty ? PyObject_Call(meth, empty, kw) : NULL;
    Py_DECREF(kw);
    if (capsule == NULL && empty != NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        capsule = PyObject_Call(meth, empty, NULL);
    }
    Py_XDECREF(empty);
    Py_DECREF(meth);
    if (capsule == NULL) {
        return NULL;
    }

    Import *imp = PyMem_RawCalloc(1, sizeof(Import));
    if (imp == NULL) {
        Py_DECREF(capsule);
        return PyErr_NoMemory();
    }
    DLTensor *t;
    if (PyCapsule_IsValid(capsule, CAPSULE_VERSIONED)) {
        DLManagedTensorVersioned *m = PyCapsule_GetPointer(capsule, CAPSULE_VERSIONED);
        if (m->version.major != DLPACK_MAJOR) {
            PyErr_Format(PyExc_BufferError, "from_dlpack(): DLPack version %u.%u is not supported",
                         (unsigned)m->version.major, (unsigned)m->version.minor);
            PyMem_RawFree(imp);
            Py_DECREF(capsule); /* still unconsumed: its destructor calls the deleter */
            return NULL;
        }
        imp->managed = m;
        imp->versioned = 1;
        t = &m->dl_tensor;
        if (PyCapsule_SetName(capsule, CAPSULE_VERSIONED_USED) < 0) {
            PyMem_RawFree(imp);
            Py_DECREF(capsule);
            return NULL;
        }
    }
    else if (PyCapsule_IsValid(capsule, CAPSULE_LEGACY)) {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, CAPSULE_LEGACY);
        imp->managed = m;
        t = &m->dl_tensor;
        if (PyCapsule_SetName(capsule, CAPSULE_LEGACY_USED) < 0) {
            PyMem_RawFree(imp);
            Py_DECREF(capsule);
            return NULL;
        }
    }
    else {
        PyErr_Format(PyExc_TypeError, "from_dlpack(): %.200s.__dlpack__ returned no DLPack capsule",
                     Py_TYPE(obj)->tp_name);
        PyMem_RawFree(imp);
        Py_DECREF(capsule);
        return NULL;
    }
    Py_DECREF(capsule); /* consumed: from here on imp owns the managed tensor */

    PyObject *result = NULL;
    int32_t dt = engine_dtype(t->dtype);
    if (dt < 0) {
        PyErr_Format(PyExc_BufferError,
                     "from_dlpack(): DLPack dtype (code %d, %d bits, %d lanes) has no engine dtype",
                     (int)t->dtype.code, (int)t->dtype.bits, (int)t->dtype.lanes);
        goto fail;
    }
    if (t->ndim < 0 || t->ndim > MAX_RANK) {
        PyErr_Format(PyExc_BufferError, "from_dlpack(): rank %d is out of range [0, %d]",
                     (int)t->ndim, MAX_RANK);
        goto fail;
    }
    int64_t itemsize = te_dtype_itemsize(dt), count = 1;
    for (int32_t i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0) {
            PyErr_SetString(PyExc_BufferError, "from_dlpack(): negative dimension");
            goto fail;
        }
        if (t->shape[i] != 0 && count > INT64_MAX / t->shape[i] / itemsize) {
            PyErr_SetString(PyExc_BufferError, "from_dlpack(): too many elements");
            goto fail;
        }
        count *= t->shape[i];
    }
    /* C-contiguous: strides absent, or row-major where it matters (a
     * dimension of length 1 may carry any stride). */
    int contiguous = 1;
    if (t->strides != NULL) {
        int64_t expect = 1;
        for (int32_t i = t->ndim - 1; i >= 0; i--) {
            if (t->shape[i] != 1 && t->strides[i] != expect) {
                contiguous = 0;
            }
            expect *= t->shape[i];
        }
    }
    const char *data = (const char *)t->data + t->byte_offset;
    int64_t nbytes = count * itemsize;
    int share = copy != 1 && contiguous && nbytes > 0 && ((uintptr_t)data % 64) == 0;
    if (!share && copy == 0) {
        PyErr_SetString(PyExc_BufferError,
                        "from_dlpack(copy=False): memory is not C-contiguous and 64-byte aligned "
                        "(or empty); the engine needs a copy");
        goto fail;
    }
    te_tensor h = NULL;
    te_status st;
    if (share) {
        st = te_tensor_wrap(dt, t->shape, t->ndim, data, nbytes, import_release, imp, &h);
        if (st != TE_OK) {
            set_engine_error(st);
            goto fail;
        }
        return wrap_handle(h); /* imp now belongs to the engine tensor */
    }
    if (contiguous) {
        st = te_tensor_create(dt, t->shape, t->ndim, nbytes ? data : NULL, nbytes, &h);
    }
    else {
        char *buf = PyMem_Malloc(nbytes > 0 ? (size_t)nbytes : 1);
        if (buf == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        gather(buf, data, t->ndim, t->shape, t->strides, itemsize);
        st = te_tensor_create(dt, t->shape, t->ndim, buf, nbytes, &h);
        PyMem_Free(buf);
    }
    if (st != TE_OK) {
        set_engine_error(st);
        goto fail;
    }
    result = wrap_handle(h);
fail:
    import_release(imp);
    return result;
}

static PyMethodDef dlpack_methods[] = {
    {"from_dlpack", (PyCFunction)(void (*)(void))py_from_dlpack, METH_VARARGS | METH_KEYWORDS,
     from_dlpack_doc},
    {NULL, NULL, 0, NULL},
};

int
init_dlpack(PyObject *m)
{
    return PyModule_AddFunctions(m, dlpack_methods);
}
