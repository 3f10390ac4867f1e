/*
 * _swiftkeras._C — CPython binding of the keras-swift tensor engine.
 *
 * This module knows the C ABI (tensor_engine.h) and CPython, nothing else: no
 * numpy, no Keras. It owns three things the engine cannot do for Python:
 *
 *   - object lifetime: a Tensor holds exactly one engine reference, dropped in
 *     tp_dealloc; buffers exported to numpy keep the Tensor (hence the storage)
 *     alive, which is what makes zero-copy reads safe;
 *   - argument translation: Python values become te_attr records, Python errors
 *     come out of te_status codes;
 *   - the GIL: it is released around kernels, and every Python object the engine
 *     reads through a raw pointer is kept alive by a reference we own, because
 *     other threads may run and mutate the caller's containers meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tensor_engine.h"

#define N_DTYPES 17

/* The engine refuses ranks above this (te_tensor_create), so a larger rank
 * reported for a handle means a broken engine, not a big tensor. */
#define MAX_RANK 64

/* Most tensors are rank <= 4; their shape and strides live inside the object
 * so wrapping an op output costs one allocation. */
#define INLINE_RANK 4

/* te_op_call needs the output array up front and has no "ask for the count"
 * mode, so this is the most outputs one op may return through this module. */
#define MAX_OUTPUTS 64

/* Inputs and attributes of a typical op fit in stack arrays; more spill to the
 * heap. */
#define SMALL_INPUTS 8
#define SMALL_ATTRS 8
/* Int lists (axes, shapes, permutations) of one call, up to this many ints in
 * all, are converted into the call's stack frame instead of a heap copy. */
#define INLINE_INTS 32

/* Copies into the engine above this size run without the GIL. */
#define NOGIL_COPY_BYTES (1 << 20)

static const char *const dtype_names[N_DTYPES] = {
    "bool",   "int8",   "int16",   "int32",    "int64",    "uint8",   "uint16",
    "uint32", "uint64", "float16", "bfloat16", "float32",  "float64",
    "float8_e4m3fn", "float8_e5m2", "complex64", "complex128",
};

/* Native struct-module codes with fixed sizes on every platform we target
 * ('l' would be 4 bytes on Windows, hence 'q'). bfloat16 has no code: it is
 * exported as its raw 16 bits and reinterpreted by the caller (ml_dtypes). */
static const char *const dtype_formats[N_DTYPES] = {
    "?", "b", "h", "i", "q", "B", "H", "I", "Q", "e", "H", "f", "d",
    "B", "B", "Zf", "Zd",
};

/* -------------------------------------------------------------------------- */
/* Module state                                                                */
/* -------------------------------------------------------------------------- */

/* Single-phase init with static state: the engine itself is process-global
 * (one registry, per-thread tapes), so per-interpreter module state would
 * suggest an isolation that does not exist. */
static PyTypeObject TensorType;
static PyTypeObject *tensor_class = NULL; /* strong ref; the class op() outputs use */
/* The dtype names as interned str: `Tensor.dtype` returns these rather than a new
 * str per access (Keras reads it on nearly every op), and comparing them with a
 * string literal succeeds on identity. */
static PyObject *dtype_strs[N_DTYPES];
static PyObject *op_cache = NULL;         /* str -> int op handle */

/* -------------------------------------------------------------------------- */
/* Errors                                                                      */
/* -------------------------------------------------------------------------- */

/* Maps a failed status to the Python exception Keras code expects to catch.
 * te_last_error() is thread-local, so it must be read on the thread that made
 * the failing call, before any other engine call: callers do that. */
static PyObject *
set_engine_error(te_status st)
{
    PyObject *exc;
    switch (st) {
    case TE_ERR_VALUE: exc = PyExc_ValueError; break;
    case TE_ERR_TYPE: exc = PyExc_TypeError; break;
    case TE_ERR_INDEX: exc = PyExc_IndexError; break;
    case TE_ERR_NOT_IMPLEMENTED: exc = PyExc_NotImplementedError; break;
    default: exc = PyExc_RuntimeError; break;
    }
    const char *msg = te_last_error();
    if (msg == NULL || msg[0] == '\0') {
        PyErr_Format(exc, "tensor engine error (status %d)", (int)st);
    }
    else {
        /* The engine's text is UTF-8 but not guaranteed valid; a message must
         * never turn into a UnicodeDecodeError. */
        PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");
        if (text == NULL) {
            return NULL;
        }
        PyErr_SetObject(exc, text);
        Py_DECREF(text);
    }
    return NULL;
}

/* -------------------------------------------------------------------------- */
/* Tensor                                                                      */
/* -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    te_tensor handle;
    int32_t dtype;
    int32_t ndim;
    /* shape[0..ndim) then C-contiguous byte strides[0..ndim): the buffer
     * protocol hands these pointers out, so they live as long as the object. */
    Py_ssize_t *dims;
    PyObject *shape_tuple; /* built on first use; a handle's shape never changes */
    /* Attributes Keras sets on tensors (_keras_mask) and weak references:
     * here rather than added by a Python subclass, which would make every
     * tensor a GC object (see tensor_subclass). */
    PyObject *dict;
    PyObject *weaklist;
    Py_ssize_t inline_dims[2 * INLINE_RANK];
} TensorObject;

/* The exact-class test first: the subtype walk is a measurable part of a small op. */
#define Tensor_Check(op) (Py_TYPE(op) == tensor_class || PyObject_TypeCheck(op, &TensorType))

/* Tensor objects of the current class, kept on dealloc for the next op's output (as
 * CPython keeps floats): most tensors die young, and reusing one skips the allocator
 * and the zeroing. Only for a class whose instances are freed with PyObject_Free and
 * are not GC objects; set_tensor_class empties it, as the size may differ. */
#define TENSOR_FREELIST 32
static TensorObject *tensor_free[TENSOR_FREELIST];
static int n_tensor_free = 0;
static int tensor_class_reusable = 0;

/* Wraps an engine handle in a new instance of the current tensor class.
 * Steals `h` in every case: on failure it has been released. */
static PyObject *
wrap_handle(te_tensor h)
{
    if (h == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tensor engine returned a null tensor");
        return NULL;
    }
    /* te_tensor_shape returns the rank, so two calls describe the tensor. */
    int64_t shape[MAX_RANK];
    int32_t nd = te_tensor_shape(h, shape, MAX_RANK);
    int32_t dt = te_tensor_dtype(h);
    if (dt < 0 || dt >= N_DTYPES || nd < 0 || nd > MAX_RANK) {
        te_tensor_release(h);
        PyErr_Format(PyExc_RuntimeError,
                     "tensor engine returned a tensor with dtype code %d and rank %d",
                     (int)dt, (int)nd);
        return NULL;
    }

    PyTypeObject *cls = tensor_class;
    TensorObject *self;
    if (n_tensor_free > 0) {
        self = tensor_free[--n_tensor_free];
        PyObject_Init((PyObject *)self, cls);
        self->dict = NULL;
        self->weaklist = NULL;
    }
    else {
        self = (TensorObject *)cls->tp_alloc(cls, 0);
        if (self == NULL) {
            te_tensor_release(h);
            return NULL;
        }
    }
    /* From here on tp_dealloc owns the handle. */
    self->handle = h;
    self->dtype = dt;
    self->ndim = nd;
    self->shape_tuple = NULL;
    if (nd <= INLINE_RANK) {
        self->dims = self->inline_dims;
    }
    else {
        self->dims = PyMem_New(Py_ssize_t, 2 * (size_t)nd);
        if (self->dims == NULL) {
            Py_DECREF(self);
            return PyErr_NoMemory();
        }
    }
    /* Strides of a zero-sized dimension follow numpy (computed as if it were 1)
     * so consumers comparing strides see the usual C-contiguous layout. */
    Py_ssize_t stride = te_dtype_itemsize(dt);
    for (int32_t i = nd - 1; i >= 0; i--) {
        if (shape[i] < 0) {
            Py_DECREF(self);
            PyErr_SetString(PyExc_RuntimeError,
                            "tensor engine returned a negative dimension");
            return NULL;
        }
        self->dims[i] = (Py_ssize_t)shape[i];
        self->dims[nd + i] = stride;
        stride *= shape[i] > 1 ? (Py_ssize_t)shape[i] : 1;
    }
    return (PyObject *)self;
}

static void
Tensor_dealloc(TensorObject *self)
{
    if (self->handle != NULL) {
        te_tensor_release(self->handle);
        self->handle = NULL;
    }
    if (self->dims != NULL && self->dims != self->inline_dims) {
        PyMem_Free(self->dims);
    }
    self->dims = NULL;
    Py_CLEAR(self->shape_tuple);
    if (self->weaklist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    Py_CLEAR(self->dict);
    /* An instance of a heap type holds a reference to it, which the dealloc
     * of the first heap type whose dealloc is this one drops (a Python
     * subclass's subtype_dealloc drops it only when its base is static). */
    PyTypeObject *tp = Py_TYPE(self), *own = tp;
    while (own->tp_dealloc != (destructor)Tensor_dealloc) {
        own = own->tp_base;
    }
    int drop_type = (own->tp_flags & Py_TPFLAGS_HEAPTYPE) != 0;
    if (tp == tensor_class && tensor_class_reusable && n_tensor_free < TENSOR_FREELIST) {
        tensor_free[n_tensor_free++] = self;
    }
    else {
        /* Subclass instances may be GC objects; their type's tp_free knows. */
        tp->tp_free((PyObject *)self);
    }
    if (drop_type) {
        Py_DECREF(tp);
    }
}

static PyObject *
Tensor_get_shape(TensorObject *self, void *closure)
{
    if (self->shape_tuple == NULL) {
        PyObject *t = PyTuple_New(self->ndim);
        if (t == NULL) {
            return NULL;
        }
        for (int32_t i = 0; i < self->ndim; i++) {
            PyObject *d = PyLong_FromSsize_t(self->dims[i]);
            if (d == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i, d);
        }
        self->shape_tuple = t;
    }
    return Py_NewRef(self->shape_tuple);
}

static PyObject *
Tensor_get_dtype(TensorObject *self, void *closure)
{
    return Py_NewRef(dtype_strs[self->dtype]);
}

static PyObject *
Tensor_get_ndim(TensorObject *self, void *closure)
{
    return PyLong_FromLong(self->ndim);
}

static PyObject *
Tensor_get_size(TensorObject *self, void *closure)
{
    return PyLong_FromLongLong(te_tensor_size(self->handle));
}

static PyObject *
Tensor_get_nbytes(TensorObject *self, void *closure)
{
    return PyLong_FromLongLong(te_tensor_nbytes(self->handle));
}

static PyObject *
Tensor_get_itemsize(TensorObject *self, void *closure)
{
    return PyLong_FromLong(te_dtype_itemsize(self->dtype));
}

static PyObject *
Tensor_get_requires_grad(TensorObject *self, void *closure)
{
    return PyBool_FromLong(te_requires_grad(self->handle));
}

static int
Tensor_set_requires_grad(TensorObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete requires_grad");
        return -1;
    }
    int flag = PyObject_IsTrue(value);
    if (flag < 0) {
        return -1;
    }
    te_status st = te_set_requires_grad(self->handle, flag);
    if (st != TE_OK) {
        set_engine_error(st);
        return -1;
    }
    return 0;
}

static PyObject *
Tensor_get_handle(TensorObject *self, void *closure)
{
    return PyLong_FromVoidPtr((void *)self->handle);
}

static PyGetSetDef Tensor_getset[] = {
    {"shape", (getter)Tensor_get_shape, NULL, "Dimensions, a tuple of ints.", NULL},
    {"dtype", (getter)Tensor_get_dtype, NULL, "Element type name, e.g. 'float32'.", NULL},
    {"ndim", (getter)Tensor_get_ndim, NULL, "Number of dimensions.", NULL},
    {"size", (getter)Tensor_get_size, NULL, "Number of elements.", NULL},
    {"nbytes", (getter)Tensor_get_nbytes, NULL, "Bytes of element storage.", NULL},
    {"itemsize", (getter)Tensor_get_itemsize, NULL, "Bytes per element.", NULL},
    {"requires_grad", (getter)Tensor_get_requires_grad, (setter)Tensor_set_requires_grad,
     "Whether tapes record ops on this tensor (an autodiff leaf).", NULL},
    {"_handle", (getter)Tensor_get_handle, NULL,
     "Address of the engine handle: equal for the same engine tensor.", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyObject *
Tensor_repr(TensorObject *self)
{
    PyObject *shape = Tensor_get_shape(self, NULL);
    if (shape == NULL) {
        return NULL;
    }
    const char *name = Py_TYPE(self)->tp_name;
    const char *dot = strrchr(name, '.');
    PyObject *r = PyUnicode_FromFormat("<%s shape=%R dtype=%s>", dot ? dot + 1 : name,
                                       shape, dtype_names[self->dtype]);
    Py_DECREF(shape);
    return r;
}

/* A C-contiguous array is also Fortran-contiguous when at most one dimension
 * is longer than 1 (or it is empty). */
static int
Tensor_is_f_contiguous(TensorObject *self)
{
    int long_dims = 0;
    for (int32_t i = 0; i < self->ndim; i++) {
        if (self->dims[i] == 0) {
            return 1;
        }
        if (self->dims[i] > 1) {
            long_dims++;
        }
    }
    return long_dims <= 1;
}

/* Any non-NULL address will do for an empty buffer; consumers never read it. */
static char empty_buffer[1];

static int
Tensor_getbuffer(TensorObject *self, Py_buffer *view, int flags)
{
    view->obj = NULL;
    /* Engine storage may be shared between tensors (reshape), and tensors are
     * immutable, so nobody may write through an exported view. */
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "Tensor storage is read-only");
        return -1;
    }
    if ((flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS &&
        !Tensor_is_f_contiguous(self)) {
        PyErr_SetString(PyExc_BufferError, "Tensor storage is C-contiguous, not Fortran");
        return -1;
    }
    /* bfloat16 and float8 have no buffer format code: a typed request would hand
     * numpy raw unsigned ints, so refuse it (numpy then falls back to __array__);
     * flat byte requests, as numpy.frombuffer makes, still get the storage. */
    if ((self->dtype == TE_BFLOAT16 || self->dtype == TE_FLOAT8_E4M3FN ||
         self->dtype == TE_FLOAT8_E5M2) &&
        (flags & PyBUF_FORMAT) == PyBUF_FORMAT) {
        PyErr_Format(PyExc_BufferError,
                     "%s tensors export no typed buffer; use numpy.asarray(t) or "
                     "numpy.frombuffer(t, ml_dtypes.%s)",
                     dtype_names[self->dtype], dtype_names[self->dtype]);
        return -1;
    }
    int64_t nbytes = te_tensor_nbytes(self->handle);
    const void *data = te_tensor_data(self->handle);
    if (data == NULL) {
        if (nbytes != 0) {
            PyErr_SetString(PyExc_BufferError, "tensor engine returned no storage");
            return -1;
        }
        data = empty_buffer;
    }
    view->buf = (void *)data;
    view->obj = Py_NewRef((PyObject *)self);
    view->len = (Py_ssize_t)nbytes;
    view->readonly = 1;
    view->itemsize = te_dtype_itemsize(self->dtype);
    view->format = (flags & PyBUF_FORMAT) ? (char *)dtype_formats[self->dtype] : NULL;
    if ((flags & PyBUF_ND) == PyBUF_ND) {
        view->ndim = self->ndim;
        view->shape = self->ndim ? self->dims : NULL;
    }
    else {
        /* A simple request gets flat bytes (CPython's convention for them). */
        view->ndim = 1;
        view->shape = NULL;
    }
    view->strides =
        ((flags & PyBUF_STRIDES) == PyBUF_STRIDES && view->shape != NULL)
            ? self->dims + self->ndim
            : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    return 0;
}

static PyBufferProcs Tensor_as_buffer = {
    .bf_getbuffer = (getbufferproc)Tensor_getbuffer,
    .bf_releasebuffer = NULL, /* view->obj keeps everything the view points to */
};

PyDoc_STRVAR(Tensor_doc,
"An immutable n-dimensional array held by the Swift tensor engine.\n\n"
"Tensors are only created by this module (from_buffer, op, gradient); the\n"
"class cannot be instantiated from Python. Subclasses registered with\n"
"set_tensor_class() become the type of every tensor created afterwards.\n"
"The buffer protocol gives a read-only, zero-copy, C-contiguous view.");

static PyTypeObject TensorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_swiftkeras._C.Tensor",
    .tp_doc = Tensor_doc,
    .tp_basicsize = sizeof(TensorObject),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .tp_new = NULL,
    .tp_dealloc = (destructor)Tensor_dealloc,
    .tp_dictoffset = offsetof(TensorObject, dict),
    .tp_weaklistoffset = offsetof(TensorObject, weaklist),
    .tp_repr = (reprfunc)Tensor_repr,
    .tp_getset = Tensor_getset,
    .tp_as_buffer = &Tensor_as_buffer,
};

/* -------------------------------------------------------------------------- */
/* Argument helpers                                                            */
/* -------------------------------------------------------------------------- */

static int
dtype_from_name(PyObject *name, int32_t *out)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "dtype must be a str, not %.200s",
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    for (int32_t i = 0; i < N_DTYPES; i++) {
        if (name == dtype_strs[i] || PyUnicode_CompareWithASCIIString(name, dtype_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    PyErr_Format(PyExc_TypeError, "unsupported dtype %R", name);
    return -1;
}

/* Converts a Python sequence of Tensors into a tuple we own (so the objects,
 * and thus the handles, outlive a GIL-free engine call even if the caller's
 * list is mutated meanwhile) and an array of borrowed handles. The array is
 * `small` when it fits, else heap memory the caller frees with PyMem_Free when
 * it differs from `small`. */
static PyObject *
collect_tensors(PyObject *seq, const char *what, PyObject *opname, te_tensor *small,
                Py_ssize_t small_cap, te_tensor **handles, int32_t *count)
{
    /* Error messages name the op (or gradient()); `opname` is only formatted
     * on failure, keeping string work off the success path. */
    *handles = NULL;
    *count = 0;
    if (Tensor_Check(seq) || PyUnicode_Check(seq) || PyBytes_Check(seq) ||
        !PySequence_Check(seq)) {
        if (opname != NULL) {
            PyErr_Format(PyExc_TypeError, "op %R: %s must be a sequence of Tensors, not %.200s",
                         opname, what, Py_TYPE(seq)->tp_name);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "gradient(): %s must be a sequence of Tensors, not %.200s", what,
                         Py_TYPE(seq)->tp_name);
        }
        return NULL;
    }
    PyObject *tuple = PySequence_Tuple(seq);
    if (tuple == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    if (n > INT32_MAX) {
        Py_DECREF(tuple);
        PyErr_Format(PyExc_ValueError, "too many %s (%zd)", what, n);
        return NULL;
    }
    te_tensor *arr = small;
    if (n > small_cap) {
        arr = PyMem_New(te_tensor, (size_t)n);
        if (arr == NULL) {
            Py_DECREF(tuple);
            PyErr_NoMemory();
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (!Tensor_Check(item)) {
            if (opname != NULL) {
                PyErr_Format(PyExc_TypeError, "op %R: %s[%zd] must be a Tensor, not %.200s",
                             opname, what, i, Py_TYPE(item)->tp_name);
            }
            else {
                PyErr_Format(PyExc_TypeError, "gradient(): %s[%zd] must be a Tensor, not %.200s",
                             what, i, Py_TYPE(item)->tp_name);
            }
            if (arr != small) {
                PyMem_Free(arr);
            }
            Py_DECREF(tuple);
            return NULL;
        }
        arr[i] = ((TensorObject *)item)->handle;
    }
    *handles = arr;
    *count = (int32_t)n;
    return tuple;
}

/* Builds a tuple of Tensors from engine outputs, stealing every handle in
 * outs[0..n) whatever happens. */
static PyObject *
wrap_outputs(te_tensor *outs, int32_t n)
{
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) {
        for (int32_t i = 0; i < n; i++) {
            te_tensor_release(outs[i]);
        }
        return NULL;
    }
    for (int32_t i = 0; i < n; i++) {
        PyObject *t = wrap_handle(outs[i]);
        outs[i] = NULL;
        if (t == NULL) {
            for (int32_t j = i + 1; j < n; j++) {
                te_tensor_release(outs[j]);
                outs[j] = NULL;
            }
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, t);
    }
    return tuple;
}

/* numpy.bool is neither a bool nor an int subclass, and has no __index__;
 * recognising it by name keeps numpy out of this module's dependencies. */
static int
is_numpy_bool(PyObject *v)
{
    const char *name = Py_TYPE(v)->tp_name;
    return strcmp(name, "numpy.bool") == 0 || strcmp(name, "numpy.bool_") == 0;
}

static int
has_float(PyObject *v)
{
    PyNumberMethods *nb = Py_TYPE(v)->tp_as_number;
    return nb != NULL && nb->nb_float != NULL;
}

/* Integer-like: Python ints and bools, and anything with __index__ (numpy
 * integers, 0-d integer tensors). */
static int
is_int_like(PyObject *v)
{
    return PyLong_Check(v) || is_numpy_bool(v) || PyIndex_Check(v);
}

static int
as_int64(PyObject *v, const char *attr, int64_t *out)
{
    PyObject *num;
    /* Python ints (and bools) first: nearly every int attribute is one, and
     * the numpy-bool test costs two strcmp calls. */
    if (PyLong_Check(v)) {
        num = Py_NewRef(v);
    }
    else if (is_numpy_bool(v)) {
        int b = PyObject_IsTrue(v);
        if (b < 0) {
            return -1;
        }
        *out = b;
        return 0;
    }
    else {
        num = PyNumber_Index(v);
        if (num == NULL) {
            return -1;
        }
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(num, &overflow);
    Py_DECREF(num);
    if (overflow != 0) {
        PyErr_Format(PyExc_ValueError, "attribute '%s': integer %R does not fit in int64",
                     attr, v);
        return -1;
    }
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)x;
    return 0;
}

static int
as_double(PyObject *v, const char *attr, double *out)
{
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "attribute '%s': %R does not fit in a double", attr, v);
        }
        return -1;
    }
    *out = x;
    return 0;
}

/* Everything an op call borrows or allocates for its attributes, released in
 * one place whatever path the call takes. */
typedef struct {
    te_attr small[SMALL_ATTRS];
    PyObject *small_refs[3 * SMALL_ATTRS];
    int64_t ints[INLINE_INTS]; /* lists of exact ints (axes, shapes), packed */
    Py_ssize_t n_ints;
    te_attr *attrs;
    PyObject **refs; /* per attribute: key, value, list snapshot (or NULL) */
    Py_ssize_t n_refs;
    int32_t n;
} AttrSet;

/* Converts a list/tuple value. Ints stay exact unless a float is present,
 * in which case every element becomes a double. */
static int
convert_list(PyObject *value, const char *attr, te_attr *a)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
    PyObject **items = PySequence_Fast_ITEMS(value);
    int any_float = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = items[i];
        if (PyBool_Check(e) || is_int_like(e)) {
            continue;
        }
        if (PyFloat_Check(e) || has_float(e)) {
            any_float = 1;
            continue;
        }
        PyErr_Format(PyExc_TypeError,
                     "attribute '%s': list elements must be ints or floats, "
                     "element %zd is %.200s",
                     attr, i, Py_TYPE(e)->tp_name);
        return -1;
    }
    a->n = (int64_t)n;
    if (!any_float) {
        a->kind = TE_ATTR_INTS;
        if (n == 0) {
            return 0;
        }
        int64_t *ints = PyMem_New(int64_t, (size_t)n);
        if (ints == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        a->ints = ints; /* owned from here: the cleanup path frees it */
        for (Py_ssize_t i = 0; i < n; i++) {
            if (as_int64(items[i], attr, &ints[i]) < 0) {
                return -1;
            }
        }
        return 0;
    }
    a->kind = TE_ATTR_FLOATS;
    double *floats = PyMem_New(double, (size_t)n);
    if (floats == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    a->floats = floats;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (as_double(items[i], attr, &floats[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
convert_bool(PyObject *value, te_attr *a)
{
    int b = PyObject_IsTrue(value);
    if (b < 0) {
        return -1;
    }
    a->kind = TE_ATTR_BOOL;
    a->i = b;
    return 1;
}

/* A list or tuple of exact ints into the set's inline buffer, read in place:
 * no element can run Python code, so nothing can change the list meanwhile.
 * Returns 0 (leaving `a` untouched) for anything else, which convert_list
 * then handles with its snapshot, or to raise its error. */
static int
inline_ints(AttrSet *set, PyObject *value, te_attr *a)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(value);
    if (n == 0 || n > INLINE_INTS - set->n_ints) {
        return 0;
    }
    PyObject **items = PySequence_Fast_ITEMS(value);
    int64_t *out = set->ints + set->n_ints;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyLong_CheckExact(items[i])) {
            return 0;
        }
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(items[i], &overflow);
        if (overflow != 0) {
            return 0;
        }
        out[i] = (int64_t)x;
    }
    set->n_ints += n;
    a->kind = TE_ATTR_INTS;
    a->ints = out;
    a->n = (int64_t)n;
    return 1;
}

/* Fills one te_attr. `value` must stay alive (and `list_ref` receives a new
 * reference that must too) while the record is in use: string pointers point
 * into Python objects. Returns 1 when filled, 0 when the value is None (the
 * attribute is omitted), -1 on error. */
static int
convert_attr(const char *name, PyObject *value, AttrSet *set, te_attr *a, PyObject **list_ref)
{
    memset(a, 0, sizeof(*a));
    a->name = name;
    if (value == Py_None) {
        return 0;
    }
    /* bool before int: bool is an int subclass. numpy.bool is neither, and is
     * recognised by name after the common types, keeping strcmp off their path. */
    if (PyBool_Check(value)) {
        return convert_bool(value, a);
    }
    if (PyLong_Check(value)) {
        a->kind = TE_ATTR_INT;
        return as_int64(value, name, &a->i) < 0 ? -1 : 1;
    }
    if (PyFloat_Check(value)) {
        a->kind = TE_ATTR_FLOAT;
        a->f = PyFloat_AS_DOUBLE(value);
        return 1;
    }
    if (PyUnicode_Check(value)) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(value, &len);
        if (s == NULL) {
            return -1;
        }
        if ((size_t)len != strlen(s)) {
            PyErr_Format(PyExc_ValueError, "attribute '%s': string contains a NUL character",
                         name);
            return -1;
        }
        a->kind = TE_ATTR_STRING;
        a->s = s;
        return 1;
    }
    if (PyList_Check(value) || PyTuple_Check(value)) {
        if (inline_ints(set, value, a)) {
            return 1;
        }
        /* Converting an element may run Python code (__index__, __float__)
         * that mutates a list; iterate over a tuple snapshot instead. The
         * engine then reads our own int64/double copy, never the list. */
        PyObject *fast = PySequence_Tuple(value);
        if (fast == NULL) {
            return -1;
        }
        *list_ref = fast;
        return convert_list(fast, name, a) < 0 ? -1 : 1;
    }
    if (is_numpy_bool(value)) {
        return convert_bool(value, a);
    }
    if (is_int_like(value)) {
        a->kind = TE_ATTR_INT;
        return as_int64(value, name, &a->i) < 0 ? -1 : 1;
    }
    if (has_float(value)) {
        a->kind = TE_ATTR_FLOAT;
        return as_double(value, name, &a->f) < 0 ? -1 : 1;
    }
    PyErr_Format(PyExc_TypeError,
                 "attribute '%s' must be a bool, int, float, str, list/tuple of numbers "
                 "or None, not %.200s",
                 name, Py_TYPE(value)->tp_name);
    return -1;
}

static void
attrs_free(AttrSet *set)
{
    if (set->attrs != NULL) {
        for (int32_t i = 0; i < set->n; i++) {
            const int64_t *ints = set->attrs[i].ints;
            if (ints < set->ints || ints >= set->ints + INLINE_INTS) {
                PyMem_Free((void *)ints);
            }
            PyMem_Free((void *)set->attrs[i].floats);
        }
        if (set->attrs != set->small) {
            PyMem_Free(set->attrs);
        }
    }
    if (set->refs != NULL) {
        for (Py_ssize_t i = 0; i < set->n_refs; i++) {
            Py_XDECREF(set->refs[i]);
        }
        if (set->refs != set->small_refs) {
            PyMem_Free(set->refs);
        }
    }
    set->attrs = NULL;
    set->refs = NULL;
    set->n = 0;
    set->n_refs = 0;
    set->n_ints = 0;
}

/* Sizes `set` for n attributes (n > 0): stack arrays when they fit. */
static int
attrs_reserve(AttrSet *set, Py_ssize_t n)
{
    if (n > INT32_MAX / 4) {
        PyErr_SetString(PyExc_ValueError, "too many attributes");
        return -1;
    }
    if (n <= SMALL_ATTRS) {
        set->attrs = set->small;
        set->refs = set->small_refs;
    }
    else {
        set->attrs = PyMem_New(te_attr, (size_t)n);
        set->refs = PyMem_New(PyObject *, 3 * (size_t)n);
        if (set->attrs == NULL || set->refs == NULL) {
            PyMem_Free(set->attrs);
            PyMem_Free(set->refs);
            set->attrs = NULL;
            set->refs = NULL;
            PyErr_NoMemory();
            return -1;
        }
    }
    memset(set->attrs, 0, (size_t)n * sizeof(te_attr));
    return 0;
}

/* Holds the k-th (name, value) pair for attrs_fill: references the caller's
 * containers cannot take away while values are converted. */
static void
attrs_hold(AttrSet *set, Py_ssize_t k, PyObject *key, PyObject *value)
{
    set->refs[3 * k] = Py_NewRef(key);
    set->refs[3 * k + 1] = Py_NewRef(value);
    set->refs[3 * k + 2] = NULL;
}

/* Converts the k (name, value) pairs already referenced in set->refs. */
static int
attrs_fill(AttrSet *set, Py_ssize_t k)
{
    set->n_refs = 3 * k;
    int32_t filled = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *key = set->refs[3 * i];
        PyObject *value = set->refs[3 * i + 1];
        if (!PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "attribute names must be str, not %.200s",
                         Py_TYPE(key)->tp_name);
            goto fail;
        }
        Py_ssize_t name_len;
        const char *name = PyUnicode_AsUTF8AndSize(key, &name_len);
        if (name == NULL) {
            goto fail;
        }
        if ((size_t)name_len != strlen(name)) {
            PyErr_SetString(PyExc_ValueError, "attribute name contains a NUL character");
            goto fail;
        }
        /* Count the slot as used before converting, so a half-converted list
         * buffer is freed by attrs_free. */
        set->n = filled + 1;
        int r = convert_attr(name, value, set, &set->attrs[filled], &set->refs[3 * i + 2]);
        if (r < 0) {
            goto fail;
        }
        if (r > 0) {
            filled++;
        }
        set->n = filled;
    }
    return 0;

fail:
    attrs_free(set);
    return -1;
}

static void
attrs_init(AttrSet *set)
{
    set->attrs = NULL;
    set->refs = NULL;
    set->n = 0;
    set->n_refs = 0;
    set->n_ints = 0;
}

/* Attributes from a dict (op()) or None. */
static int
attrs_convert(PyObject *dict, AttrSet *set)
{
    attrs_init(set);
    if (dict == NULL || dict == Py_None) {
        return 0;
    }
    if (!PyDict_Check(dict)) {
        PyErr_Format(PyExc_TypeError, "attrs must be a dict or None, not %.200s",
                     Py_TYPE(dict)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyDict_GET_SIZE(dict);
    if (n == 0) {
        return 0;
    }
    if (attrs_reserve(set, n) < 0) {
        return -1;
    }
    /* Snapshot keys and values first: converting a value may run Python code
     * (__index__, __float__) that could mutate the dict under PyDict_Next. */
    Py_ssize_t pos = 0, k = 0;
    PyObject *key, *value;
    while (k < n && PyDict_Next(dict, &pos, &key, &value)) {
        attrs_hold(set, k, key, value);
        k++;
    }
    return attrs_fill(set, k);
}

/* Attributes from keyword arguments (call()): names in `kwnames`, values
 * after them in the vectorcall array. No dict is built. */
static int
attrs_convert_kw(PyObject *kwnames, PyObject *const *values, AttrSet *set)
{
    attrs_init(set);
    Py_ssize_t n = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (n == 0) {
        return 0;
    }
    if (attrs_reserve(set, n) < 0) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        attrs_hold(set, k, PyTuple_GET_ITEM(kwnames, k), values[k]);
    }
    return attrs_fill(set, n);
}

/* Minimal METH_FASTCALL|METH_KEYWORDS parser: op() is on every Keras op's
 * path, and PyArg_ParseTupleAndKeywords would cost more than the call itself
 * for small tensors. */
static int
parse_fast(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           const char *const *names, int n_names, int n_required, PyObject **out)
{
    for (int i = 0; i < n_names; i++) {
        out[i] = NULL;
    }
    if (nargs > n_names) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname,
                     n_names, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, j);
        int found = -1;
        for (int i = 0; i < n_names; i++) {
            if (PyUnicode_CompareWithASCIIString(kw, names[i]) == 0) {
                found = i;
                break;
            }
        }
        if (found < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R",
                         fname, kw);
            return -1;
        }
        if (out[found] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[found]);
            return -1;
        }
        out[found] = args[nargs + j];
    }
    for (int i = 0; i < n_required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* -------------------------------------------------------------------------- */
/* Module functions                                                            */
/* -------------------------------------------------------------------------- */

/* Empties the free list (its objects were sized for the previous class) and
 * decides whether the current class's instances may be reused. */
static void
tensor_class_refresh(void)
{
    while (n_tensor_free > 0) {
        PyObject_Free(tensor_free[--n_tensor_free]);
    }
    PyTypeObject *cls = tensor_class;
    tensor_class_reusable = cls->tp_dealloc == (destructor)Tensor_dealloc &&
                            cls->tp_free == PyObject_Free &&
                            !(cls->tp_flags & Py_TPFLAGS_HAVE_GC);
}

PyDoc_STRVAR(set_tensor_class_doc,
"set_tensor_class(cls)\n--\n\n"
"Make every tensor created from now on an instance of cls, a subclass of\n"
"Tensor. Tensors created earlier keep their class.");

static PyObject *
py_set_tensor_class(PyObject *mod, PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &TensorType)) {
        PyErr_Format(PyExc_TypeError, "set_tensor_class() needs a subclass of Tensor, not %R",
                     cls);
        return NULL;
    }
    /* wrap_handle fills the object through the C layout, so a subclass must
     * not have reshaped it (it cannot from Python, but a C subclass could). */
    if (((PyTypeObject *)cls)->tp_itemsize != 0) {
        PyErr_SetString(PyExc_TypeError, "set_tensor_class() needs a fixed-size subclass");
        return NULL;
    }
    Py_INCREF(cls);
    Py_SETREF(tensor_class, (PyTypeObject *)cls);
    tensor_class_refresh();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tensor_subclass_doc,
"tensor_subclass(name)\n--\n\n"
"A new subclass of Tensor named `name` ('module.Class'), to which Python adds\n"
"methods with setattr. Unlike a class statement's subclass, its instances are\n"
"not tracked by the garbage collector: a tensor refers to nothing but its\n"
"engine handle and whatever is set in its __dict__, and skipping the GC\n"
"costs less on every op. A reference cycle through a tensor's __dict__ is\n"
"not collected, and a __del__ added to the class is not called.");

static PyObject *
py_tensor_subclass(PyObject *mod, PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "tensor_subclass() needs a str name");
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8(name);
    if (s == NULL) {
        return NULL;
    }
#if PY_VERSION_HEX < 0x030B0000
    /* Before 3.11 the type points at the spec's name instead of copying it;
     * such a type lives as long as the process, and so does this copy. */
    size_t len = strlen(s) + 1;
    char *copy = PyMem_RawMalloc(len);
    if (copy == NULL) {
        return PyErr_NoMemory();
    }
    s = memcpy(copy, s, len);
#endif
    /* Tensor_dealloc itself rather than the subtype_dealloc a spec type gets by
     * default: the class adds no slots to clear, and its instances can then be reused. */
    PyType_Slot slots[] = {{Py_tp_dealloc, (void *)Tensor_dealloc}, {0, NULL}};
    PyType_Spec spec = {
        .name = s,
        .basicsize = 0,
        .itemsize = 0,
        .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
        .slots = slots,
    };
    return PyType_FromSpecWithBases(&spec, (PyObject *)&TensorType);
}

PyDoc_STRVAR(get_tensor_class_doc,
"get_tensor_class()\n--\n\n"
"The class new tensors are created with.");

static PyObject *
py_get_tensor_class(PyObject *mod, PyObject *unused)
{
    return Py_NewRef((PyObject *)tensor_class);
}

PyDoc_STRVAR(from_buffer_doc,
"from_buffer(obj, dtype)\n--\n\n"
"Copy the contents of obj, any object exposing the buffer protocol, into a\n"
"new tensor of the given dtype name. The shape is the buffer's shape; its\n"
"item size must equal the dtype's (bfloat16 data may come as uint16 or as\n"
"an ml_dtypes bfloat16 array). Non-contiguous buffers are copied in C order.");

static PyObject *
py_from_buffer(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"obj", "dtype", NULL};
    PyObject *obj, *dtype_name;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:from_buffer", kwlist, &obj,
                                     &dtype_name)) {
        return NULL;
    }
    int32_t dt;
    if (dtype_from_name(dtype_name, &dt) < 0) {
        return NULL;
    }
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "from_buffer() needs an object with the buffer protocol, not %.200s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }

    /* The format is deliberately not requested: only the item size matters
     * here, and numpy refuses to describe dtypes such as ml_dtypes' bfloat16
     * in a format string while happily exporting their bytes. */
    Py_buffer view;
    void *copy = NULL;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError) &&
            !PyErr_ExceptionMatches(PyExc_ValueError)) {
            return NULL;
        }
        /* Strided exporters (sliced numpy arrays) refuse contiguous requests;
         * take any layout and gather it into C order ourselves. */
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, &view, PyBUF_INDIRECT) < 0) {
            return NULL;
        }
        if (!PyBuffer_IsContiguous(&view, 'C')) {
            copy = PyMem_Malloc(view.len > 0 ? (size_t)view.len : 1);
            if (copy == NULL) {
                PyBuffer_Release(&view);
                return PyErr_NoMemory();
            }
            if (PyBuffer_ToContiguous(copy, &view, view.len, 'C') < 0) {
                PyMem_Free(copy);
                PyBuffer_Release(&view);
                return NULL;
            }
        }
    }

    PyObject *result = NULL;
    int32_t itemsize = te_dtype_itemsize(dt);
    if (view.itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError,
                     "from_buffer(): buffer items are %zd bytes but %s needs %d",
                     view.itemsize, dtype_names[dt], (int)itemsize);
        goto done;
    }
    if (view.ndim < 0 || view.ndim > MAX_RANK) {
        PyErr_Format(PyExc_ValueError, "from_buffer(): rank %d is out of range [0, %d]",
                     view.ndim, MAX_RANK);
        goto done;
    }
    int64_t shape[MAX_RANK];
    int32_t ndim = view.ndim;
    if (view.shape == NULL) {
        /* Shapeless exporters describe flat data; rank 0 stays a scalar. */
        if (ndim > 1) {
            PyErr_SetString(PyExc_ValueError, "from_buffer(): buffer has no shape");
            goto done;
        }
        if (ndim == 1) {
            shape[0] = (int64_t)(view.len / itemsize);
        }
    }
    else {
        for (int32_t i = 0; i < ndim; i++) {
            shape[i] = (int64_t)view.shape[i];
        }
    }

    const void *src = copy != NULL ? copy : view.buf;
    te_tensor h = NULL;
    te_status st;
    if (view.len >= NOGIL_COPY_BYTES) {
        /* The exporter stays pinned by `view` (numpy refuses to resize an
         * exported array), so the bytes stay valid without the GIL. */
        Py_BEGIN_ALLOW_THREADS
        st = te_tensor_create(dt, shape, ndim, src, (int64_t)view.len, &h);
        Py_END_ALLOW_THREADS
    }
    else {
        st = te_tensor_create(dt, shape, ndim, src, (int64_t)view.len, &h);
    }
    if (st != TE_OK) {
        set_engine_error(st);
        goto done;
    }
    result = wrap_handle(h);

done:
    PyMem_Free(copy);
    PyBuffer_Release(&view);
    return result;
}

/* Op handles by name; failures are not cached so a later registration (or a
 * typo fixed in a retry) is seen. */
static int
lookup_op(PyObject *name, int32_t *op)
{
    PyObject *cached = PyDict_GetItemWithError(op_cache, name);
    if (cached != NULL) {
        *op = (int32_t)PyLong_AsLong(cached);
        return 0;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(name, &len);
    if (s == NULL) {
        return -1;
    }
    if ((size_t)len != strlen(s)) {
        PyErr_SetString(PyExc_ValueError, "op name contains a NUL character");
        return -1;
    }
    te_status st = te_op_lookup(s, op);
    if (st != TE_OK) {
        set_engine_error(st);
        return -1;
    }
    PyObject *v = PyLong_FromLong(*op);
    if (v == NULL) {
        return -1;
    }
    int r = PyDict_SetItem(op_cache, name, v);
    Py_DECREF(v);
    return r;
}

/* Runs op `op`, without the GIL unless `keep_gil`. On success fills
 * outs[0..*n_out) with handles the caller owns and returns 0; on failure sets
 * the Python error and returns -1. */
static int
run_op(PyObject *name, int32_t op, te_tensor *in_handles, int32_t n_in, AttrSet *attrs,
       te_tensor *outs, int32_t *n_out, int keep_gil)
{
    *n_out = 0;
    PyThreadState *released = keep_gil ? NULL : PyEval_SaveThread();
    te_status st =
        te_op_call(op, in_handles, n_in, attrs->attrs, attrs->n, outs, MAX_OUTPUTS, n_out);
    if (released != NULL) {
        PyEval_RestoreThread(released);
    }

    if (st == TE_OK && *n_out >= 0 && *n_out <= MAX_OUTPUTS) {
        return 0;
    }
    /* A failed call hands out no outputs (tensor_engine.h). */
    if (st != TE_OK) {
        set_engine_error(st);
    }
    else {
        PyErr_Format(PyExc_RuntimeError, "op %R reported %d outputs", name, (int)*n_out);
    }
    *n_out = 0;
    return -1;
}

/* The first of run_op's outputs as a Tensor; the others are released. */
static PyObject *
first_output(PyObject *name, te_tensor *outs, int32_t n_out)
{
    if (n_out == 0) {
        PyErr_Format(PyExc_RuntimeError, "op %R returned no outputs", name);
        return NULL;
    }
    for (int32_t i = 1; i < n_out; i++) {
        te_tensor_release(outs[i]);
    }
    return wrap_handle(outs[0]);
}

PyDoc_STRVAR(op_doc,
"op(name, inputs, attrs=None)\n--\n\n"
"Run the engine op `name` on a sequence of Tensors with a dict of\n"
"attributes and return its outputs as a tuple of Tensors.\n\n"
"Attribute values: bool, int (or numpy integer), float (or numpy floating),\n"
"str, list/tuple of ints (ints) or of numbers with a float (floats); None\n"
"omits the attribute. Engine errors raise ValueError (bad values/shapes),\n"
"TypeError (dtypes), IndexError (indices) or NotImplementedError.");

static PyObject *
py_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"name", "inputs", "attrs"};
    PyObject *a[3];
    if (parse_fast("op", args, nargs, kwnames, names, 3, 2, a) < 0) {
        return NULL;
    }
    PyObject *name = a[0], *inputs = a[1], *attr_dict = a[2];
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "op() name must be a str, not %.200s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    int32_t op;
    if (lookup_op(name, &op) < 0) {
        return NULL;
    }

    te_tensor small_inputs[SMALL_INPUTS];
    te_tensor *in_handles;
    int32_t n_in;
    PyObject *keep_inputs = collect_tensors(inputs, "inputs", name, small_inputs,
                                            SMALL_INPUTS, &in_handles, &n_in);
    if (keep_inputs == NULL) {
        return NULL;
    }

    PyObject *result = NULL;
    AttrSet attrs;
    if (attrs_convert(attr_dict, &attrs) < 0) {
        goto done_inputs;
    }
    te_tensor outs[MAX_OUTPUTS];
    int32_t n_out;
    if (run_op(name, op, in_handles, n_in, &attrs, outs, &n_out, 0) == 0) {
        result = wrap_outputs(outs, n_out);
    }
    attrs_free(&attrs);

done_inputs:
    if (in_handles != small_inputs) {
        PyMem_Free(in_handles);
    }
    Py_DECREF(keep_inputs);
    return result;
}

PyDoc_STRVAR(call_doc,
"call(name, *inputs, **attrs)\n--\n\n"
"Run the engine op `name` on Tensors with keyword attributes and return its\n"
"first output: op(name, inputs, attrs)[0] without building the tuple, the\n"
"dict or the result tuple, since every backend op goes through here.");

static PyObject *
py_call(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "call() needs an op name (str) as first argument");
        return NULL;
    }
    PyObject *name = args[0];
    int32_t op;
    if (lookup_op(name, &op) < 0) {
        return NULL;
    }
    /* The caller's frame holds the inputs for the whole call, GIL-free part
     * included, so their handles can be borrowed without a tuple. */
    Py_ssize_t n_in = nargs - 1;
    if (n_in > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many inputs");
        return NULL;
    }
    te_tensor small_inputs[SMALL_INPUTS];
    te_tensor *in_handles = small_inputs;
    if (n_in > SMALL_INPUTS) {
        in_handles = PyMem_New(te_tensor, (size_t)n_in);
        if (in_handles == NULL) {
            return PyErr_NoMemory();
        }
    }
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < n_in; i++) {
        PyObject *item = args[1 + i];
        if (!Tensor_Check(item)) {
            PyErr_Format(PyExc_TypeError, "op %R: inputs[%zd] must be a Tensor, not %.200s",
                         name, i, Py_TYPE(item)->tp_name);
            goto done_inputs;
        }
        in_handles[i] = ((TensorObject *)item)->handle;
    }
    AttrSet attrs;
    if (attrs_convert_kw(kwnames, args + nargs, &attrs) < 0) {
        goto done_inputs;
    }
    te_tensor outs[MAX_OUTPUTS];
    int32_t n_out;
    if (run_op(name, op, in_handles, (int32_t)n_in, &attrs, outs, &n_out, 0) == 0) {
        result = first_output(name, outs, n_out);
    }
    attrs_free(&attrs);

done_inputs:
    if (in_handles != small_inputs) {
        PyMem_Free(in_handles);
    }
    return result;
}

/* -------------------------------------------------------------------------- */
/* Dispatch                                                                    */
/* -------------------------------------------------------------------------- */

/* A callable that runs `dense(*args, **kwargs)` unless a data argument is an
 * instance of `cls` (the backend's SparseTensor), in which case it runs
 * `handler(dense, *args, **kwargs)`. It replaces a Python wrapper whose
 * argument packing cost as much as a small op on every hot backend call.
 * The data arguments, by `mode`: the first positional one (DISPATCH_FIRST),
 * the first two (DISPATCH_PAIR), or the items of the first (DISPATCH_ITEMS);
 * keyword values too when fewer are passed positionally. */
enum { DISPATCH_FIRST = 0, DISPATCH_PAIR = 1, DISPATCH_ITEMS = 2 };

typedef struct {
    PyObject_HEAD
    PyObject *dense;
    PyObject *handler;
    PyObject *cls;
    PyObject *dict; /* functools.update_wrapper's attributes */
    int mode;
    vectorcallfunc vectorcall;
} DispatchObject;

static int
dispatch_hit(DispatchObject *self, PyObject *v)
{
    if (self->mode != DISPATCH_ITEMS) {
        return PyObject_TypeCheck(v, (PyTypeObject *)self->cls);
    }
    if (!PyList_Check(v) && !PyTuple_Check(v)) {
        return 0;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_TypeCheck(PySequence_Fast_ITEMS(v)[i], (PyTypeObject *)self->cls)) {
            return 1;
        }
    }
    return 0;
}

static PyObject *
Dispatch_vectorcall(DispatchObject *self, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    Py_ssize_t k = self->mode == DISPATCH_PAIR ? 2 : 1;
    Py_ssize_t total = nargs + nkw;

    /* handler(dense, *args, **kwargs) needs one slot in front; a generator
     * passed for DISPATCH_ITEMS becomes a tuple, so both calls see its items. */
    PyObject *small[16];
    PyObject **buf = small;
    if (total + 1 > 16) {
        buf = PyMem_New(PyObject *, (size_t)total + 1);
        if (buf == NULL) {
            return PyErr_NoMemory();
        }
    }
    memcpy(buf + 1, args, (size_t)total * sizeof(PyObject *));
    PyObject *items = NULL;
    PyObject *result = NULL;
    if (self->mode == DISPATCH_ITEMS && nargs >= 1 && !PyList_Check(args[0]) &&
        !PyTuple_Check(args[0]) && PyIter_Check(args[0])) {
        items = PySequence_Tuple(args[0]);
        if (items == NULL) {
            goto done;
        }
        buf[1] = items;
    }
    int hit = 0;
    for (Py_ssize_t i = 0; i < nargs && i < k && !hit; i++) {
        hit = dispatch_hit(self, buf[1 + i]);
    }
    for (Py_ssize_t i = nargs; i < total && nargs < k && !hit; i++) {
        hit = dispatch_hit(self, buf[1 + i]);
    }
    if (hit) {
        buf[0] = self->dense;
        result = PyObject_Vectorcall(self->handler, buf, (size_t)nargs + 1, kwnames);
    }
    else {
        result = PyObject_Vectorcall(self->dense, buf + 1,
                                     (size_t)nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames);
    }

done:
    Py_XDECREF(items);
    if (buf != small) {
        PyMem_Free(buf);
    }
    return result;
}

static PyObject *
Dispatch_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *dense, *handler, *cls;
    int mode;
    static char *kwlist[] = {"dense", "handler", "cls", "mode", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!i:Dispatch", kwlist, &dense,
                                     &handler, &PyType_Type, &cls, &mode)) {
        return NULL;
    }
    if (!PyCallable_Check(dense) || !PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "Dispatch: dense and handler must be callable");
        return NULL;
    }
    if (mode < DISPATCH_FIRST || mode > DISPATCH_ITEMS) {
        PyErr_Format(PyExc_ValueError, "Dispatch: mode must be 0, 1 or 2, not %d", mode);
        return NULL;
    }
    DispatchObject *self = (DispatchObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->dense = Py_NewRef(dense);
    self->handler = Py_NewRef(handler);
    self->cls = Py_NewRef(cls);
    self->dict = NULL;
    self->mode = mode;
    self->vectorcall = (vectorcallfunc)Dispatch_vectorcall;
    return (PyObject *)self;
}

static int
Dispatch_traverse(DispatchObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dense);
    Py_VISIT(self->handler);
    Py_VISIT(self->cls);
    Py_VISIT(self->dict);
    return 0;
}

static int
Dispatch_clear(DispatchObject *self)
{
    Py_CLEAR(self->dense);
    Py_CLEAR(self->handler);
    Py_CLEAR(self->cls);
    Py_CLEAR(self->dict);
    return 0;
}

static void
Dispatch_dealloc(DispatchObject *self)
{
    PyObject_GC_UnTrack(self);
    Dispatch_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyGetSetDef Dispatch_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Dispatch_doc,
"Dispatch(dense, handler, cls, mode)\n--\n\n"
"A callable running dense(*args, **kwargs), or handler(dense, *args, **kwargs)\n"
"when a data argument is an instance of cls: the first positional argument\n"
"(mode 0), the first two (mode 1) or the items of the first (mode 2).");

static PyTypeObject DispatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_swiftkeras._C.Dispatch",
    .tp_basicsize = sizeof(DispatchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = Dispatch_doc,
    .tp_new = Dispatch_new,
    .tp_dealloc = (destructor)Dispatch_dealloc,
    .tp_traverse = (traverseproc)Dispatch_traverse,
    .tp_clear = (inquiry)Dispatch_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(DispatchObject, vectorcall),
    .tp_dictoffset = offsetof(DispatchObject, dict),
    .tp_getset = Dispatch_getset,
};

/* -------------------------------------------------------------------------- */
/* Op                                                                          */
/* -------------------------------------------------------------------------- */

/* A backend function bound to one engine op: Op(fallback, name, params,
 * attrs) behaves exactly as the Python function `fallback`, whose body is
 * `op(name, *inputs, **{attr: param})` once its inputs are Tensors. When they
 * already are, the call goes straight to the engine (positional and keyword
 * parameters after the inputs become the named attributes); any other call
 * (a numpy input, a sparse tensor, an unknown keyword) runs `fallback`, which
 * holds the conversions and the error messages. For O(1) ops like transpose
 * the Python frame and the keyword dict cost more than the engine. */
#define OP_MAX_PARAMS 8

typedef struct {
    PyObject_HEAD
    PyObject *fallback;
    PyObject *name;   /* the engine op (str), for error messages */
    PyObject *params; /* tuple of str: the Python parameter names, inputs first */
    PyObject *attrs;  /* tuple of str: the engine attribute of each later parameter */
    PyObject *dict;   /* functools.update_wrapper's attributes */
    int32_t op;
    int n_inputs;
    int keep_gil; /* constant-time ops: releasing the GIL would cost more than the op */
    vectorcallfunc vectorcall;
} OpObject;

static Py_ssize_t
op_param_index(OpObject *self, PyObject *kw)
{
    Py_ssize_t n = PyTuple_GET_SIZE(self->params);
    /* Keyword names are interned, as are the parameter names: identity first. */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_ITEM(self->params, i) == kw) {
            return i;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int eq = PyUnicode_Compare(PyTuple_GET_ITEM(self->params, i), kw);
        if (eq == 0) {
            return i;
        }
        if (eq == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
    }
    return -1;
}

static PyObject *
Op_vectorcall(OpObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    Py_ssize_t n_params = PyTuple_GET_SIZE(self->params);
    int k = self->n_inputs;
    if (nargs < k || nargs > n_params) {
        goto slow;
    }
    te_tensor in_handles[OP_MAX_PARAMS];
    for (int i = 0; i < k; i++) {
        if (!Tensor_Check(args[i])) {
            goto slow;
        }
        in_handles[i] = ((TensorObject *)args[i])->handle;
    }
    /* values[j]: the argument of parameter k + j, if given. */
    PyObject *values[OP_MAX_PARAMS] = {NULL};
    for (Py_ssize_t i = k; i < nargs; i++) {
        values[i - k] = args[i];
    }
    for (Py_ssize_t j = 0; j < nkw; j++) {
        Py_ssize_t p = op_param_index(self, PyTuple_GET_ITEM(kwnames, j));
        if (p < k || values[p - k] != NULL) {
            goto slow;
        }
        values[p - k] = args[nargs + j];
    }

    AttrSet attrs;
    attrs_init(&attrs);
    Py_ssize_t n_attrs = n_params - k, given = 0;
    if (n_attrs > 0 && attrs_reserve(&attrs, n_attrs) < 0) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n_attrs; j++) {
        if (values[j] != NULL && values[j] != Py_None) {
            attrs_hold(&attrs, given++, PyTuple_GET_ITEM(self->attrs, j), values[j]);
        }
    }
    if (attrs_fill(&attrs, given) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    te_tensor outs[MAX_OUTPUTS];
    int32_t n_out;
    if (run_op(self->name, self->op, in_handles, k, &attrs, outs, &n_out, self->keep_gil) == 0) {
        result = first_output(self->name, outs, n_out);
    }
    attrs_free(&attrs);
    return result;

slow:
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

static int
str_tuple(PyObject *t, const char *what)
{
    if (!PyTuple_Check(t)) {
        PyErr_Format(PyExc_TypeError, "Op: %s must be a tuple of str", what);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(t, i))) {
            PyErr_Format(PyExc_TypeError, "Op: %s must be a tuple of str", what);
            return -1;
        }
    }
    return 0;
}

static PyObject *
Op_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *fallback, *name, *params, *attrs;
    int constant_time = 0;
    static char *kwlist[] = {"fallback", "name", "params", "attrs", "constant_time", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OUOO|$p:Op", kwlist, &fallback, &name,
                                     &params, &attrs, &constant_time)) {
        return NULL;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Op: fallback must be callable");
        return NULL;
    }
    if (str_tuple(params, "params") < 0 || str_tuple(attrs, "attrs") < 0) {
        return NULL;
    }
    Py_ssize_t n_params = PyTuple_GET_SIZE(params), n_attrs = PyTuple_GET_SIZE(attrs);
    if (n_params > OP_MAX_PARAMS || n_attrs > n_params) {
        PyErr_Format(PyExc_ValueError,
                     "Op: at most %d parameters, and no more attributes than parameters",
                     OP_MAX_PARAMS);
        return NULL;
    }
    int32_t op;
    if (lookup_op(name, &op) < 0) {
        return NULL;
    }
    OpObject *self = (OpObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->fallback = Py_NewRef(fallback);
    self->name = Py_NewRef(name);
    self->params = Py_NewRef(params);
    self->attrs = Py_NewRef(attrs);
    self->dict = NULL;
    self->op = op;
    self->n_inputs = (int)(n_params - n_attrs);
    self->keep_gil = constant_time;
    self->vectorcall = (vectorcallfunc)Op_vectorcall;
    return (PyObject *)self;
}

static int
Op_traverse(OpObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->dict);
    return 0;
}

static int
Op_clear(OpObject *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->name);
    Py_CLEAR(self->params);
    Py_CLEAR(self->attrs);
    Py_CLEAR(self->dict);
    return 0;
}

static void
Op_dealloc(OpObject *self)
{
    PyObject_GC_UnTrack(self);
    Op_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Op_get_fallback(OpObject *self, void *closure)
{
    return Py_NewRef(self->fallback);
}

static int
Op_set_fallback(OpObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Op.fallback must be callable");
        return -1;
    }
    Py_SETREF(self->fallback, Py_NewRef(value));
    return 0;
}

static PyGetSetDef Op_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {"fallback", (getter)Op_get_fallback, (setter)Op_set_fallback,
     "The Python function this op stands for; it runs every call the engine path does not "
     "take.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Op_doc,
"Op(fallback, name, params, attrs, *, constant_time=False)\n--\n\n"
"A callable equal to `fallback` whose calls with Tensor inputs run the engine\n"
"op `name` directly. `params` names fallback's parameters, the tensor inputs\n"
"first; `attrs` names the engine attribute of each parameter after them (a\n"
"None argument omits it). Other calls run `fallback`. A constant_time op\n"
"(one that only describes its output, like transpose) keeps the GIL: other\n"
"threads would gain nothing from its release, which costs more than the op.");

static PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_swiftkeras._C.Op",
    .tp_basicsize = sizeof(OpObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = Op_doc,
    .tp_new = Op_new,
    .tp_dealloc = (destructor)Op_dealloc,
    .tp_traverse = (traverseproc)Op_traverse,
    .tp_clear = (inquiry)Op_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(OpObject, vectorcall),
    .tp_dictoffset = offsetof(OpObject, dict),
    .tp_getset = Op_getset,
};

/* One string per registered op, in registry order, from an accessor of the C ABI. */
static PyObject *
op_strings(const char *(*get)(int32_t))
{
    int32_t n = te_op_count();
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (int32_t i = 0; i < n; i++) {
        const char *s = get(i);
        if (s == NULL) {
            continue;
        }
        PyObject *str = PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
        if (str == NULL || PyList_Append(list, str) < 0) {
            Py_XDECREF(str);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(str);
    }
    return list;
}

PyDoc_STRVAR(op_names_doc,
"op_names()\n--\n\n"
"Names of every op registered in the engine, in registry order.");

static PyObject *
py_op_names(PyObject *mod, PyObject *unused)
{
    return op_strings(te_op_name);
}

PyDoc_STRVAR(op_schemas_doc,
"op_schemas()\n--\n\n"
"The schema of every registered op as a JSON string (te_op_schema), in\n"
"registry order. _swiftkeras.op_schemas() parses them.");

static PyObject *
py_op_schemas(PyObject *mod, PyObject *unused)
{
    return op_strings(te_op_schema);
}

/* -------------------------------------------------------------------------
 * Programs (compiled steps): te_trace_* and te_graph_*. A graph is handed to
 * Python as a capsule that releases it.
 * ---------------------------------------------------------------------- */

static const char GRAPH_CAPSULE[] = "_swiftkeras.graph";

static void
graph_capsule_free(PyObject *cap)
{
    te_graph g = (te_graph)PyCapsule_GetPointer(cap, GRAPH_CAPSULE);
    if (g != NULL) {
        te_graph_release(g);
    }
}

static PyObject *
graph_wrap(te_graph g)
{
    PyObject *cap = PyCapsule_New(g, GRAPH_CAPSULE, graph_capsule_free);
    if (cap == NULL) {
        te_graph_release(g);
    }
    return cap;
}

static te_graph
graph_unwrap(PyObject *obj)
{
    if (!PyCapsule_IsValid(obj, GRAPH_CAPSULE)) {
        PyErr_Format(PyExc_TypeError, "expected a graph from trace_end() or graph_load(), not %.200s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return (te_graph)PyCapsule_GetPointer(obj, GRAPH_CAPSULE);
}

PyDoc_STRVAR(trace_begin_doc,
"trace_begin()\n--\n\n"
"Start recording this thread's op calls and tape steps into a graph (they\n"
"still run). End with trace_end(outputs) or trace_abort().");

static PyObject *
py_trace_begin(PyObject *mod, PyObject *unused)
{
    te_status st = te_trace_begin();
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(trace_input_doc,
"trace_input(tensor)\n--\n\n"
"Declare tensor as the trace's next graph input (before it is used).");

static PyObject *
py_trace_input(PyObject *mod, PyObject *t)
{
    if (!Tensor_Check(t)) {
        PyErr_Format(PyExc_TypeError, "trace_input() takes a Tensor, not %.200s", Py_TYPE(t)->tp_name);
        return NULL;
    }
    te_status st = te_trace_input(((TensorObject *)t)->handle);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(trace_end_doc,
"trace_end(outputs)\n--\n\n"
"End the trace and return the graph computing outputs (a sequence of\n"
"Tensors) from the declared inputs. NotImplementedError names why a trace\n"
"cannot be replayed (a host read, a custom gradient, ...).");

static PyObject *
py_trace_end(PyObject *mod, PyObject *outputs)
{
    te_tensor small[16];
    te_tensor *handles;
    int32_t n;
    PyObject *keep = collect_tensors(outputs, "outputs", NULL, small, 16, &handles, &n);
    if (keep == NULL) {
        te_trace_abort();
        return NULL;
    }
    te_graph g = NULL;
    te_status st = te_trace_end(handles, n, &g);
    if (handles != small) {
        PyMem_Free(handles);
    }
    Py_DECREF(keep);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    return graph_wrap(g);
}

PyDoc_STRVAR(trace_abort_doc,
"trace_abort()\n--\n\n"
"End this thread's trace, if any, discarding it.");

static PyObject *
py_trace_abort(PyObject *mod, PyObject *unused)
{
    te_trace_abort();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(trace_active_doc,
"trace_active()\n--\n\n"
"Whether a trace is recording on this thread.");

static PyObject *
py_trace_active(PyObject *mod, PyObject *unused)
{
    return PyBool_FromLong(te_trace_active());
}

PyDoc_STRVAR(graph_run_doc,
"graph_run(graph, inputs)\n--\n\n"
"Run a graph on inputs (Tensors of the traced dtypes and shapes), without\n"
"the GIL; returns its outputs as a tuple.");

static PyObject *
py_graph_run(PyObject *mod, PyObject *args)
{
    PyObject *gobj, *inputs;
    if (!PyArg_ParseTuple(args, "OO:graph_run", &gobj, &inputs)) {
        return NULL;
    }
    te_graph g = graph_unwrap(gobj);
    if (g == NULL) {
        return NULL;
    }
    te_tensor small[16];
    te_tensor *handles;
    int32_t n;
    PyObject *keep = collect_tensors(inputs, "inputs", NULL, small, 16, &handles, &n);
    if (keep == NULL) {
        return NULL;
    }
    int32_t cap = te_graph_num_outputs(g), n_out = 0;
    te_tensor *outs = PyMem_New(te_tensor, (size_t)(cap > 0 ? cap : 1));
    te_status st = TE_OK;
    if (outs != NULL) {
        /* The capsule (argument) keeps the graph alive; runs of one graph are
         * serialised by the engine. */
        Py_BEGIN_ALLOW_THREADS
        st = te_graph_run(g, handles, n, outs, cap, &n_out);
        Py_END_ALLOW_THREADS
    }
    if (handles != small) {
        PyMem_Free(handles);
    }
    Py_DECREF(keep);
    if (outs == NULL) {
        return PyErr_NoMemory();
    }
    if (st != TE_OK) {
        PyMem_Free(outs);
        return set_engine_error(st);
    }
    PyObject *result = wrap_outputs(outs, n_out);
    PyMem_Free(outs);
    return result;
}

PyDoc_STRVAR(graph_save_doc,
"graph_save(graph, path)\n--\n\n"
"Write a graph (ops by name, attributes, constants) to path.");

static PyObject *
py_graph_save(PyObject *mod, PyObject *args)
{
    PyObject *gobj;
    PyObject *path;
    if (!PyArg_ParseTuple(args, "OO&:graph_save", &gobj, PyUnicode_FSConverter, &path)) {
        return NULL;
    }
    te_graph g = graph_unwrap(gobj);
    if (g == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    te_status st = te_graph_save(g, PyBytes_AS_STRING(path));
    Py_DECREF(path);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(graph_load_doc,
"graph_load(path)\n--\n\n"
"Read a graph written by graph_save.");

static PyObject *
py_graph_load(PyObject *mod, PyObject *arg)
{
    PyObject *path;
    if (!PyUnicode_FSConverter(arg, &path)) {
        return NULL;
    }
    te_graph g = NULL;
    te_status st = te_graph_load(PyBytes_AS_STRING(path), &g);
    Py_DECREF(path);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    return graph_wrap(g);
}

PyDoc_STRVAR(graph_info_doc,
"graph_info(graph)\n--\n\n"
"(inputs, outputs, nodes): the graph's counts.");

static PyObject *
py_graph_info(PyObject *mod, PyObject *gobj)
{
    te_graph g = graph_unwrap(gobj);
    if (g == NULL) {
        return NULL;
    }
    return Py_BuildValue("(iii)", (int)te_graph_num_inputs(g), (int)te_graph_num_outputs(g),
                         (int)te_graph_num_nodes(g));
}

PyDoc_STRVAR(tape_push_doc,
"tape_push()\n--\n\n"
"Start recording ops (on this thread) onto a new innermost tape.");

static PyObject *
py_tape_push(PyObject *mod, PyObject *unused)
{
    te_status st = te_tape_push();
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tape_pop_doc,
"tape_pop()\n--\n\n"
"Discard the innermost tape of this thread.");

static PyObject *
py_tape_pop(PyObject *mod, PyObject *unused)
{
    te_status st = te_tape_pop();
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tape_depth_doc,
"tape_depth()\n--\n\n"
"Number of active tapes on this thread.");

static PyObject *
py_tape_depth(PyObject *mod, PyObject *unused)
{
    return PyLong_FromLong(te_tape_depth());
}

/* -------------------------------------------------------------------------- */
/* Custom gradients                                                            */
/* -------------------------------------------------------------------------- */

/* A Python exception raised by a VJP callback, kept until the gradient() call
 * that ran it returns, so the caller sees the original exception rather than
 * the engine's text copy of it. Tapes are per thread, and so is this. */
static _Thread_local PyObject *pending_type, *pending_value, *pending_tb;

static void
stash_python_error(void)
{
    Py_CLEAR(pending_type);
    Py_CLEAR(pending_value);
    Py_CLEAR(pending_tb);
    PyErr_Fetch(&pending_type, &pending_value, &pending_tb);
    PyErr_NormalizeException(&pending_type, &pending_value, &pending_tb);
    PyObject *text = pending_value ? PyObject_Str(pending_value) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    te_set_last_error(msg ? msg : "custom gradient function raised");
    Py_XDECREF(text);
    PyErr_Clear();
}

/* True (with the exception set) when a VJP callback of this thread raised. */
static int
restore_python_error(void)
{
    if (pending_type == NULL) {
        return 0;
    }
    PyErr_Restore(pending_type, pending_value, pending_tb);
    pending_type = pending_value = pending_tb = NULL;
    return 1;
}

static te_status
python_vjp(void *ctx, te_tensor output_grad, te_tensor *input_grads, int32_t n_inputs)
{
    /* gradient() runs the engine without the GIL; callbacks take it back. */
    PyGILState_STATE gil = PyGILState_Ensure();
    te_status st = TE_ERR_VALUE;
    PyObject *result = NULL, *seq = NULL;
    PyObject *grad = wrap_handle(te_tensor_retain(output_grad));
    if (grad == NULL) {
        goto fail;
    }
    result = PyObject_CallOneArg((PyObject *)ctx, grad);
    Py_DECREF(grad);
    if (result == NULL) {
        goto fail;
    }
    seq = PySequence_Fast(result, "a custom gradient function must return a sequence");
    if (seq == NULL) {
        goto fail;
    }
    if (PySequence_Fast_GET_SIZE(seq) != n_inputs) {
        PyErr_Format(PyExc_ValueError,
                     "custom gradient function returned %zd gradients for %d inputs",
                     PySequence_Fast_GET_SIZE(seq), (int)n_inputs);
        goto fail;
    }
    for (int32_t i = 0; i < n_inputs; i++) {
        PyObject *g = PySequence_Fast_GET_ITEM(seq, i);
        if (g != Py_None && !Tensor_Check(g)) {
            PyErr_Format(PyExc_TypeError,
                         "custom gradient %d must be a Tensor or None, not %.200s", (int)i,
                         Py_TYPE(g)->tp_name);
            goto fail;
        }
    }
    for (int32_t i = 0; i < n_inputs; i++) {
        PyObject *g = PySequence_Fast_GET_ITEM(seq, i);
        input_grads[i] = g == Py_None ? NULL : te_tensor_retain(((TensorObject *)g)->handle);
    }
    st = TE_OK;
    goto done;
fail:
    stash_python_error();
done:
    Py_XDECREF(seq);
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return st;
}

static void
python_release(void *ctx)
{
    /* Tape state is dropped at thread exit too, possibly after finalization. */
#if PY_VERSION_HEX >= 0x030D0000
    int finalizing = Py_IsFinalizing();
#else
    int finalizing = _Py_IsFinalizing();
#endif
    if (!Py_IsInitialized() || finalizing) {
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)ctx);
    PyGILState_Release(gil);
}

PyDoc_STRVAR(record_custom_doc,
"record_custom(output, inputs, vjp)\n--\n\n"
"A new Tensor sharing output's storage whose gradient flows to `inputs`\n"
"through `vjp(output_grad) -> [Tensor or None per input]` (custom gradients).\n"
"Run the forward computation untracked first.");

static PyObject *
py_record_custom(PyObject *mod, PyObject *args)
{
    PyObject *output, *inputs, *vjp;
    if (!PyArg_ParseTuple(args, "OOO:record_custom", &output, &inputs, &vjp)) {
        return NULL;
    }
    if (!Tensor_Check(output)) {
        PyErr_Format(PyExc_TypeError, "record_custom(): output must be a Tensor, not %.200s",
                     Py_TYPE(output)->tp_name);
        return NULL;
    }
    if (!PyCallable_Check(vjp)) {
        PyErr_Format(PyExc_TypeError, "record_custom(): vjp must be callable, not %.200s",
                     Py_TYPE(vjp)->tp_name);
        return NULL;
    }
    te_tensor small_in[SMALL_INPUTS];
    te_tensor *in;
    int32_t n;
    PyObject *keep = collect_tensors(inputs, "inputs", NULL, small_in, SMALL_INPUTS, &in, &n);
    if (keep == NULL) {
        return NULL;
    }
    te_tensor result = NULL;
    /* The engine owns this reference from the call on (released via python_release). */
    Py_INCREF(vjp);
    te_status st = te_record_custom(((TensorObject *)output)->handle, in, n, python_vjp, vjp,
                                    python_release, &result);
    if (in != small_in) {
        PyMem_Free(in);
    }
    Py_DECREF(keep);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    return wrap_handle(result);
}

PyDoc_STRVAR(gradient_doc,
"gradient(target, sources, seed=None, create_graph=False)\n--\n\n"
"Gradients of target with respect to each source through the ops on the\n"
"innermost tape: a list holding a Tensor, or None where a source does not\n"
"influence target. seed is the output gradient (default: ones).\n"
"create_graph=True pops the innermost tape and records the backward pass\n"
"onto the tape beneath it, so the gradients are differentiable again.");

static PyObject *
py_gradient(PyObject *mod, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"target", "sources", "seed", "create_graph", NULL};
    PyObject *target, *sources, *seed = Py_None;
    int create_graph = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|Op:gradient", kwlist, &target,
                                     &sources, &seed, &create_graph)) {
        return NULL;
    }
    if (!Tensor_Check(target)) {
        PyErr_Format(PyExc_TypeError, "gradient(): target must be a Tensor, not %.200s",
                     Py_TYPE(target)->tp_name);
        return NULL;
    }
    if (seed != Py_None && !Tensor_Check(seed)) {
        PyErr_Format(PyExc_TypeError, "gradient(): seed must be a Tensor or None, not %.200s",
                     Py_TYPE(seed)->tp_name);
        return NULL;
    }
    te_tensor small_src[SMALL_INPUTS];
    te_tensor *src;
    int32_t n;
    PyObject *keep = collect_tensors(sources, "sources", NULL, small_src,
                                     SMALL_INPUTS, &src, &n);
    if (keep == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    te_tensor small_grads[SMALL_INPUTS] = {0};
    te_tensor *grads = small_grads;
    if (n > SMALL_INPUTS) {
        grads = PyMem_Calloc((size_t)n, sizeof(te_tensor));
        if (grads == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }

    te_tensor target_h = ((TensorObject *)target)->handle;
    te_tensor seed_h = seed == Py_None ? NULL : ((TensorObject *)seed)->handle;
    te_status st;
    /* target and seed are kept alive by the argument tuple, sources by `keep`. */
    Py_BEGIN_ALLOW_THREADS
    st = (create_graph ? te_gradient_create_graph : te_gradient)(target_h, seed_h, src, n, grads);
    Py_END_ALLOW_THREADS

    if (st != TE_OK) {
        if (!restore_python_error()) {
            set_engine_error(st);
        }
        for (int32_t i = 0; i < n; i++) {
            if (grads[i] != NULL) {
                te_tensor_release(grads[i]);
            }
        }
        goto done;
    }
    result = PyList_New(n);
    for (int32_t i = 0; i < n; i++) {
        te_tensor g = grads[i];
        grads[i] = NULL;
        PyObject *item;
        if (result == NULL) {
            if (g != NULL) {
                te_tensor_release(g);
            }
            continue;
        }
        if (g == NULL) {
            item = Py_NewRef(Py_None);
        }
        else {
            item = wrap_handle(g);
            if (item == NULL) {
                Py_CLEAR(result);
                continue;
            }
        }
        PyList_SET_ITEM(result, i, item);
    }

done:
    if (grads != small_grads) {
        PyMem_Free(grads);
    }
    if (src != small_src) {
        PyMem_Free(src);
    }
    Py_DECREF(keep);
    return result;
}

PyDoc_STRVAR(set_num_threads_doc,
"set_num_threads(n)\n--\n\n"
"Threads used by the engine's kernels and by OpenBLAS (one knob for both).");

static PyObject *
py_set_num_threads(PyObject *mod, PyObject *arg)
{
    PyObject *num = PyNumber_Index(arg);
    if (num == NULL) {
        return NULL;
    }
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(num, &overflow);
    Py_DECREF(num);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow != 0 || n < 1 || n > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "set_num_threads() needs a count >= 1, got %R", arg);
        return NULL;
    }
    te_set_num_threads((int32_t)n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_num_threads_doc,
"get_num_threads()\n--\n\n"
"Threads used by the engine's kernels and by OpenBLAS.");

static PyObject *
py_get_num_threads(PyObject *mod, PyObject *unused)
{
    return PyLong_FromLong(te_get_num_threads());
}

PyDoc_STRVAR(abi_version_doc,
"abi_version()\n--\n\n"
"The C ABI version of the loaded engine library.");

static PyObject *
py_abi_version(PyObject *mod, PyObject *unused)
{
    return PyLong_FromUnsignedLong(te_abi_version());
}

PyDoc_STRVAR(engine_library_doc,
"engine_library()\n--\n\n"
"Path of the loaded engine library: on an x86-64 CPU with AVX2 and FMA, glibc's\n"
"loader picks the build under glibc-hwcaps/x86-64-v3/ over the baseline one.");

static PyObject *
py_engine_library(PyObject *mod, PyObject *unused)
{
    Dl_info info;
    if (dladdr((const void *)&te_abi_version, &info) == 0 || info.dli_fname == NULL) {
        PyErr_SetString(PyExc_OSError, "dladdr cannot name the engine library");
        return NULL;
    }
    return PyUnicode_DecodeFSDefault(info.dli_fname);
}

static PyMethodDef module_methods[] = {
    {"set_tensor_class", (PyCFunction)py_set_tensor_class, METH_O, set_tensor_class_doc},
    {"get_tensor_class", (PyCFunction)py_get_tensor_class, METH_NOARGS, get_tensor_class_doc},
    {"tensor_subclass", (PyCFunction)py_tensor_subclass, METH_O, tensor_subclass_doc},
    {"from_buffer", (PyCFunction)(void (*)(void))py_from_buffer, METH_VARARGS | METH_KEYWORDS,
     from_buffer_doc},
    {"op", (PyCFunction)(void (*)(void))py_op, METH_FASTCALL | METH_KEYWORDS, op_doc},
    {"call", (PyCFunction)(void (*)(void))py_call, METH_FASTCALL | METH_KEYWORDS, call_doc},
    {"op_names", (PyCFunction)py_op_names, METH_NOARGS, op_names_doc},
    {"op_schemas", (PyCFunction)py_op_schemas, METH_NOARGS, op_schemas_doc},
    {"trace_begin", (PyCFunction)py_trace_begin, METH_NOARGS, trace_begin_doc},
    {"trace_input", (PyCFunction)py_trace_input, METH_O, trace_input_doc},
    {"trace_end", (PyCFunction)py_trace_end, METH_O, trace_end_doc},
    {"trace_abort", (PyCFunction)py_trace_abort, METH_NOARGS, trace_abort_doc},
    {"trace_active", (PyCFunction)py_trace_active, METH_NOARGS, trace_active_doc},
    {"graph_run", (PyCFunction)py_graph_run, METH_VARARGS, graph_run_doc},
    {"graph_save", (PyCFunction)py_graph_save, METH_VARARGS, graph_save_doc},
    {"graph_load", (PyCFunction)py_graph_load, METH_O, graph_load_doc},
    {"graph_info", (PyCFunction)py_graph_info, METH_O, graph_info_doc},
    {"tape_push", (PyCFunction)py_tape_push, METH_NOARGS, tape_push_doc},
    {"tape_pop", (PyCFunction)py_tape_pop, METH_NOARGS, tape_pop_doc},
    {"tape_depth", (PyCFunction)py_tape_depth, METH_NOARGS, tape_depth_doc},
    {"gradient", (PyCFunction)(void (*)(void))py_gradient, METH_VARARGS | METH_KEYWORDS,
     gradient_doc},
    {"record_custom", (PyCFunction)py_record_custom, METH_VARARGS, record_custom_doc},
    {"set_num_threads", (PyCFunction)py_set_num_threads, METH_O, set_num_threads_doc},
    {"get_num_threads", (PyCFunction)py_get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"abi_version", (PyCFunction)py_abi_version, METH_NOARGS, abi_version_doc},
    {"engine_library", (PyCFunction)py_engine_library, METH_NOARGS, engine_library_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_swiftkeras._C",
    .m_doc = "CPython binding of the keras-swift tensor engine (tensor_engine.h).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__C(void)
{
    /* A library built from another header would misread te_attr records or
     * status codes; refusing to load beats corrupting memory later. */
    uint32_t found = te_abi_version();
    if (found != TE_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "_swiftkeras: the tensor engine library has ABI version %u but this "
                     "extension was built for version %u; rebuild keras-swift",
                     (unsigned)found, (unsigned)TE_ABI_VERSION);
        return NULL;
    }
    if (PyType_Ready(&TensorType) < 0 || PyType_Ready(&DispatchType) < 0 ||
        PyType_Ready(&OpType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    if (op_cache == NULL) {
        op_cache = PyDict_New();
        if (op_cache == NULL) {
            goto fail;
        }
    }
    if (tensor_class == NULL) {
        tensor_class = (PyTypeObject *)Py_NewRef((PyObject *)&TensorType);
        tensor_class_refresh();
    }
    if (PyModule_AddObjectRef(m, "Tensor", (PyObject *)&TensorType) < 0 ||
        PyModule_AddObjectRef(m, "Dispatch", (PyObject *)&DispatchType) < 0 ||
        PyModule_AddObjectRef(m, "Op", (PyObject *)&OpType) < 0) {
        goto fail;
    }
    PyObject *dtypes = PyTuple_New(N_DTYPES);
    if (dtypes == NULL) {
        goto fail;
    }
    for (int i = 0; i < N_DTYPES; i++) {
        if (dtype_strs[i] == NULL) {
            dtype_strs[i] = PyUnicode_InternFromString(dtype_names[i]);
            if (dtype_strs[i] == NULL) {
                Py_DECREF(dtypes);
                goto fail;
            }
        }
        PyTuple_SET_ITEM(dtypes, i, Py_NewRef(dtype_strs[i]));
    }
    if (PyModule_AddObject(m, "DTYPES", dtypes) < 0) {
        Py_DECREF(dtypes);
        goto fail;
    }
    if (PyModule_AddIntConstant(m, "ABI_VERSION", TE_ABI_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "MAX_OUTPUTS", MAX_OUTPUTS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RANK", MAX_RANK) < 0) {
        goto fail;
    }
    return m;

fail:
    Py_DECREF(m);
    return NULL;
}
