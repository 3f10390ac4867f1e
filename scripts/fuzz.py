"""Coverage-guided fuzzing of the extension's entry points with atheris (issue 20, item 5).

Each fuzz input is decoded into one of three calls:

0. ``_swiftkeras.op``: an op drawn from ``op_schemas()``, input tensors of drawn dtypes,
   shapes and raw bytes (so every bit pattern: NaN payloads, infinities, subnormals,
   extreme integers), attributes of the declared type or a wrong one (huge and negative
   ints, wrong types, unknown names);
1. the same call under a tape, then ``gradient`` of the sum of its first output with
   respect to every float input (the op's VJP on the drawn values);
2. ``graph_load`` of a file: bytes of graphs that ``graph_save`` wrote, mutated by the
   fuzzer; a file that loads is described, and run on zero inputs of its declared specs.

A call must return tensors or raise ValueError / TypeError / IndexError /
NotImplementedError. Anything else is a finding that libFuzzer saves as
``crash-<sha1>`` (a trap, a signal, another exception) or ``timeout-<sha1>`` (a call
beyond ``-timeout`` seconds) in the working directory; replay one with
``python scripts/fuzz.py crash-<sha1>`` and turn it into a regression test.

Coverage: the engine and the C extension are release builds without sanitizer coverage,
so atheris cannot see their branches. What guides the fuzzer instead is this module's
instrumented functions plus one instrumented function per hash of what a call did (the op, its
input dtypes and ranks, and its result or error class with the numbers left out): an
input that reaches a new error message or a new result kind is kept in the corpus.

Usage (libFuzzer flags pass through; corpus directories are read and added to):
    python scripts/fuzz.py -seed=1 -runs=300000 -max_total_time=120 corpus  # the CI slice (scripts/test.sh)
    python scripts/fuzz.py -max_total_time=3600 fuzz-corpus # a longer run, corpus kept
    KERAS_SWIFT_FUZZ_VERBOSE=1 python scripts/fuzz.py crash-<sha1>  # replay one, printing the call
Seed inputs (one call per op, and the graph files) are written to the first corpus
directory given, when there is one.
"""

import os
import re
import sys
import tempfile
import zlib

import atheris

import numpy as np

import _swiftkeras as C

ml_dtypes = None
try:
    import ml_dtypes
except ImportError:  # bfloat16/float8 inputs are then built from raw bytes only
    pass

VERBOSE = bool(os.environ.get("KERAS_SWIFT_FUZZ_VERBOSE"))
ALLOWED = (ValueError, TypeError, IndexError, NotImplementedError)
SCHEMAS = C.op_schemas()
# KERAS_SWIFT_FUZZ_SKIP=op,op leaves out ops with a finding not fixed yet, so that a run
# goes on to the next one.
NAMES = sorted(set(SCHEMAS) - set(filter(None, os.environ.get("KERAS_SWIFT_FUZZ_SKIP", "").split(","))))
DTYPES = list(C.DTYPES)
NARROW = {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}
# Positive sizes past the engine's allocation bound (physical memory, at most 2**40 bytes),
# so that an op must refuse them: a smaller one such as 2**31 is a legitimate output of
# gigabytes, which -rss_limit_mb would report as a finding.
HUGE = [2**62, -(2**62), 2**63 - 1, -(2**63), 2**41, -(2**41), 2**64, -1]
WRONG = ["zero", 1.5, None, [1, "a"], [[1]], b"x", (), {"a": 1}, True, object()]
FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, 2.0, 1e-3, float("nan"), float("inf"), float("-inf"), 1e300, -1e300]
STRINGS = ["", "SAME", "valid ", "\x00", "nearest", "constant", "float32", "add"]


def np_dtype(name):
    if name in NARROW:
        return np.dtype(getattr(ml_dtypes, name)) if ml_dtypes else np.dtype(NARROW[name])
    return np.dtype(name)


@atheris.instrument_func
def tensor(fdp, dtype, shape):
    """A tensor of `shape` whose bytes come from the fuzzer (bools read as 0/1)."""
    dt = np_dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    raw = fdp.ConsumeBytes(n * dt.itemsize)
    raw += bytes(n * dt.itemsize - len(raw))
    a = np.frombuffer(raw, dtype=np.uint8 if dtype == "bool" else dt)
    if dtype == "bool":
        a = (a & 1).astype(bool)
    return C.from_buffer(np.array(a.reshape(shape), order="C"), dtype)


@atheris.instrument_func
def shape_of(fdp, base):
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind <= 4:
        return base
    if kind <= 6:
        return base[fdp.ConsumeIntInRange(0, len(base)):]
    if kind == 7:
        # An empty tensor with a huge side (checked sizes, loops that never end), past the
        # allocation bound as HUGE is.
        return (0, fdp.PickValueInList([2**41, 2**62]))
    return tuple(fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(0, 5)))


@atheris.instrument_func
def attr_value(fdp, spec):
    t = spec["type"]
    roll = fdp.ConsumeIntInRange(0, 9)
    if roll == 9:
        return fdp.PickValueInList(WRONG)
    if t == "int":
        return fdp.ConsumeIntInRange(-3, 5) if roll < 7 else fdp.PickValueInList(HUGE)
    if t == "ints":
        n = fdp.ConsumeIntInRange(0, 5)
        if roll < 7:
            return [fdp.ConsumeIntInRange(-3, 5) for _ in range(n)]
        return [fdp.PickValueInList(HUGE + [0, 1, 2]) for _ in range(n)]
    if t == "float":
        return fdp.PickValueInList(FLOATS) if roll < 6 else fdp.ConsumeRegularFloat() if roll < 8 else fdp.PickValueInList(HUGE)
    if t == "floats":
        return [fdp.PickValueInList(FLOATS) for _ in range(fdp.ConsumeIntInRange(0, 5))]
    if t == "bool":
        return fdp.ConsumeBool() if roll < 8 else fdp.ConsumeIntInRange(-1, 2)
    if t == "dtype":
        return fdp.PickValueInList(DTYPES) if roll < 8 else fdp.PickValueInList(["float128", "int4", "", "Float32"])
    if t == "string":
        choices = spec.get("choices") or []
        if choices and roll < 7:
            return fdp.PickValueInList(choices)
        return fdp.PickValueInList(STRINGS) if roll < 8 else fdp.ConsumeUnicodeNoSurrogates(6)
    return fdp.PickValueInList(WRONG)


@atheris.instrument_func
def op_call(fdp):
    name = NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]
    schema = SCHEMAS[name]
    base = tuple(fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(0, 4)))
    inputs = []
    for spec in schema["inputs"]:
        if spec["optional"] and fdp.ConsumeBool():
            break  # optional inputs only trail
        for _ in range(fdp.ConsumeIntInRange(0, 3) if spec["variadic"] else 1):
            accepted = spec["dtypes"] or DTYPES
            dtype = fdp.PickValueInList(accepted if fdp.ConsumeIntInRange(0, 3) else DTYPES)
            try:
                inputs.append(tensor(fdp, dtype, shape_of(fdp, base)))
            except ALLOWED:
                return None  # from_buffer refused the shape: no call to make
    attrs = {}
    for spec in schema["attrs"]:
        if fdp.ConsumeIntInRange(0, 9) < (9 if spec["required"] else 5):
            attrs[spec["name"]] = attr_value(fdp, spec)
    if fdp.ConsumeIntInRange(0, 19) == 0:
        attrs["no_such_attribute"] = fdp.ConsumeIntInRange(-3, 3)
    return name, inputs, attrs


def _feature_functions(count):
    """`count` one-line functions, each instrumented by atheris: calling the one a hash of
    what a call did picks (op, dtypes, ranks, result or error class) gives libFuzzer a
    coverage signal from inside the uninstrumented engine. (One function per feature:
    atheris instruments a function with many branches in time that grows steeply.)"""
    out = []
    for k in range(count):
        namespace = {}
        exec(f"def feature_{k}():\n    return {k}\n", namespace)
        out.append(atheris.instrument_func(namespace[f"feature_{k}"]))
    return out


FEATURES = _feature_functions(1 << 15)  # about 5 s to instrument; 8192 filled up within minutes


def observe(name, inputs, outcome):
    """Reports (op, input dtypes and ranks, outcome) as a coverage feature."""
    if isinstance(outcome, BaseException):
        outcome = type(outcome).__name__ + re.sub(r"[-0-9]+", "#", str(outcome))[:48]
    key = f"{name}|{','.join(f'{t.dtype}/{t.ndim}' for t in inputs)}|{outcome}"
    FEATURES[zlib.crc32(key.encode()) % len(FEATURES)]()


def call_op(name, inputs, attrs):
    """Every output of an op, as a tuple (op() returns a one-output op's Tensor)."""
    out = C.op(name, *inputs, **attrs)
    return out if isinstance(out, tuple) else (out,)


def check_outputs(name, outs):
    if not isinstance(outs, tuple):
        raise AssertionError(f"{name} returned {type(outs)}, not a tuple")
    for o in outs:
        if not isinstance(o, C.Tensor):
            raise AssertionError(f"{name} returned a {type(o)}")
        # The buffer agrees with the shape and dtype (narrow floats export raw bytes only).
        a = np.frombuffer(o, np_dtype(o.dtype)) if o.dtype in NARROW else np.asarray(memoryview(o))
        a = a.reshape(o.shape)
        if a.shape != tuple(o.shape) or a.nbytes != o.nbytes or a.size != o.size:
            raise AssertionError(f"{name}: an array of {a.shape}, {a.nbytes} bytes for {o.shape} {o.dtype}")


@atheris.instrument_func
def run_op(fdp, with_gradient):
    call = op_call(fdp)
    if call is None:
        return
    name, inputs, attrs = call
    if VERBOSE:  # the call a replayed finding makes
        print(f"{'gradient of ' if with_gradient else ''}{name}",
              [(t.dtype, t.shape, np.asarray(memoryview(t)).ravel()[:8].tolist() if t.dtype not in NARROW else "raw")
               for t in inputs], attrs, flush=True)
    if not with_gradient:
        try:
            outs = call_op(name, inputs, attrs)
        except ALLOWED as e:
            observe(name, inputs, e)
            return
        check_outputs(name, outs)
        observe(name, inputs, "ok " + ",".join(f"{o.dtype}/{o.ndim}" for o in outs))
        return
    watched = [t for t in inputs if t.dtype in ("float32", "float64", "float16", "bfloat16")]
    C.tape_push()
    try:
        for t in watched:
            t.requires_grad = True
        try:
            outs = call_op(name, inputs, attrs)
            check_outputs(name, outs)
            loss = C.op("sum", outs[0])
            C.gradient(loss, watched)
            observe("grad " + name, inputs, "ok")
        except ALLOWED as e:
            observe("grad " + name, inputs, e)
            return
    finally:
        C.tape_pop()


def seed_graphs():
    """Files graph_save writes for a few small traces: the seeds the mutations start from."""
    graphs = []
    x = C.from_buffer(np.arange(6, dtype="float32").reshape(2, 3), "float32")
    w = C.from_buffer(np.ones((3, 2), "float32"), "float32")
    traces = [
        lambda a: [C.op("add", C.op("matmul", a, w), C.op("sum", a))],
        lambda a: [C.op("relu", a), C.op("reshape", a, shape=[3, 2])],
        lambda a: [C.op("softmax", a, axis=-1)] if "softmax" in SCHEMAS else [C.op("exp", a)],
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, fn in enumerate(traces):
            C.trace_begin()
            try:
                C.trace_input(x)
                g = C.trace_end(fn(x))
            except BaseException:
                C.trace_abort()
                raise
            path = os.path.join(tmp, f"{i}.graph")
            C.graph_save(g, path)
            with open(path, "rb") as f:
                graphs.append(f.read())
    return graphs


SEEDS = seed_graphs()
GRAPH_FILE = os.path.join(tempfile.mkdtemp(prefix="fuzz-graph-"), "g.graph")


@atheris.instrument_func
def run_graph(fdp):
    data = fdp.ConsumeBytes(fdp.remaining_bytes())
    # Short inputs splice onto a real graph so that mutations start from a valid file.
    if len(data) < 16 and data:
        seed = bytearray(SEEDS[data[0] % len(SEEDS)])
        for i in range(1, len(data) - 1, 2):
            seed[(data[i] * 7919) % len(seed)] = data[i + 1]
        data = bytes(seed)
    with open(GRAPH_FILE, "wb") as f:
        f.write(data)
    try:
        g = C.graph_load(GRAPH_FILE)
    except ALLOWED as e:
        observe("graph_load", [], e)
        return
    C.graph_info(g)
    desc = C.graph_describe(g)
    inputs = []
    for spec in desc["inputs"]:
        shape, dtype = tuple(spec["shape"]), spec["dtype"]
        if int(np.prod(shape, dtype=np.int64)) > 1 << 16:
            return  # a legitimate but large input: not what this fuzzes
        inputs.append(C.from_buffer(np.zeros(shape, np_dtype(dtype)), dtype))
    try:
        outs = C.graph_run(g, inputs)
    except ALLOWED as e:
        observe("graph_run", inputs, e)
        return
    check_outputs("graph_run", outs)
    observe("graph_run", inputs, "ok")


@atheris.instrument_func
def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 7)
    if mode <= 4:
        run_op(fdp, with_gradient=False)
    elif mode <= 5:
        run_op(fdp, with_gradient=True)
    else:
        run_graph(fdp)


def write_seed_corpus(directory):
    os.makedirs(directory, exist_ok=True)
    for i, data in enumerate(SEEDS):
        with open(os.path.join(directory, f"seed-graph-{i}"), "wb") as f:
            f.write(bytes([7]) + data)
    for i in range(len(NAMES)):  # one input per op: the name index, then zeros
        with open(os.path.join(directory, f"seed-op-{i}"), "wb") as f:
            f.write(bytes([0]) + i.to_bytes(4, "little") + bytes(64))


def main():
    corpora = [a for a in sys.argv[1:] if not a.startswith("-") and not os.path.isfile(a)]
    if corpora:
        write_seed_corpus(corpora[0])
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
