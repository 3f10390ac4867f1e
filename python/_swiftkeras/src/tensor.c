/*
 * The Tensor type: one engine reference per object, its getters, the buffer
 * protocol (zero-copy reads for numpy), the class new tensors get, and the
 * way in from Python buffers (from_buffer).
 */
#include "internal.h"

#include <stddef.h>
#include <string.h>

/* Copies into the engine above this size run without the GIL. */
#define NOGIL_COPY_BYTES (1 << 20)

/* Each te_dtype's name (the engine's: its schema and its dtype attributes use
 * the same; python/tests/test_native.py checks them against it) and native
 * struct-module code, keyed by the header's constants. Codes have fixed sizes
 * on every platform we target ('l' would be 4 bytes on Windows, hence 'q');
 * bfloat16 and float8 have none: they are exported as their raw bits and
 * reinterpreted by the caller (ml_dtypes). */
static const struct {
    const char *name;
    const char *format;
} dtype_info[N_DTYPES] = {
    [TE_BOOL] = {"bool", "?"},
    [TE_INT8] = {"int8", "b"},
    [TE_INT16] = {"int16", "h"},
    [TE_INT32] = {"int32", "i"},
    [TE_INT64] = {"int64", "q"},
    [TE_UINT8] = {"uint8", "B"},
    [TE_UINT16] = {"uint16", "H"},
    [TE_UINT32] = {"uint32", "I"},
    [TE_UINT64] = {"uint64", "Q"},
    [TE_FLOAT16] = {"float16", "e"},
    [TE_BFLOAT16] = {"bfloat16", "H"},
    [TE_FLOAT32] = {"float32", "f"},
    [TE_FLOAT64] = {"float64", "d"},
    [TE_FLOAT8_E4M3FN] = {"float8_e4m3fn", "B"},
    [TE_FLOAT8_E5M2] = {"float8_e5m2", "B"},
    [TE_COMPLEX64] = {"complex64", "Zf"},
    [TE_COMPLEX128] = {"complex128", "Zd"},
};

PyTypeObject *tensor_class = NULL;
/* The dtype names as interned str: `Tensor.dtype` returns these rather than a new
 * str per access (Keras reads it on nearly every op), and comparing them with a
 * string literal succeeds on identity. */
static PyObject *dtype_strs[N_DTYPES];

/* -------------------------------------------------------------------------- */
/* Tensor                                                                      */
/* -------------------------------------------------------------------------- */

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
PyObject *
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
                                       shape, dtype_info[self->dtype].name);
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
                     dtype_info[self->dtype].name, dtype_info[self->dtype].name);
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
    view->format = (flags & PyBUF_FORMAT) ? (char *)dtype_info[self->dtype].format : NULL;
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

PyTypeObject TensorType = {
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
    .tp_methods = tensor_dlpack_methods,
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
        if (name == dtype_strs[i] || PyUnicode_CompareWithASCIIString(name, dtype_info[i].name) == 0) {
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
PyObject *
collect_tensors(PyObject *seq, const char *what, PyObject *opname, te_tensor *small,
                Py_ssize_t small_cap, te_tensor **handles, int32_t *count)
{
    /* Error messages name the op, when there is one (`what` names the argument
     * otherwise: gradient's sources, graph_run's inputs); `opname` is only
     * formatted on failure, keeping string work off the success path. */
    *handles = NULL;
    *count = 0;
    if (Tensor_Check(seq) || PyUnicode_Check(seq) || PyBytes_Check(seq) ||
        !PySequence_Check(seq)) {
        if (opname != NULL) {
            PyErr_Format(PyExc_TypeError, "op %R: %s must be a sequence of Tensors, not %.200s",
                         opname, what, Py_TYPE(seq)->tp_name);
        }
        else {
            PyErr_Format(PyExc_TypeError, "%s must be a sequence of Tensors, not %.200s", what,
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
                PyErr_Format(PyExc_TypeError, "%s[%zd] must be a Tensor, not %.200s", what, i,
                             Py_TYPE(item)->tp_name);
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
PyObject *
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
                     view.itemsize, dtype_info[dt].name, (int)itemsize);
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

static PyMethodDef tensor_methods[] = {
    {"set_tensor_class", (PyCFunction)py_set_tensor_class, METH_O, set_tensor_class_doc},
    {"get_tensor_class", (PyCFunction)py_get_tensor_class, METH_NOARGS, get_tensor_class_doc},
    {"tensor_subclass", (PyCFunction)py_tensor_subclass, METH_O, tensor_subclass_doc},
    {"from_buffer", (PyCFunction)(void (*)(void))py_from_buffer, METH_VARARGS | METH_KEYWORDS,
     from_buffer_doc},
    {NULL, NULL, 0, NULL},
};

int
init_tensor(PyObject *m)
{
    if (PyType_Ready(&TensorType) < 0) {
        return -1;
    }
    if (tensor_class == NULL) {
        tensor_class = (PyTypeObject *)Py_NewRef((PyObject *)&TensorType);
        tensor_class_refresh();
    }
    if (PyModule_AddFunctions(m, tensor_methods) < 0 ||
        PyModule_AddObjectRef(m, "Tensor", (PyObject *)&TensorType) < 0) {
        return -1;
    }
    PyObject *dtypes = PyTuple_New(N_DTYPES);
    if (dtypes == NULL) {
        return -1;
    }
    for (int i = 0; i < N_DTYPES; i++) {
        if (dtype_strs[i] == NULL) {
            dtype_strs[i] = PyUnicode_InternFromString(dtype_info[i].name);
            if (dtype_strs[i] == NULL) {
                Py_DECREF(dtypes);
                return -1;
            }
        }
        PyTuple_SET_ITEM(dtypes, i, Py_NewRef(dtype_strs[i]));
    }
    if (PyModule_AddObject(m, "DTYPES", dtypes) < 0) {
        Py_DECREF(dtypes);
        return -1;
    }
    return PyModule_AddIntConstant(m, "MAX_RANK", MAX_RANK);
}
