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
