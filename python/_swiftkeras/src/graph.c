/*
 * Programs (compiled steps): te_trace_* and te_graph_*. A graph is handed to
 * Python as a capsule that releases it.
 */
#include "internal.h"

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

STATUS_FUNCTION(py_trace_begin, te_trace_begin)

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
    PyObject *keep = collect_tensors(outputs, "trace_end(): outputs", NULL, small, 16, &handles, &n);
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

PyDoc_STRVAR(trace_unreplayable_doc,
"trace_unreplayable(reason)\n--\n\n"
"Mark this thread's trace (if any) as not replayable, for reason.");

static PyObject *
py_trace_unreplayable(PyObject *mod, PyObject *reason)
{
    const char *text = PyUnicode_AsUTF8(reason);
    if (text == NULL) {
        return NULL;
    }
    te_trace_unreplayable(text);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(trace_cond_begin_doc,
"trace_cond_begin(selector, n_branches)\n--\n\n"
"Start recording a cond on selector (a scalar bool or integer Tensor) and its\n"
"branch 0. Returns (taken, recording): the branch the selector picks, and\n"
"whether the cond is recorded (if not, run the taken branch alone).");

static PyObject *
py_trace_cond_begin(PyObject *mod, PyObject *args)
{
    PyObject *sel;
    int n;
    if (!PyArg_ParseTuple(args, "O!i:trace_cond_begin", &TensorType, &sel, &n)) {
        return NULL;
    }
    int32_t taken = 0, recording = 0;
    te_status st = te_trace_cond_begin(((TensorObject *)sel)->handle, n, &taken, &recording);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    return Py_BuildValue("(iO)", (int)taken, recording ? Py_True : Py_False);
}

PyDoc_STRVAR(trace_cond_next_doc,
"trace_cond_next()\n--\n\n"
"End the branch being recorded and start the next.");

STATUS_FUNCTION(py_trace_cond_next, te_trace_cond_next)

/* Calls end(handles, n, outs, &recorded, ctx) on the Tensors of `results` with
 * room for n_out outputs (n_out < 0: as many as there are tensors); returns
 * the outputs as a tuple, or None when nothing was recorded. `what` names the
 * argument in errors. */
static PyObject *
end_block(PyObject *results, const char *what, Py_ssize_t n_out,
          te_status (*end)(const te_tensor *, int32_t, te_tensor *, int32_t *, void *), void *ctx)
{
    te_tensor small[16];
    te_tensor *handles;
    int32_t n;
    PyObject *keep = collect_tensors(results, what, NULL, small, 16, &handles, &n);
    if (keep == NULL) {
        return NULL;
    }
    if (n_out < 0) {
        n_out = n;
    }
    te_tensor *outs = PyMem_New(te_tensor, (size_t)(n_out > 0 ? n_out : 1));
    int32_t recorded = 0;
    te_status st = TE_OK;
    if (outs != NULL) {
        st = end(handles, n, outs, &recorded, ctx);
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
    PyObject *r;
    if (recorded) {
        r = wrap_outputs(outs, (int32_t)n_out);
    }
    else {
        r = Py_NewRef(Py_None);
    }
    PyMem_Free(outs);
    return r;
}

static te_status
cond_end(const te_tensor *h, int32_t n, te_tensor *outs, int32_t *recorded, void *ctx)
{
    int32_t branches = *(int32_t *)ctx;
    return te_trace_cond_end(h, branches, branches > 0 ? n / branches : 0, outs, recorded);
}

PyDoc_STRVAR(trace_cond_end_doc,
"trace_cond_end(results, n_branches)\n--\n\n"
"End the last branch and the cond. results: every branch's result Tensors,\n"
"branch after branch (the same count, dtypes and shapes for each). Returns\n"
"the cond's outputs (a tuple of new Tensors holding the taken branch's\n"
"results), or None when the trace can no longer be replayed.");

static PyObject *
py_trace_cond_end(PyObject *mod, PyObject *args)
{
    PyObject *results;
    int branches;
    if (!PyArg_ParseTuple(args, "Oi:trace_cond_end", &results, &branches)) {
        return NULL;
    }
    Py_ssize_t total = PyObject_Length(results);
    if (total < 0) {
        return NULL;
    }
    if (branches <= 0 || total % branches != 0) {
        PyErr_Format(PyExc_ValueError, "trace_cond_end(): %zd results do not split into %d branches", total,
                     branches);
        return NULL;
    }
    int32_t b = branches;
    return end_block(results, "trace_cond_end(): results", total / branches, cond_end, &b);
}

PyDoc_STRVAR(trace_while_begin_doc,
"trace_while_begin(initial)\n--\n\n"
"Start recording a while loop carrying the Tensors initial, and its\n"
"condition. Returns the parameters (a tuple of new Tensors on the initial\n"
"values) the condition and body read, or None when the loop is not recorded\n"
"(run it eagerly).");

static te_status
while_begin(const te_tensor *h, int32_t n, te_tensor *params, int32_t *recording, void *ctx)
{
    return te_trace_while_begin(h, n, params, recording);
}

static PyObject *
py_trace_while_begin(PyObject *mod, PyObject *initial)
{
    return end_block(initial, "trace_while_begin(): initial values", -1, while_begin, NULL);
}

PyDoc_STRVAR(trace_while_body_doc,
"trace_while_body(pred)\n--\n\n"
"End the loop condition's block with pred (a scalar Tensor) and start the\n"
"body's. Returns whether pred holds.");

static PyObject *
py_trace_while_body(PyObject *mod, PyObject *pred)
{
    if (!Tensor_Check(pred)) {
        PyErr_Format(PyExc_TypeError, "trace_while_body() takes a Tensor, not %.200s", Py_TYPE(pred)->tp_name);
        return NULL;
    }
    int32_t holds = 0;
    te_status st = te_trace_while_body(((TensorObject *)pred)->handle, &holds);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    return PyBool_FromLong(holds);
}

static te_status
while_end(const te_tensor *h, int32_t n, te_tensor *outs, int32_t *recorded, void *ctx)
{
    return te_trace_while_end(h, n, *(int64_t *)ctx, outs, recorded);
}

PyDoc_STRVAR(trace_while_end_doc,
"trace_while_end(results, max_iterations)\n--\n\n"
"End the body with the next state (Tensors as carried) and the loop; the\n"
"engine runs the remaining iterations (max_iterations in all, None: no\n"
"limit). Returns the final state (a tuple of new Tensors), or None when the\n"
"trace can no longer be replayed (finish the loop eagerly).");

static PyObject *
py_trace_while_end(PyObject *mod, PyObject *args)
{
    PyObject *results, *limit;
    if (!PyArg_ParseTuple(args, "OO:trace_while_end", &results, &limit)) {
        return NULL;
    }
    int64_t max_iterations = -1;
    if (limit != Py_None) {
        long long v = PyLong_AsLongLong(limit);
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (v < 0) {
            PyErr_SetString(PyExc_ValueError, "max_iterations must not be negative");
            return NULL;
        }
        max_iterations = (int64_t)v;
    }
    Py_ssize_t n = PyObject_Length(results);
    if (n < 0) {
        return NULL;
    }
    return end_block(results, "trace_while_end(): results", n, while_end, &max_iterations);
}

PyDoc_STRVAR(trace_block_abort_doc,
"trace_block_abort()\n--\n\n"
"Drop the innermost cond or while loop being recorded (after an exception).");

STATUS_FUNCTION(py_trace_block_abort, te_trace_block_abort)

PyDoc_STRVAR(graph_run_doc,
"graph_run(graph, inputs, donate=None)\n--\n\n"
"Run a graph on inputs (Tensors of the traced dtypes and shapes), without\n"
"the GIL; returns its outputs as a tuple.\n\n"
"donate: flags, one per input (inputs must then be a list). A flagged\n"
"Tensor that nothing but the list references is handed to the engine\n"
"(te_graph_run_donating), which may write over its buffer once the graph\n"
"no longer reads it: its list entry becomes None, whatever the outcome.\n"
"A flagged Tensor referenced elsewhere stays in the list and is only read.");

/* graph_run with donate flags: see graph_run_doc. */
/* The result of a graph run that ended with status st and filled outs[0..n_out): its
 * outputs as Tensors, or the engine's error. Frees outs. */
static PyObject *
run_result(te_status st, te_tensor *outs, int32_t n_out)
{
    PyObject *r = st == TE_OK ? wrap_outputs(outs, n_out) : set_engine_error(st);
    PyMem_Free(outs);
    return r;
}

static PyObject *
graph_run_donating(te_graph g, PyObject *inputs, PyObject *donate)
{
    if (!PyList_Check(inputs)) {
        PyErr_Format(PyExc_TypeError, "graph_run(): inputs must be a list to donate, not %.200s",
                     Py_TYPE(inputs)->tp_name);
        return NULL;
    }
    /* The flags first: reading them may run Python code (a __bool__), which could
     * change the list; nothing after this runs any until the wrappers go. */
    PyObject *flags = PySequence_Fast(donate, "graph_run(): donate must be a sequence of flags");
    if (flags == NULL) {
        return NULL;
    }
    Py_ssize_t nf = PySequence_Fast_GET_SIZE(flags);
    if (nf > INT32_MAX) {
        Py_DECREF(flags);
        PyErr_Format(PyExc_ValueError, "graph_run(): too many inputs (%zd)", nf);
        return NULL;
    }
    uint8_t *want = PyMem_Calloc((size_t)(nf > 0 ? nf : 1), 1);
    if (want == NULL) {
        Py_DECREF(flags);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        int f = PyObject_IsTrue(PySequence_Fast_GET_ITEM(flags, i));
        if (f < 0) {
            Py_DECREF(flags);
            PyMem_Free(want);
            return NULL;
        }
        want[i] = (uint8_t)f;
    }
    Py_DECREF(flags);
    Py_ssize_t n = PyList_GET_SIZE(inputs);
    if (n != nf) {
        PyMem_Free(want);
        PyErr_Format(PyExc_ValueError, "graph_run(): %zd donate flags for %zd inputs", nf, n);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(inputs, i);
        if (!Tensor_Check(item)) {
            PyMem_Free(want);
            PyErr_Format(PyExc_TypeError, "graph_run(): inputs[%zd] must be a Tensor, not %.200s", i,
                         Py_TYPE(item)->tp_name);
            return NULL;
        }
    }
    int32_t cap = te_graph_num_outputs(g), n_out = 0;
    te_tensor *outs = PyMem_New(te_tensor, (size_t)(cap > 0 ? cap : 1));
    te_tensor *handles = PyMem_New(te_tensor, (size_t)(n > 0 ? n : 1));
    PyObject *snapshot = PyList_AsTuple(inputs);
    if (outs == NULL || handles == NULL || snapshot == NULL) {
        PyMem_Free(want);
        PyMem_Free(outs);
        PyMem_Free(handles);
        Py_XDECREF(snapshot);
        return snapshot == NULL ? NULL : PyErr_NoMemory();
    }
    /* A flagged wrapper referenced only by the list (and the snapshot) gives its
     * handle's reference to the engine; its list entry goes, and the wrapper with
     * it before the GIL is released, so nothing (a weak reference either) can
     * reach a wrapper without a handle. */
    for (Py_ssize_t i = 0; i < n; i++) {
        TensorObject *t = (TensorObject *)PyTuple_GET_ITEM(snapshot, i);
        handles[i] = t->handle;
        if (want[i] && Py_REFCNT(t) == 2 && t->handle != NULL) {
            t->handle = NULL;
            PyList_SET_ITEM(inputs, i, Py_NewRef(Py_None));
            Py_DECREF(t); /* the list's reference */
        }
        else {
            want[i] = 0;
        }
    }
    /* The undonated inputs stay referenced through the engine call; the donated
     * wrappers go with the first snapshot (weak reference callbacks may run). */
    PyObject *keep = PyList_AsTuple(inputs);
    Py_DECREF(snapshot);
    te_status st = TE_OK;
    if (keep == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (want[i]) {
                te_tensor_release(handles[i]);
            }
        }
        PyMem_Free(want);
        PyMem_Free(outs);
        PyMem_Free(handles);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    st = te_graph_run_donating(g, handles, (int32_t)n, want, outs, cap, &n_out);
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    PyMem_Free(want);
    PyMem_Free(handles);
    return run_result(st, outs, n_out);
}

static PyObject *
py_graph_run(PyObject *mod, PyObject *args)
{
    PyObject *gobj, *inputs, *donate = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O:graph_run", &gobj, &inputs, &donate)) {
        return NULL;
    }
    te_graph g = graph_unwrap(gobj);
    if (g == NULL) {
        return NULL;
    }
    if (donate != Py_None) {
        return graph_run_donating(g, inputs, donate);
    }
    te_tensor small[16];
    te_tensor *handles;
    int32_t n;
    PyObject *keep = collect_tensors(inputs, "graph_run(): inputs", NULL, small, 16, &handles, &n);
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
    return run_result(st, outs, n_out);
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

PyDoc_STRVAR(graph_describe_doc,
"graph_describe(graph)\n--\n\n"
"The graph as a dict (te_graph_json parsed): 'inputs', 'outputs' and\n"
"'constants' ({'value', 'dtype', 'shape'}), and 'nodes' in order\n"
"({'kind': 'op', 'op', 'attrs': {name: {'type', 'value'}}, 'inputs',\n"
"'outputs'} for ops). graph_constant(graph, i) gives constant i's values.");

static PyObject *
py_graph_describe(PyObject *mod, PyObject *gobj)
{
    te_graph g = graph_unwrap(gobj);
    if (g == NULL) {
        return NULL;
    }
    size_t len = 0;
    te_status st = te_graph_json(g, NULL, 0, &len);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    char *buf = PyMem_Malloc(len + 1);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    /* A graph is immutable, so the text has the length just measured. */
    st = te_graph_json(g, buf, len + 1, &len);
    if (st != TE_OK) {
        PyMem_Free(buf);
        return set_engine_error(st);
    }
    PyObject *text = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)len, "strict");
    PyMem_Free(buf);
    if (text == NULL) {
        return NULL;
    }
    PyObject *json = PyImport_ImportModule("json");
    if (json == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    PyObject *result = PyObject_CallMethod(json, "loads", "O", text);
    Py_DECREF(json);
    Py_DECREF(text);
    return result;
}

PyDoc_STRVAR(graph_constant_doc,
"graph_constant(graph, i)\n--\n\n"
"Constant i of the graph (in graph_describe's order) as a Tensor sharing\n"
"the graph's storage: read it, do not write it.");

static PyObject *
py_graph_constant(PyObject *mod, PyObject *args)
{
    PyObject *gobj;
    int i;
    if (!PyArg_ParseTuple(args, "Oi:graph_constant", &gobj, &i)) {
        return NULL;
    }
    te_graph g = graph_unwrap(gobj);
    if (g == NULL) {
        return NULL;
    }
    te_tensor t = NULL;
    te_status st = te_graph_constant(g, (int32_t)i, &t);
    if (st != TE_OK) {
        return set_engine_error(st);
    }
    return wrap_handle(t);
}

static PyMethodDef graph_methods[] = {
    {"trace_begin", (PyCFunction)py_trace_begin, METH_NOARGS, trace_begin_doc},
    {"trace_input", (PyCFunction)py_trace_input, METH_O, trace_input_doc},
    {"trace_end", (PyCFunction)py_trace_end, METH_O, trace_end_doc},
    {"trace_abort", (PyCFunction)py_trace_abort, METH_NOARGS, trace_abort_doc},
    {"trace_active", (PyCFunction)py_trace_active, METH_NOARGS, trace_active_doc},
    {"trace_unreplayable", (PyCFunction)py_trace_unreplayable, METH_O, trace_unreplayable_doc},
    {"trace_cond_begin", (PyCFunction)py_trace_cond_begin, METH_VARARGS, trace_cond_begin_doc},
    {"trace_cond_next", (PyCFunction)py_trace_cond_next, METH_NOARGS, trace_cond_next_doc},
    {"trace_cond_end", (PyCFunction)py_trace_cond_end, METH_VARARGS, trace_cond_end_doc},
    {"trace_while_begin", (PyCFunction)py_trace_while_begin, METH_O, trace_while_begin_doc},
    {"trace_while_body", (PyCFunction)py_trace_while_body, METH_O, trace_while_body_doc},
    {"trace_while_end", (PyCFunction)py_trace_while_end, METH_VARARGS, trace_while_end_doc},
    {"trace_block_abort", (PyCFunction)py_trace_block_abort, METH_NOARGS, trace_block_abort_doc},
    {"graph_run", (PyCFunction)py_graph_run, METH_VARARGS, graph_run_doc},
    {"graph_save", (PyCFunction)py_graph_save, METH_VARARGS, graph_save_doc},
    {"graph_load", (PyCFunction)py_graph_load, METH_O, graph_load_doc},
    {"graph_info", (PyCFunction)py_graph_info, METH_O, graph_info_doc},
    {"graph_describe", (PyCFunction)py_graph_describe, METH_O, graph_describe_doc},
    {"graph_constant", (PyCFunction)py_graph_constant, METH_VARARGS, graph_constant_doc},
    {NULL, NULL, 0, NULL},
};

int
init_graph(PyObject *m)
{
    return PyModule_AddFunctions(m, graph_methods);
}
