"""Gradients for custom training on the swift backend.

Two public shapes over the engine's tape, so that Keras's "custom training"
guides port with their imports changed:

* ``GradientTape`` (TensorFlow's): ``with GradientTape() as tape:`` records,
  ``tape.gradient(target, sources)`` differentiates after the block.
* ``value_and_grad`` / ``grad`` (JAX's): a function of tensors (typically
  around ``model.stateless_call``) and its gradient with respect to the
  arguments ``argnums`` names.

The engine keeps a stack of tapes per thread and records an op onto the
innermost one when an input is a gradient leaf (``requires_grad``) or was
recorded there. A ``GradientTape`` pushes a tape on entry and keeps it
after the ``with`` block, so that ``gradient()`` can run afterwards as in
TensorFlow; the tape is popped by the (only, unless ``persistent``)
``gradient()`` call or when the ``GradientTape`` object goes away. A
gradient taken while the tape beneath records (nested tapes, ``grad`` of
``grad``) uses the engine's ``create_graph``, which consumes the tape and
records the backward pass onto the one beneath: that is how higher-order
gradients (gradient penalties) work.

Differences from TensorFlow / JAX, by design of the engine:

* a non-scalar target is summed (as TensorFlow does: the seed is ones);
  ``value_and_grad`` requires a scalar output (as JAX does);
* a tape's record must be the innermost one when its gradient is taken: take
  a tape's gradients before entering an unrelated tape, or nest the tapes;
* a persistent tape nested in a recording tape gives one differentiable set
  of gradients (``create_graph`` consumes the record); a second ``gradient()``
  raises;
* ``gradient()`` called inside the ``with`` block of a persistent tape is not
  recorded (take higher-order gradients with a nested tape);
* a Variable's gradient is taken for the value it held when this tape first
  differentiated with respect to it (an assignment swaps in a fresh leaf).
"""

import contextlib
import functools
import threading

from keras.src import tree
from keras.src.backend.common.variables import Variable as KerasVariable
from keras_swift.src.core import convert_to_tensor
from keras_swift.src.core import is_float_dtype
from keras_swift.src.engine import _C
from keras_swift.src.engine import op
from keras_swift.src.ops import numpy as knp
from keras_swift.src.sparse import collect_row_reads
from keras_swift.src.sparse import gradient_with_row_reads
from keras_swift.src.variable import detached_leaf

__all__ = ["GradientTape", "grad", "value_and_grad"]


def _require_swift(api):
    from keras.src.backend import backend

    if backend() != "swift":
        raise RuntimeError(
            f"keras_swift.{api} differentiates on the swift backend's tape; "
            f"Keras runs on {backend()!r} here (set KERAS_BACKEND=swift)."
        )


def _is_differentiable(dtype):
    return is_float_dtype(dtype) or dtype.startswith("complex")


# ---------------------------------------------------------------------------
# The engine tapes this module pushed, per thread
# ---------------------------------------------------------------------------

_local = threading.local()


def _frames():
    frames = getattr(_local, "frames", None)
    if frames is None:
        frames = _local.frames = []
    return frames


class _Frame:
    """One engine tape pushed here: its depth on the thread's stack, whether
    ops in flight are meant to be recorded on it (a tape inside its ``with``
    block, a function under ``value_and_grad``) and whether its owner is done
    with it."""

    __slots__ = ("depth", "recording", "released", "thread")

    def __init__(self, recording):
        _C.tape_push()
        self.depth = _C.tape_depth()
        self.recording = recording
        self.released = False
        self.thread = threading.get_ident()
        _frames().append(self)


def _sweep():
    """Pops the released frames on top of this thread's stack.

    A frame released while a tape pushed after it is still open (its owner
    was collected late, or released out of order) stays until that tape is
    gone; the next call here pops it.
    """
    frames = _frames()
    while frames and frames[-1].released:
        depth = _C.tape_depth()
        if depth > frames[-1].depth:
            return
        if depth == frames[-1].depth:
            _C.tape_pop()
        frames.pop()


_NOTHING = []  # a scalar no gradient depends on (made on first use)


def _release(frame):
    """Done with ``frame``. Beneath a recording tape its record joins that
    tape (an empty ``create_graph`` gradient moves it) instead of vanishing:
    as in TensorFlow, what ran inside a nested tape stays differentiable by
    the enclosing one."""
    mine = frame.thread == threading.get_ident()
    if mine and not frame.released and _C.tape_depth() == frame.depth and _records_beneath(frame):
        if not _NOTHING:
            _NOTHING.append(convert_to_tensor(0.0))
        _C.gradient(_NOTHING[0], [], create_graph=True)
        _consumed(frame)
        return
    frame.released = True
    frame.recording = False
    if mine:
        _sweep()


def _consumed(frame):
    """``create_graph`` popped ``frame``'s engine tape."""
    frame.released = True
    frame.recording = False
    frames = _frames()
    if frame in frames:
        frames.remove(frame)
    _sweep()


def _records_beneath(frame):
    """Whether the tape under ``frame`` records, so that gradients taken on
    ``frame`` must be recorded onto it (``create_graph``).

    A tape pushed outside this module (a built-in train step, ``jvp``) is
    assumed to record: dropping a derivative silently would be worse than
    recording a backward pass nobody differentiates.
    """
    below = frame.depth - 1
    if below <= 0:
        return False
    for f in reversed(_frames()):
        if f.depth == below and f is not frame:
            return f.recording and not f.released
        if f.depth < below:
            break
    return True


def _unflag(tensors):
    for t in tensors:
        t.requires_grad = False
    tensors.clear()


# ---------------------------------------------------------------------------
# GradientTape
# ---------------------------------------------------------------------------


def _unconnected_mode(value):
    value = getattr(value, "value", value)
    if value not in ("none", "zero"):
        raise ValueError(
            "unconnected_gradients must be 'none' or 'zero'; received "
            f"{value!r}"
        )
    return value


class GradientTape:
    """Records operations for automatic differentiation (TensorFlow's shape).

    ```python
    with keras_swift.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = loss_fn(y, y_pred)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    ```

    Trainable Variables are watched without asking (unless
    ``watch_accessed_variables=False``); other tensors need ``watch()``.
    Sources that the target does not depend on, and tensors that were not
    watched, get ``None`` (or zeros with ``unconnected_gradients="zero"``).
    A non-persistent tape gives one set of gradients; ``persistent=True``
    any number until the tape object is dropped.
    """

    def __init__(self, persistent=False, watch_accessed_variables=True):
        _require_swift("GradientTape")
        self._persistent = bool(persistent)
        self._watch_accessed_variables = bool(watch_accessed_variables)
        self._frame = None
        self._stop = None
        self._recording = False
        self._entered = False
        self._done = None  # why gradient() can no longer run
        self._flagged = []  # tensors watch() made leaves; unflagged on release
        self._watched = {}  # id -> Variable watched explicitly
        self._leaves = {}  # id -> (Variable, leaf) differentiated so far
        self._reads = []  # one list of row reads per `with` block
        self._reads_scope = None

    # -- recording ------------------------------------------------------------
    def __enter__(self):
        if self._recording:
            raise ValueError(
                "This GradientTape is already recording; a tape cannot be "
                "entered again from inside its own `with` block."
            )
        _sweep()
        if self._frame is not None and not self._frame.released:
            # Re-entered (a persistent tape, or before gradient()): recording
            # resumes on the same record, which must still be on top.
            if _C.tape_depth() != self._frame.depth:
                raise RuntimeError(
                    "This GradientTape cannot resume recording: a tape "
                    "started after it is still open."
                )
        elif self._entered:
            raise RuntimeError(
                "This GradientTape's record was already used up "
                f"({self._done}); create a new GradientTape."
            )
        else:
            self._frame = _Frame(recording=True)
        self._entered = True
        self._recording = True
        self._frame.recording = True
        # Row-sparse reads (see sparse.collect_row_reads) cut the rows' path
        # back to the variable, which a tape beneath would need.
        self._reads_scope = collect_row_reads(enabled=not _records_beneath(self._frame))
        reads = self._reads_scope.__enter__()
        if reads is not None:
            self._reads.append(reads)
        return self

    def __exit__(self, exc_type, exc, tb):
        scope, self._reads_scope = self._reads_scope, None
        if scope is not None:
            scope.__exit__(None, None, None)
        self._recording = False
        if self._frame is not None:
            self._frame.recording = False
        if exc_type is not None:
            # The block failed: nothing will differentiate this record.
            self._release("the `with` block raised")
        return False

    @contextlib.contextmanager
    def stop_recording(self):
        """Temporarily stops recording: what runs in the block is a constant
        to this tape (it runs on a throwaway tape that is then discarded)."""
        if not self._recording:
            raise ValueError(
                "stop_recording() needs a recording tape: call it inside the "
                "tape's `with` block."
            )
        if _C.tape_depth() != self._frame.depth:
            raise RuntimeError(
                "stop_recording(): a tape started inside this tape's block is "
                "still open."
            )
        self._recording = False
        self._frame.recording = False
        self._stop = _Frame(recording=False)
        try:
            with collect_row_reads(enabled=False):
                yield
        finally:
            stop, self._stop = self._stop, None
            if stop is not None:
                _release(stop)
            if self._frame is not None and not self._frame.released:
                self._recording = True
                self._frame.recording = True

    def watch(self, tensor):
        """Makes ``tensor`` (a tensor, a Variable or a nest of them) a source
        that ``gradient()`` can differentiate with respect to."""
        if self._frame is None or self._frame.released:
            raise RuntimeError(
                "watch() needs an active tape: call it inside "
                "`with keras_swift.GradientTape() as tape:`."
            )
        for t in tree.flatten(tensor):
            if isinstance(t, KerasVariable):
                self._watched[id(t)] = t
                t = t._value
            elif not isinstance(t, _C.Tensor):
                raise TypeError(
                    "GradientTape.watch() takes tensors or Keras Variables; "
                    f"received {type(t).__name__}"
                )
            # Like TensorFlow, integer tensors are not watched: nothing
            # differentiates with respect to them.
            if _is_differentiable(t.dtype) and not t.requires_grad:
                t.requires_grad = True
                self._flagged.append(t)

    def reset(self):
        """Drops what the tape recorded so far and records afresh (inside its
        `with` block, as TensorFlow's)."""
        if not self._recording:
            raise ValueError("reset() needs a recording tape (inside its `with` block).")
        if _C.tape_depth() != self._frame.depth:
            raise RuntimeError("reset(): a tape started inside this tape's block is still open.")
        _C.tape_pop()
        _C.tape_push()
        for reads in self._reads:
            reads.clear()
        self._leaves.clear()

    # -- differentiating ------------------------------------------------------
    def gradient(
        self,
        target,
        sources,
        output_gradients=None,
        unconnected_gradients="none",
    ):
        """Gradients of ``target`` with respect to ``sources``.

        ``target`` is a tensor or a nest of them; a non-scalar target (and a
        nest) counts as the sum of its elements, each weighted by
        ``output_gradients`` when given (same structure as ``target``).
        The result has the structure of ``sources``; ``None`` for a source
        the target does not depend on (zeros with
        ``unconnected_gradients="zero"``). A Variable read only through
        row gathers of a sparse product gets an ``IndexedSlices``.
        """
        unconnected = _unconnected_mode(unconnected_gradients)
        frame = self._frame
        if frame is None or frame.released:
            if self._done is not None and self._persistent:
                raise RuntimeError(
                    "This persistent GradientTape has no record left "
                    f"({self._done}): nested in a recording tape, a tape "
                    "gives one differentiable set of gradients; take them "
                    "all in one gradient() call (sources may be a nest)."
                )
            if self._done is not None:
                raise RuntimeError(
                    "GradientTape.gradient() can only be called once on a "
                    f"non-persistent tape ({self._done}); create the tape "
                    "with persistent=True to take several gradients."
                )
            raise RuntimeError(
                "GradientTape.gradient() needs a tape that recorded the "
                "computation: compute the target inside "
                "`with keras_swift.GradientTape() as tape:` first."
            )
        if frame.thread != threading.get_ident():
            raise RuntimeError(
                "GradientTape.gradient() must run on the thread that recorded the tape."
            )
        flat_sources = tree.flatten(sources)
        leaves = [self._source_leaf(s) for s in flat_sources]
        targets, seeds = _targets(target, output_gradients)

        inside = self._recording
        if inside and not self._persistent:
            # As TensorFlow: differentiating inside the block of a
            # non-persistent tape stops its recording.
            self._recording = False
            frame.recording = False
        create_graph = not (inside and self._persistent) and _records_beneath(frame)

        live = [leaf for leaf in leaves if leaf is not None]
        with self._on_top():
            total, seed = _combine(targets, seeds)
            if total is None or not live:
                grads = [None] * len(live)
                create_graph = False
            else:
                try:
                    grads = gradient_with_row_reads(
                        total,
                        live,
                        [r for reads in self._reads for r in reads],
                        seed=seed,
                        create_graph=create_graph,
                    )
                except BaseException:
                    if _C.tape_depth() < frame.depth:  # create_graph popped it first
                        _consumed(frame)
                        self._frame = None
                        self._finish("a differentiable gradient() failed")
                    raise
            if create_graph:
                _consumed(frame)
                self._frame = None
                self._finish("its record went into a differentiable gradient")
            elif not self._persistent:
                self._release("gradient() was called")

        grads = iter(grads)
        out = []
        for leaf in leaves:
            g = next(grads) if leaf is not None else None
            if g is None and unconnected == "zero":
                g = knp.zeros_like(leaf)
            out.append(g)
        return tree.pack_sequence_as(sources, out)

    def _source_leaf(self, source):
        if isinstance(source, KerasVariable):
            if not self._watch_accessed_variables and id(source) not in self._watched:
                return None
            held = self._leaves.get(id(source))
            if held is None:
                held = self._leaves[id(source)] = (source, source._value)
            return held[1]
        if isinstance(source, _C.Tensor):
            return source
        raise TypeError(
            "GradientTape.gradient(): sources must be tensors or Keras "
            f"Variables (or a nest of them); received {type(source).__name__}"
        )

    @contextlib.contextmanager
    def _on_top(self):
        """Runs the block with this tape's record innermost, setting aside
        the throwaway tape of a ``stop_recording()`` block in progress (what
        it recorded is discarded anyway)."""
        _sweep()
        depth = _C.tape_depth()
        stop = self._stop
        if stop is not None and depth == stop.depth == self._frame.depth + 1:
            stop.released = True
            _sweep()
            try:
                yield
            finally:
                self._stop = _Frame(recording=False)
            return
        if depth != self._frame.depth:
            raise RuntimeError(
                "GradientTape.gradient(): this tape's record is not the "
                "innermost one on this thread (a tape started after it is "
                "still open, or a persistent tape started after it is still "
                "alive). Take a tape's gradients before starting an unrelated "
                "tape, or nest the tapes."
            )
        yield

    def _finish(self, why):
        self._done = why
        self._leaves.clear()
        self._reads = []
        _unflag(self._flagged)

    def _release(self, why):
        frame, self._frame = self._frame, None
        if frame is not None and not frame.released:
            _release(frame)
        self._finish(why)

    def __del__(self):
        try:
            frame = self._frame
            if frame is not None and not frame.released:
                self._frame = None
                _release(frame)
            _unflag(self._flagged)
        except Exception:  # interpreter shutdown: the tapes go with the thread
            pass


def _targets(target, output_gradients):
    flat = []
    for t in tree.flatten(target):
        if isinstance(t, KerasVariable):
            t = t.value
        if not isinstance(t, _C.Tensor):
            raise TypeError(
                "GradientTape.gradient(): the target must be a tensor (or a "
                f"nest of tensors); received {type(t).__name__}"
            )
        flat.append(t)
    if output_gradients is None:
        return flat, [None] * len(flat)
    seeds = tree.flatten(output_gradients)
    if len(seeds) != len(flat):
        raise ValueError(
            f"output_gradients has {len(seeds)} entries for a target of "
            f"{len(flat)} tensors; give one per target tensor (or None)."
        )
    out = []
    for t, s in zip(flat, seeds):
        if s is not None:
            s = convert_to_tensor(s, dtype=t.dtype)
            if tuple(s.shape) != tuple(t.shape):
                raise ValueError(
                    f"output_gradients entry of shape {tuple(s.shape)} does "
                    f"not match its target's shape {tuple(t.shape)}"
                )
        out.append(s)
    return flat, out


def _combine(targets, seeds):
    """One scalar (or one seeded tensor) whose gradient is the sum of the
    targets' gradients; integer targets have none (as in TensorFlow)."""
    pairs = [(t, s) for t, s in zip(targets, seeds) if _is_differentiable(t.dtype)]
    if not pairs:
        return None, None
    if len(pairs) == 1:
        return pairs[0]
    total = None
    for t, s in pairs:
        term = knp.sum(t if s is None else knp.multiply(t, s))
        total = term if total is None else knp.add(total, term)
    return total, None


# ---------------------------------------------------------------------------
# value_and_grad / grad
# ---------------------------------------------------------------------------


def _argnums(argnums):
    if isinstance(argnums, int):
        return (argnums,), True
    try:
        nums = tuple(argnums)
    except TypeError:
        nums = None
    if not nums or not all(isinstance(n, int) for n in nums):
        raise TypeError(
            "argnums must be an int or a non-empty sequence of ints; "
            f"received {argnums!r}"
        )
    return nums, False


def _source_tensor(x, api):
    if isinstance(x, KerasVariable):
        x = x.value
    elif not isinstance(x, _C.Tensor):
        x = convert_to_tensor(x)
    if not _is_differentiable(x.dtype):
        raise TypeError(
            f"{api} requires floating-point inputs to differentiate with "
            f"respect to; received one of dtype {x.dtype}. Pass integer "
            "arguments outside argnums."
        )
    return x


def value_and_grad(fun, argnums=0, has_aux=False):
    """``fun`` and its gradient with respect to the arguments ``argnums``
    names (JAX's shape).

    ``value_and_grad(fun)(*args, **kwargs)`` returns ``(value, grads)``,
    ``((value, aux), grads)`` with ``has_aux=True`` (``fun`` then returns
    ``(value, aux)``). ``value`` must be a scalar. Each differentiated
    argument may be a tensor, a Variable or a nest of them; its gradient has
    the same structure (zeros where ``fun`` does not depend on it). With a
    sequence ``argnums`` the gradients are a tuple, one per argument.

    ```python
    grad_fn = keras_swift.value_and_grad(compute_loss, has_aux=True)
    (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
    trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
    ```
    """
    nums, single = _argnums(argnums)
    name = "value_and_grad"

    @functools.wraps(fun)
    def value_and_grad_fun(*args, **kwargs):
        _require_swift(name)
        n = len(args)
        for k in nums:
            if not -n <= k < n:
                raise TypeError(
                    f"{name}: argnums={argnums!r} names argument {k}, but the "
                    f"function was called with {n} positional arguments."
                )
        _sweep()
        frame = _Frame(recording=True)
        created = False
        flagged = []
        try:
            # Beneath a recording tape the sources are the caller's own
            # tensors, so that the recorded backward pass stays connected to
            # them (grad of grad); otherwise fresh leaves, which keep a
            # tensor used twice (or also closed over) apart.
            connected = _records_beneath(frame)
            args = list(args)
            sources = []
            for k in nums:
                flat = []
                for x in tree.flatten(args[k]):
                    if x is None:
                        flat.append(None)
                        continue
                    x = _source_tensor(x, name)
                    if connected:
                        if not x.requires_grad:
                            x.requires_grad = True
                            flagged.append(x)
                    else:
                        x = detached_leaf(x, True)
                        flagged.append(x)
                    flat.append(x)
                sources.append(flat)
                args[k] = tree.pack_sequence_as(args[k], flat)
            with collect_row_reads(enabled=False):
                out = fun(*args, **kwargs)
            if has_aux:
                if not isinstance(out, (tuple, list)) or len(out) != 2:
                    raise TypeError(
                        f"{name} with has_aux=True needs the function to "
                        "return a pair (value, aux); it returned "
                        f"{type(out).__name__}"
                    )
                value, aux = out
            else:
                value, aux = out, None
            value = value.value if isinstance(value, KerasVariable) else convert_to_tensor(value)
            if tuple(value.shape) != ():
                raise TypeError(
                    f"{name}: gradients are only defined for a function with "
                    f"a scalar output; it returned shape {tuple(value.shape)}"
                )
            if not is_float_dtype(value.dtype):
                raise TypeError(
                    f"{name}: the function must return a floating-point "
                    f"scalar; it returned dtype {value.dtype}"
                )
            live = [s for flat in sources for s in flat if s is not None]
            grads = _C.gradient(value, live, create_graph=connected) if live else []
            created = connected and bool(live)
        finally:
            if created:
                _consumed(frame)
            else:
                _release(frame)
            _unflag(flagged)
        grads = iter(grads)
        per_arg = []
        for k, flat in zip(nums, sources):
            gs = []
            for s in flat:
                if s is None:
                    gs.append(None)
                    continue
                g = next(grads)
                gs.append(knp.zeros_like(s) if g is None else g)
            per_arg.append(tree.pack_sequence_as(args[k], gs))
        grads = per_arg[0] if single else tuple(per_arg)
        if not connected:
            value = op("stop_gradient", value)
        return ((value, aux) if has_aux else value), grads

    return value_and_grad_fun


def grad(fun, argnums=0, has_aux=False):
    """The gradient of the scalar ``fun`` with respect to the arguments
    ``argnums`` names (JAX's shape): ``grad(fun)(*args)`` returns the
    gradients, ``(grads, aux)`` with ``has_aux=True``. See
    ``value_and_grad``."""
    value_and_grad_fun = value_and_grad(fun, argnums=argnums, has_aux=has_aux)

    @functools.wraps(fun)
    def grad_fun(*args, **kwargs):
        out, grads = value_and_grad_fun(*args, **kwargs)
        if has_aux:
            return grads, out[1]
        return grads

    return grad_fun
