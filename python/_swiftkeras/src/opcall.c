/*
 * Running engine ops: op(), the one way in (the backend's `op` is this
 * function), and the Op binding of one backend function to one op.
 */
#include "internal.h"

#include <stddef.h>
#include <string.h>

static PyObject *op_cache = NULL; /* str -> int op handle */

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

/* What op() returns for run_op's outputs: the Tensor of a one-output op,
 * the tuple of a several-output one (the schema fixes an op's count). */
static PyObject *
op_result(te_tensor *outs, int32_t n_out)
{
    if (n_out == 1) {
        return wrap_handle(outs[0]);
    }
    return wrap_outputs(outs, n_out);
}

PyDoc_STRVAR(op_doc,
"op(name, *inputs, **attrs)\n--\n\n"
"Run the engine op `name` on Tensors with keyword attributes. Returns its\n"
"output, or the tuple of its outputs for an op that has several (the schema\n"
"fixes the count: op_schemas()[name][\"outputs\"]).\n\n"
"Attribute values: bool, int (or numpy integer), float (or numpy floating),\n"
"str, list/tuple of ints (ints) or of numbers with a float (floats); None\n"
"omits the attribute. Engine errors raise ValueError (bad values/shapes),\n"
"TypeError (dtypes), IndexError (indices) or NotImplementedError.\n\n"
"Every backend op goes through here, so no inputs tuple, attribute dict or\n"
"result tuple (for one output) is built.");

static PyObject *
py_op(PyObject *mod, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "op() needs an op name (str) as first argument");
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
        result = op_result(outs, n_out);
    }
    attrs_free(&attrs);

done_inputs:
    if (in_handles != small_inputs) {
        PyMem_Free(in_handles);
    }
    return result;
}

/* -------------------------------------------------------------------------- */
/* Op                                                                          */
/* -------------------------------------------------------------------------- */

/* A backend function bound to one engine op: Op(fallback, name, params,
 * attrs) behaves exactly as the Python function `fallback`, whose body is
 * `op(name, *inputs, **{attr: param})` once its inputs are Tensors (and
 * returns what op() would). When they
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
        result = op_result(outs, n_out);
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

static PyMethodDef opcall_methods[] = {
    {"op", (PyCFunction)(void (*)(void))py_op, METH_FASTCALL | METH_KEYWORDS, op_doc},
    {NULL, NULL, 0, NULL},
};

int
init_opcall(PyObject *m)
{
    if (PyType_Ready(&OpType) < 0) {
        return -1;
    }
    if (op_cache == NULL) {
        op_cache = PyDict_New();
        if (op_cache == NULL) {
            return -1;
        }
    }
    if (PyModule_AddFunctions(m, opcall_methods) < 0 ||
        PyModule_AddObjectRef(m, "Op", (PyObject *)&OpType) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(m, "MAX_OUTPUTS", MAX_OUTPUTS);
}
