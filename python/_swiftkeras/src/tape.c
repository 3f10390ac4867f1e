/*
 * Autodiff: the per-thread tapes, gradient() through them, and custom
 * gradients whose VJP is a Python function the engine calls back.
 */
#include "internal.h"

PyDoc_STRVAR(tape_push_doc,
"tape_push()\n--\n\n"
"Start recording ops (on this thread) onto a new innermost tape.");

STATUS_FUNCTION(py_tape_push, te_tape_push)

PyDoc_STRVAR(tape_pop_doc,
"tape_pop()\n--\n\n"
"Discard the innermost tape of this thread.");

STATUS_FUNCTION(py_tape_pop, te_tape_pop)

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
    PyObject *keep = collect_tensors(inputs, "record_custom(): inputs", NULL, small_in, SMALL_INPUTS, &in, &n);
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
    PyObject *keep = collect_tensors(sources, "gradient(): sources", NULL, small_src,
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

static PyMethodDef tape_methods[] = {
    {"tape_push", (PyCFunction)py_tape_push, METH_NOARGS, tape_push_doc},
    {"tape_pop", (PyCFunction)py_tape_pop, METH_NOARGS, tape_pop_doc},
    {"tape_depth", (PyCFunction)py_tape_depth, METH_NOARGS, tape_depth_doc},
    {"gradient", (PyCFunction)(void (*)(void))py_gradient, METH_VARARGS | METH_KEYWORDS,
     gradient_doc},
    {"record_custom", (PyCFunction)py_record_custom, METH_VARARGS, record_custom_doc},
    {NULL, NULL, 0, NULL},
};

int
init_tape(PyObject *m)
{
    return PyModule_AddFunctions(m, tape_methods);
}
