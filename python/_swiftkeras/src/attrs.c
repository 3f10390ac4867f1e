/*
 * Attribute conversion: Python values (keyword arguments of op() and Op)
 * become te_attr records the engine reads, with every object they point into
 * held until the call is over.
 */
#include "internal.h"

#include <string.h>

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

void
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
int
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
void
attrs_hold(AttrSet *set, Py_ssize_t k, PyObject *key, PyObject *value)
{
    set->refs[3 * k] = Py_NewRef(key);
    set->refs[3 * k + 1] = Py_NewRef(value);
    set->refs[3 * k + 2] = NULL;
}

/* Converts the k (name, value) pairs already referenced in set->refs. */
int
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

void
attrs_init(AttrSet *set)
{
    set->attrs = NULL;
    set->refs = NULL;
    set->n = 0;
    set->n_refs = 0;
    set->n_ints = 0;
}

/* Attributes from keyword arguments (op()): names in `kwnames`, values
 * after them in the vectorcall array. No dict is built. */
int
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
