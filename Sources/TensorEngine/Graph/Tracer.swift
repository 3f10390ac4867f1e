// Recording a program: while a trace is active on a thread, every op call that goes
// through the registry (`te_op_call`, `OpRegistry.call`) and every tape step (push, pop,
// requires-grad, gradient) is appended to it as it runs on real values, so the traced call
// is itself a correct first step.
//
// Values are tensors, identified by object identity. The trace holds a reference to every
// tensor it has named, so an identity is never reused by a new tensor while it runs. A
// tensor the trace meets that no recorded node produced and that was not declared with
// `declareInput` becomes a constant of the program (kept by reference).
//
// What cannot be replayed makes `end` fail with the reason instead of returning a program:
// a custom (foreign) VJP, a tape popped or differentiated that was pushed before the trace
// began, a tape left pushed, or running a program inside a trace.
//
// The trace is confined to the thread that began it (a thread-local, like the tape). With
// no trace active on any thread the hooks cost one relaxed load of a global counter; while
// some thread traces, the others pay a thread-local lookup.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// How many tracers exist (on any thread). Statically initialised, so reading it is one
/// load, where the thread-local key's lazy global costs a `swift_once` check and
/// `pthread_getspecific` a call (about 35 instructions per op together, measured).
@usableFromInline
let activeTraces = Atomic<Int>(0)

@usableFromInline
let tracerKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { ptr in
        Unmanaged<Tracer>.fromOpaque(ptr!).release()
    }
    return key
}()

public final class Tracer {
    private var valueOf: [ObjectIdentifier: Int] = [:]
    /// Every tensor named so far: keeps identities unique for the trace's lifetime.
    private var held: [Tensor] = []
    private var inputs: [Program.Input] = []
    private var constants: [Program.Constant] = []
    private var nodes: [GraphNode] = []
    private var valueCount = 0
    /// Tapes pushed within the trace and not yet popped.
    private var tapeDepth = 0
    /// Why the trace cannot be replayed (the first reason met); recording stops there.
    private var failure: String?

    private init() { activeTraces.wrappingAdd(1, ordering: .relaxed) }

    deinit { activeTraces.wrappingSubtract(1, ordering: .relaxed) }

    /// This thread's tracer. A thread always sees its own tracer's increment (program order),
    /// so a zero count means this thread has none.
    @inlinable
    static var current: Tracer? {
        guard activeTraces.load(ordering: .relaxed) != 0, let p = pthread_getspecific(tracerKey) else { return nil }
        return Unmanaged<Tracer>.fromOpaque(p).takeUnretainedValue()
    }

    /// Whether a trace is active on this thread.
    public static var isActive: Bool { pthread_getspecific(tracerKey) != nil }

    /// Starts a trace on this thread (traces do not nest).
    public static func begin() throws {
        guard pthread_getspecific(tracerKey) == nil else { throw EngineError.value("a trace is already active on this thread") }
        pthread_setspecific(tracerKey, Unmanaged.passRetained(Tracer()).toOpaque())
    }

    /// Declares `t` as the next program input. It must not have been used in the trace yet
    /// (a tensor already used is a constant or an op's result).
    public static func declareInput(_ t: Tensor) throws {
        guard let tr = current else { throw EngineError.value("no active trace") }
        guard tr.valueOf[ObjectIdentifier(t)] == nil else {
            throw EngineError.value("trace input \(tr.inputs.count) was already used in the trace")
        }
        let v = tr.name(t)
        tr.inputs.append(Program.Input(value: v, spec: TensorSpec(of: t), requiresGrad: t.requiresGrad))
    }

    /// Ends this thread's trace and returns the program computing `outputs` from the
    /// declared inputs (not yet optimised: see `Program.eliminatingDeadCode`). The trace
    /// ends whether or not this succeeds.
    public static func end(outputs: [Tensor]) throws -> Program {
        guard let tr = current else { throw EngineError.value("no active trace") }
        abort()
        if let f = tr.failure { throw EngineError.notImplemented("the trace cannot be replayed: \(f)") }
        guard tr.tapeDepth == 0 else {
            throw EngineError.notImplemented("the trace cannot be replayed: it ends with \(tr.tapeDepth) tape(s) it pushed still active")
        }
        let outs = outputs.map { Program.Output(value: tr.value(of: $0), spec: TensorSpec(of: $0)) }
        return try Program(valueCount: tr.valueCount, inputs: tr.inputs, outputs: outs, constants: tr.constants, nodes: tr.nodes)
    }

    /// Ends this thread's trace, if any, discarding it.
    public static func abort() {
        guard let p = pthread_getspecific(tracerKey) else { return }
        pthread_setspecific(tracerKey, nil)
        Unmanaged<Tracer>.fromOpaque(p).release()
    }

    // MARK: - Hooks (called by the registry, the C ABI and the tape)

    /// Records `op` applied to `inputs` giving `output` when a trace is active; returns `output`.
    /// The inputs and attributes are autoclosures so that an untraced call builds neither.
    @inlinable @inline(__always)
    public static func traced(_ op: Int32, _ output: Tensor, _ inputs: @autoclosure () -> [Tensor],
                              _ attrs: @autoclosure () -> Attrs) -> Tensor {
        if let tr = current { tr.recordOp(Int(op), inputs(), attrs(), [output]) }
        return output
    }

    /// `traced` for an op of several outputs.
    @inlinable @inline(__always)
    public static func traced(_ op: Int32, _ outputs: [Tensor], _ inputs: @autoclosure () -> [Tensor],
                              _ attrs: @autoclosure () -> Attrs) -> [Tensor] {
        if let tr = current { tr.recordOp(Int(op), inputs(), attrs(), outputs) }
        return outputs
    }

    static func tapePushed() {
        guard let tr = current, tr.failure == nil else { return }
        tr.tapeDepth += 1
        tr.nodes.append(.tapePush)
    }

    static func tapePopped() {
        guard let tr = current, tr.failure == nil else { return }
        guard tr.tapeDepth > 0 else { return tr.fail("a tape pushed before the trace began was popped") }
        tr.tapeDepth -= 1
        tr.nodes.append(.tapePop)
    }

    static func requiresGradSet(_ t: Tensor, _ flag: Bool) {
        guard let tr = current, tr.failure == nil else { return }
        tr.nodes.append(.setRequiresGrad(value: tr.value(of: t), flag: flag))
    }

    static func gradientTaken(_ target: Tensor, _ seed: Tensor?, _ sources: [Tensor], _ createGraph: Bool,
                              _ grads: [Tensor?]) {
        guard let tr = current, tr.failure == nil else { return }
        guard tr.tapeDepth >= (createGraph ? 2 : 1) else {
            return tr.fail("a gradient was taken from a tape pushed before the trace began")
        }
        if createGraph { tr.tapeDepth -= 1 }
        let t = tr.value(of: target), s = seed.map(tr.value(of:)), srcs = sources.map(tr.value(of:))
        let outs = grads.map { $0.map(tr.name) }
        tr.nodes.append(.gradient(target: t, seed: s, sources: srcs, createGraph: createGraph, outputs: outs))
    }

    /// Marks the active trace (if any) as not replayable, for `reason`.
    public static func unreplayable(_ reason: String) {
        guard let tr = current, tr.failure == nil else { return }
        tr.fail(reason)
    }

    static func programRunning() {
        unreplayable("a compiled program ran inside the trace")
    }

    // MARK: - Recording

    @usableFromInline
    func recordOp(_ op: Int, _ inputs: [Tensor], _ attrs: Attrs, _ outputs: [Tensor]) {
        guard failure == nil else { return }
        guard op >= 0, op < OpRegistry.ops.count else { return fail("op handle \(op) is not in the registry") }
        let ins = inputs.map(value(of:))
        let outs = outputs.map(name)
        nodes.append(.op(index: op, name: OpRegistry.ops[op].name, attrs: attrs, inputs: ins, outputs: outs))
    }

    private func fail(_ reason: String) {
        failure = reason
        // Nothing more is recorded: let go of what the trace held.
        valueOf = [:]
        held = []
        nodes = []
        constants = []
    }

    /// A new value id for `t` (a node's result, or an input); `t` now names it.
    private func name(_ t: Tensor) -> Int {
        let v = valueCount
        valueCount += 1
        valueOf[ObjectIdentifier(t)] = v
        held.append(t)
        return v
    }

    /// The value `t` names, making it a constant when the trace has not met it yet.
    private func value(of t: Tensor) -> Int {
        if let v = valueOf[ObjectIdentifier(t)] { return v }
        let v = name(t)
        constants.append(Program.Constant(value: v, tensor: t))
        return v
    }
}
