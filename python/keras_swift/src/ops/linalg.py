"""``keras.ops.linalg`` on the Swift engine (LAPACK-backed engine ops)."""

import numpy as np
from keras.src import tree

from keras_swift.src.core import cast
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_float_dtype
from keras_swift.src.core import result_type
from keras_swift.src.core import to_float as _float
from keras_swift.src.engine import _C
from keras_swift.src.engine import op
from keras_swift.src.ops import numpy as knp
from keras_swift.src.variable import detached_leaf


def _swap_last(x):
    perm = list(range(x.ndim))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return op("transpose", x, perm=perm)


def _square(a, name):
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(
            f"{name}: expected a (..., n, n) square matrix, got shape {a.shape}"
        )
    return a


def qr(x, mode="reduced"):
    if mode not in {"reduced", "complete"}:
        raise ValueError(
            "`mode` argument value not supported. "
            "Expected one of {'reduced', 'complete'}. "
            f"Received: mode={mode}"
        )
    x = _float(x)
    q, r = op("qr", x, mode=mode)
    return q, r


def cholesky(a, upper=False):
    a = _square(_float(a), "cholesky")
    lower = op("cholesky", a)
    return _swap_last(lower) if upper else lower


def cholesky_inverse(a, upper=False):
    factor = _square(_float(a), "cholesky_inverse")
    identity = op("broadcast_to", knp.eye(factor.shape[-1], dtype=factor.dtype), shape=list(factor.shape))
    inv_factor = op("solve_triangular", factor, identity, lower=not upper)
    if upper:  # A = U^T U
        return op("matmul", inv_factor, _swap_last(inv_factor))
    return op("matmul", _swap_last(inv_factor), inv_factor)  # A = L L^T


def det(a):
    return op("det", _square(_float(a), "det"))


def inv(a):
    return op("inv", _square(_float(a), "inv"))


def eigh(a):
    w, v = op("eigh", _square(_float(a), "eigh"))
    return w, v


def lu_factor(a):
    lu, pivots = op("lu_factor", _float(a))
    return lu, pivots


def _solve(name, a, b, **attrs):
    a = _square(_float(a), name)
    b = convert_to_tensor(b, a.dtype)
    vector = b.ndim == a.ndim - 1
    if vector:
        b = op("reshape", b, shape=[*b.shape, 1])
    out = op(name, a, b, **attrs)
    if vector:
        out = op("reshape", out, shape=list(out.shape[:-1]))
    return out


def solve(a, b):
    return _solve("solve", a, b)


def solve_triangular(a, b, lower=False):
    return _solve("solve_triangular", a, b, lower=bool(lower))


def lstsq(a, b, rcond=None):
    a = _float(a)
    b = convert_to_tensor(b, a.dtype)
    return op("lstsq", a, b, rcond=-1.0 if rcond is None else float(rcond))


def svd(x, full_matrices=True, compute_uv=True):
    x = _float(x)
    u, s, vt = op("svd", x, full_matrices=bool(full_matrices))
    if not compute_uv:
        return s
    return u, s, vt


def _default_tol(s, m, n):
    eps = np.finfo(np.float32 if s.dtype in ("float16", "bfloat16") else s.dtype).eps
    smax = op("max", s, axes=[-1], keepdims=True)
    return op("multiply", smax, convert_to_tensor(max(m, n) * eps, s.dtype))


def matrix_rank(x, tol=None):
    x = _float(x)
    if x.ndim < 2:
        raise ValueError(
            "Expected input to have rank >= 2. "
            f"Received input with shape {x.shape}."
        )
    s = svd(x, full_matrices=False, compute_uv=False)
    if tol is None:
        tol = _default_tol(s, x.shape[-2], x.shape[-1])
    else:
        tol = convert_to_tensor(tol, s.dtype)
    return op("sum", cast(op("greater", s, tol), "int32"), axes=[-1], keepdims=False)


def pinv(x, rcond=None):
    x = _float(x)
    u, s, vt = svd(x, full_matrices=False)
    if rcond is None:
        cutoff = _default_tol(s, x.shape[-2], x.shape[-1])
    else:
        smax = op("max", s, axes=[-1], keepdims=True)
        cutoff = op("multiply", smax, convert_to_tensor(rcond, s.dtype))
    keep = op("greater", s, cutoff)
    safe = op("where", keep, s, convert_to_tensor(1, s.dtype))
    s_inv = op("where", keep, op("reciprocal", safe), convert_to_tensor(0, s.dtype))
    scaled = op("multiply", _swap_last(vt), op("reshape", s_inv, shape=[*s_inv.shape[:-1], 1, s_inv.shape[-1]]))
    return op("matmul", scaled, _swap_last(u))


def norm(x, ord=None, axis=None, keepdims=False):
    x = convert_to_tensor(x)
    if not is_float_dtype(x.dtype):
        x = cast(x, result_type(x.dtype, "float32"))
    if axis is None:
        axes = list(range(x.ndim))
    else:
        axes = knp._canonical_axes(axis, x.ndim)
    if len(axes) == 1 or (axis is None and x.ndim == 1):
        # vector norms
        a = op("abs", x)
        if ord is None or ord == 2:
            return op("sqrt", op("sum", op("square", x), axes=axes, keepdims=keepdims))
        if ord == float("inf"):
            return op("max", a, axes=axes, keepdims=keepdims)
        if ord == float("-inf"):
            return op("min", a, axes=axes, keepdims=keepdims)
        if ord == 0:
            nz = cast(op("not_equal", x, convert_to_tensor(0, x.dtype)), x.dtype)
            return op("sum", nz, axes=axes, keepdims=keepdims)
        if ord == 1:
            return op("sum", a, axes=axes, keepdims=keepdims)
        if isinstance(ord, str):
            raise ValueError(f"Invalid norm order '{ord}' for vectors")
        p = convert_to_tensor(ord, x.dtype)
        s = op("sum", op("power", a, p), axes=axes, keepdims=keepdims)
        return op("power", s, op("reciprocal", p))
    if len(axes) == 2 and (axis is not None or x.ndim == 2):
        r, c = axes
        if ord is None or ord == "fro":
            return op("sqrt", op("sum", op("square", x), axes=axes, keepdims=keepdims))
        a = op("abs", x)
        if ord in (1, -1):
            col = op("sum", a, axes=[r], keepdims=True)
            red = "max" if ord == 1 else "min"
            out = op(red, col, axes=[c], keepdims=True)
            return out if keepdims else knp.squeeze(out, axes)
        if ord in (float("inf"), float("-inf")):
            row = op("sum", a, axes=[c], keepdims=True)
            red = "max" if ord > 0 else "min"
            out = op(red, row, axes=[r], keepdims=True)
            return out if keepdims else knp.squeeze(out, axes)
        if ord in (2, -2, "nuc"):
            s = svd(knp._move_to_end(x, [r, c]), compute_uv=False)
            red = {2: "max", -2: "min", "nuc": "sum"}[ord]
            out = op(red, s, axes=[-1], keepdims=False)
            if keepdims:
                shape = [1 if i in (r, c) else d for i, d in enumerate(x.shape)]
                out = op("reshape", out, shape=shape)
            return out
        raise ValueError(f"Invalid norm order '{ord}' for matrices")
    if ord is None:
        return op("sqrt", op("sum", op("square", x), axes=axes, keepdims=keepdims))
    raise ValueError(f"Improper number of dimensions to norm: axis={axis}")


def eig(a):
    w, v = op("eig", _square(_float(a), "eig"))
    return w, v


def _sum_all(scalars):
    total = scalars[0]
    for s in scalars[1:]:
        total = knp.add(total, s)
    return total


def jvp(fun, primals, tangents, has_aux=False):
    """Forward mode as the VJP of a VJP.

    u -> J^T u (the backward pass of `fun`, recorded with ``create_graph``)
    is linear in u, so differentiating <J^T u, tangents> with respect to u
    gives J @ tangents exactly, with no forward-mode rules per op.
    """
    tree.assert_same_structure(primals, tangents)
    xs = [detached_leaf(convert_to_tensor(p), True) for p in tree.flatten(primals)]
    ts = [convert_to_tensor(t) for t in tree.flatten(tangents)]
    for x, t in zip(xs, ts):
        if x.shape != t.shape:
            raise ValueError(
                "Each tangent must have the shape of its primal. Received "
                f"primal shape {x.shape} and tangent shape {t.shape}"
            )
    depth = _C.tape_depth()
    _C.tape_push()  # outer: records the backward pass of `fun`
    _C.tape_push()  # inner: records `fun`; create_graph consumes it
    try:
        result = fun(*tree.pack_sequence_as(primals, xs))
        out, aux = result if has_aux else (result, None)
        outs = [convert_to_tensor(o) for o in tree.flatten(out)]
        # The seed u is ones, not zeros: the result does not depend on it (the
        # backward pass is linear in u), but the engine's check for a VJP that
        # drops its dependence on u only sees non-zero gradients.
        us = [
            detached_leaf(knp.ones_like(o), True) if is_float_dtype(o.dtype) else None
            for o in outs
        ]
        live = [u for u in us if u is not None]
        tangent_grads = [None] * len(live)
        if live:
            target = _sum_all(
                [op("sum", knp.multiply(o, u)) for o, u in zip(outs, us) if u is not None]
            )
            grads = _C.gradient(target, xs, create_graph=True)
            terms = [
                op("sum", knp.multiply(g, cast(t, g.dtype)))
                for g, t in zip(grads, ts)
                if g is not None
            ]
            if terms:
                tangent_grads = _C.gradient(_sum_all(terms), live)
    finally:
        # create_graph popped the inner tape, unless it failed first.
        while _C.tape_depth() > depth:
            _C.tape_pop()
    tangent_grads = iter(tangent_grads)
    tangents_out = []
    for o, u in zip(outs, us):
        g = next(tangent_grads) if u is not None else None
        tangents_out.append(g if g is not None else knp.zeros_like(o))
    primals_out = tree.pack_sequence_as(out, [op("stop_gradient", o) for o in outs])
    tangents_out = tree.pack_sequence_as(out, tangents_out)
    if has_aux:
        return primals_out, tangents_out, aux
    return primals_out, tangents_out
