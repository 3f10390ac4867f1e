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
 *
 * One file per area, sharing internal.h:
 *
 *   module.c    module init, engine errors, small functions (threads, ABI,
 *               op names and schemas)
 *   tensor.c    the Tensor type, its buffer protocol, the tensor class and
 *               from_buffer
 *   attrs.c     Python values into te_attr records
 *   opcall.c    op() and the Op binding
 *   dispatch.c  Dispatch, the sparse-or-dense callable
 *   tape.c      tapes, gradient() and custom gradients
 *   graph.c     traces and graphs (compiled steps)
 *   dlpack.c    DLPack out (Tensor.__dlpack__) and in (from_dlpack)
 */
#include "internal.h"

#include <dlfcn.h>
#include <string.h>

/* -------------------------------------------------------------------------- */
/* Errors                                                                      */
/* -------------------------------------------------------------------------- */

/* Maps a failed status to the Python exception Keras code expects to catch.
 * te_last_error() is thread-local, so it must be read on the thread that made
 * the failing call, before any other engine call: callers do that. */
PyObject *
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
/* Module functions                                                            */
/* -------------------------------------------------------------------------- */

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
    {"op_names", (PyCFunction)py_op_names, METH_NOARGS, op_names_doc},
    {"op_schemas", (PyCFunction)py_op_schemas, METH_NOARGS, op_schemas_doc},
    {"set_num_threads", (PyCFunction)py_set_num_threads, METH_O, set_num_threads_doc},
    {"get_num_threads", (PyCFunction)py_get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"abi_version", (PyCFunction)py_abi_version, METH_NOARGS, abi_version_doc},
    {"engine_library", (PyCFunction)py_engine_library, METH_NOARGS, engine_library_doc},
    {NULL, NULL, 0, NULL},
};

/* Single-phase init with static state (each area's file holds its own): the
 * engine itself is process-global (one registry, per-thread tapes), so
 * per-interpreter module state would suggest an isolation that does not exist. */
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
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    if (init_tensor(m) < 0 || init_opcall(m) < 0 || init_dispatch(m) < 0 ||
        init_tape(m) < 0 || init_graph(m) < 0 || init_dlpack(m) < 0 ||
        PyModule_AddIntConstant(m, "ABI_VERSION", TE_ABI_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
