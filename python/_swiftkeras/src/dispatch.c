/*
 * Dispatch: the callable that sends a backend function's call to its sparse
 * handler when a data argument is a sparse tensor.
 */
#include "internal.h"

#include <stddef.h>
#include <string.h>

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

int
init_dispatch(PyObject *m)
{
    if (PyType_Ready(&DispatchType) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(m, "Dispatch", (PyObject *)&DispatchType);
}
