/*
 * What the files of _swiftkeras._C share (module.c describes the module and
 * its layout). Nothing here is seen from Python.
 */
#ifndef SWIFTKERAS_INTERNAL_H
#define SWIFTKERAS_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "tensor_engine.h"

/* setup.py compiles with -fvisibility=hidden as well; this keeps the names
 * shared between the files out of the extension's dynamic symbol table
 * whatever the flags (PyInit__C is exported by PyMODINIT_FUNC). */
#pragma GCC visibility push(hidden)

/* te_dtype's codes run from 0 to the last one, TE_COMPLEX128. */
#define N_DTYPES (TE_COMPLEX128 + 1)

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

/* -------------------------------------------------------------------------- */
/* module.c                                                                    */
/* -------------------------------------------------------------------------- */

PyObject *set_engine_error(te_status st);

/* -------------------------------------------------------------------------- */
/* tensor.c                                                                    */
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

extern PyTypeObject TensorType;
extern PyTypeObject *tensor_class; /* strong ref; the class op() outputs use */

/* The exact-class test first: the subtype walk is a measurable part of a small op. */
#define Tensor_Check(op) (Py_TYPE(op) == tensor_class || PyObject_TypeCheck(op, &TensorType))

PyObject *wrap_handle(te_tensor h);
PyObject *collect_tensors(PyObject *seq, const char *what, PyObject *opname,
                          te_tensor *small, Py_ssize_t small_cap, te_tensor **handles,
                          int32_t *count);
PyObject *wrap_outputs(te_tensor *outs, int32_t n);

/* -------------------------------------------------------------------------- */
/* attrs.c                                                                     */
/* -------------------------------------------------------------------------- */

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

void attrs_init(AttrSet *set);
int attrs_reserve(AttrSet *set, Py_ssize_t n);
void attrs_hold(AttrSet *set, Py_ssize_t k, PyObject *key, PyObject *value);
int attrs_fill(AttrSet *set, Py_ssize_t k);
void attrs_free(AttrSet *set);
int attrs_convert_kw(PyObject *kwnames, PyObject *const *values, AttrSet *set);

/* -------------------------------------------------------------------------- */
/* What each area adds to the module, called once by PyInit__C: its types,     */
/* functions and constants. 0 on success, -1 with an exception set.            */
/* -------------------------------------------------------------------------- */

int init_tensor(PyObject *m);
int init_opcall(PyObject *m);
int init_dispatch(PyObject *m);
int init_tape(PyObject *m);
int init_graph(PyObject *m);
int init_dlpack(PyObject *m);

/* dlpack.c: Tensor's __dlpack__ and __dlpack_device__ (TensorType's methods). */
extern PyMethodDef tensor_dlpack_methods[];

#pragma GCC visibility pop

/* Defines `static PyObject *pyname(mod, unused)`: calls the C ABI's
 * `te_status cfn(void)` and returns None, or raises its error. */
#define STATUS_FUNCTION(pyname, cfn)                        \
    static PyObject *pyname(PyObject *mod, PyObject *unused) \
    {                                                       \
        te_status st = cfn();                               \
        if (st != TE_OK) {                                  \
            return set_engine_error(st);                    \
        }                                                   \
        Py_RETURN_NONE;                                     \
    }

#endif /* SWIFTKERAS_INTERNAL_H */
