#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One recorded op application: the tracked inputs and how to map the output's gradient
/// to theirs. Released (inputs and closure dropped) when its tape is popped, or by the last
/// `vjp` node of a program that runs it (Program.swift), which also breaks the output →
/// node → closure → output cycle.
final class TapeNode {
    var inputs: [Tensor]
    var backward: ((Tensor) throws -> [Tensor?])?
    let outputShape: [Int]

    init(inputs: [Tensor], outputShape: [Int], backward: @escaping (Tensor) throws -> [Tensor?]) {
        self.inputs = inputs
        self.backward = backward
        self.outputShape = outputShape
    }

    var isLive: Bool { backward != nil }

    func release() {
        inputs = []
        backward = nil
    }
}

/// Per-thread autodiff state: a stack of tapes and a pause counter (gradient computation and
/// `stop_gradient` run with recording paused); also the buffers a compiled program's runner
/// offers the op it runs (`BufferReuse`).
final class TapeState {
    // One per thread, so no two accesses can overlap; the dynamic exclusivity checks cost
    // every op (Tape.record reads both).
    @exclusivity(unchecked) var tapes: [[TapeNode]] = []
    @exclusivity(unchecked) var paused = 0
    /// While a VJP runs in `backpropagate`: which of its node's inputs are tracked.
    @exclusivity(unchecked) var inputsTracked: [Bool]?
    @exclusivity(unchecked) var reusable: [Tensor] = []
}

private let tapeKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { ptr in
        Unmanaged<TapeState>.fromOpaque(ptr!).release()
    }
    return key
}()

func currentTapeState() -> TapeState {
    if let p = pthread_getspecific(tapeKey) {
        return Unmanaged<TapeState>.fromOpaque(p).takeUnretainedValue()
    }
    let s = TapeState()
    pthread_setspecific(tapeKey, Unmanaged.passRetained(s).toOpaque())
    return s
}

/// Reverse-mode autodiff. Ops record onto the innermost tape of the calling thread when an
/// input requires a gradient or was itself recorded there.
public enum Tape {
    /// Starts recording (tapes nest).
    public static func push() {
        currentTapeState().tapes.append([])
        Tracer.tapePushed()
    }

    /// Stops the innermost tape and frees what it recorded.
    public static func pop() throws {
        let s = currentTapeState()
        guard let nodes = s.tapes.popLast() else { throw EngineError.value("no active tape to pop") }
        for n in nodes { n.release() }
        Tracer.tapePopped()
    }

    public static var depth: Int { currentTapeState().tapes.count }

    /// Runs `body` with recording paused.
    public static func paused<R>(_ body: () throws -> R) rethrows -> R {
        let s = currentTapeState()
        s.paused += 1
        defer { s.paused -= 1 }
        return try body()
    }

    /// Whether the VJP running now must produce the gradient of its node's input `i` (the
    /// index in the array it returns): false for an input that is not tracked, whose gradient
    /// the backward pass would drop anyway — as torch's `ctx.needs_input_grad`. A VJP whose
    /// inputs' gradients cost a kernel each checks it: the first Dense or Conv layer's input
    /// gradient is a whole GEMM or convolution, about a fifth of an MLP's training step. True
    /// outside a backward pass.
    public static func needsInputGrad(_ i: Int) -> Bool {
        guard let tracked = currentTapeState().inputsTracked, i < tracked.count else { return true }
        return tracked[i]
    }

    static func isTracked(_ t: Tensor) -> Bool {
        t.requiresGrad || (t.node?.isLive ?? false)
    }

    /// Whether an op over `inputs` must record now.
    @inline(__always)
    static func shouldRecord(_ inputs: [Tensor]) -> Bool {
        let s = currentTapeState()
        guard !s.tapes.isEmpty, s.paused == 0 else { return false }
        return inputs.contains(where: isTracked)
    }

    /// Records `output = op(inputs)`; `backward` maps the output gradient to one gradient
    /// (or nil) per input, in order. A no-op when nothing needs recording.
    /// The inputs are an autoclosure, so that an op run with no tape allocates neither their
    /// array nor (once inlined) the closure's context: every op calls this.
    @inline(__always)
    static func record(_ output: Tensor, _ inputs: @autoclosure () -> [Tensor],
                       _ backward: @escaping (Tensor) throws -> [Tensor?]) {
        let s = currentTapeState()
        guard !s.tapes.isEmpty, s.paused == 0 else { return }
        let inputs = inputs()
        guard inputs.contains(where: isTracked) else { return }
        let node = TapeNode(inputs: inputs, outputShape: output.shape, backward: backward)
        output.node = node
        s.tapes[s.tapes.count - 1].append(node)
    }

    /// Makes `output` differentiable with respect to `inputs` through a caller-supplied VJP
    /// (custom gradients): the forward ran however the caller chose (typically paused), and
    /// `backward` maps the output gradient to one gradient (or nil) per input. Returns a new
    /// handle sharing `output`'s storage, so a tensor the forward passed through unchanged
    /// keeps its own history. A gradient of the wrong shape is an error at gradient time;
    /// one of another dtype is cast to the input's.
    public static func recordCustom(_ output: Tensor, inputs: [Tensor],
                                    backward: @escaping (Tensor) throws -> [Tensor?]) -> Tensor {
        Tracer.unreplayable("a custom gradient was recorded (its VJP is not a registry op)")
        let result = stopGradient(output)
        guard result.dtype.isFloatingPoint else { return result }
        let shapes = inputs.map(\.shape), dtypes = inputs.map(\.dtype)
        record(result, inputs) { g in
            let grads = try backward(g)
            guard grads.count == shapes.count else {
                throw EngineError.value("custom gradient returned \(grads.count) gradients for \(shapes.count) inputs")
            }
            return try grads.enumerated().map { i, gi in
                guard let gi = gi else { return nil }
                guard gi.shape == shapes[i] else {
                    throw EngineError.value("custom gradient for input \(i) has shape \(gi.shape), expected \(shapes[i])")
                }
                return gi.dtype == dtypes[i] ? gi : try cast(gi, to: dtypes[i])
            }
        }
        return result
    }

    /// Gradients of `target` (seeded with `seed`, default ones) with respect to `sources`,
    /// nil for a source that does not influence `target`.
    ///
    /// With `createGraph`, the innermost tape is consumed (popped): its nodes join the tape
    /// beneath it and the backward pass records there, so the gradients are themselves
    /// differentiable: the way to second derivatives and to forward mode (a JVP is the VJP
    /// of a VJP). The forward's nodes must move too: the backward pass reads the forward's
    /// intermediates (x*x in d(x*x*x)/dx), and a second derivative flows back through them.
    public static func gradient(of target: Tensor, seed: Tensor? = nil, wrt sources: [Tensor],
                                createGraph: Bool = false) throws -> [Tensor?] {
        if !createGraph, let grads = try Tracer.loweredGradient(target, seed, sources) { return grads }
        let grads = try gradientUntraced(of: target, seed: seed, wrt: sources, createGraph: createGraph)
        Tracer.gradientTaken(target, seed, sources, createGraph, grads)
        return grads
    }

    private static func gradientUntraced(of target: Tensor, seed: Tensor?, wrt sources: [Tensor],
                                         createGraph: Bool) throws -> [Tensor?] {
        let s = currentTapeState()
        guard let nodes = s.tapes.last else { throw EngineError.value("gradient() needs an active tape") }
        if createGraph {
            guard s.tapes.count >= 2 else { throw EngineError.value("gradient(create_graph) needs an outer tape to record onto") }
            s.tapes.removeLast()
            s.tapes[s.tapes.count - 1].append(contentsOf: nodes)
            return try backpropagate(nodes, target, seed, sources, checkRecorded: true)
        }
        return try paused { try backpropagate(nodes, target, seed, sources, checkRecorded: false) }
    }

    /// `checkRecorded`: a non-zero gradient that is not tracked although its output gradient
    /// is came from a VJP running unrecorded kernels; under create_graph it would silently
    /// drop a derivative term, so it is an error instead.
    /// The gradient seed: `seed`, checked, or ones of the target's shape and dtype.
    static func seedGradient(_ target: Tensor, _ seed: Tensor?) throws -> Tensor {
        if let g = seed {
            guard g.shape == target.shape else {
                throw EngineError.value("gradient seed shape \(g.shape) does not match target shape \(target.shape)")
            }
            return g
        }
        return try full(target.shape, value: 1, dtype: target.dtype)
    }

    /// Where `backpropagate` accumulates `t`'s gradient: a recorded tensor by its node, a
    /// leaf by itself (both alive while it runs).
    static func gradientKey(_ t: Tensor) -> ObjectIdentifier {
        if let n = t.node, n.isLive { return ObjectIdentifier(n) }
        return ObjectIdentifier(t)
    }

    /// `backpropagate` over the TapeNodes one op recorded (in tape order), seeded with the
    /// gradients of those its outputs carry: the same VJP calls and additions, in the same
    /// order. Gradients for the op's own intermediates are summed here; those for tensors
    /// it did not make are returned, in the order `backpropagate` would add them, for the
    /// caller to add (a lowered gradient does that with graph nodes). Runs with recording
    /// paused by the caller, as `backpropagate` does.
    static func backpropagate(op nodes: [TapeNode], seeds: [(TapeNode, Tensor)]) throws -> [(input: Tensor, grad: Tensor)] {
        var grads: [ObjectIdentifier: Tensor] = [:]
        for (n, g) in seeds { grads[ObjectIdentifier(n)] = g }
        let own = Set(nodes.map(ObjectIdentifier.init))
        var out: [(input: Tensor, grad: Tensor)] = []
        let state = currentTapeState()
        let outerTracked = state.inputsTracked
        defer { state.inputsTracked = outerTracked }
        for node in nodes.reversed() {
            let k = ObjectIdentifier(node)
            guard let g = grads.removeValue(forKey: k), let backward = node.backward else { continue }
            state.inputsTracked = node.inputs.map(isTracked)
            let inputGrads = try backward(g)
            for (input, ig) in zip(node.inputs, inputGrads) {
                guard let ig = ig, isTracked(input) else { continue }
                let ik = gradientKey(input)
                guard own.contains(ik) else {
                    out.append((input, ig))
                    continue
                }
                if let prev = grads[ik] { grads[ik] = try add(prev, ig) } else { grads[ik] = ig }
            }
        }
        return out
    }

    /// Per output of an op that recorded `nodes`: the index among them, counted from the
    /// last, of the node the output carries, nil for none. A trace notes it and a replay
    /// checks it (`VJPStep.outputNodes`).
    static func carriedNodes(_ outputs: [Tensor], in nodes: [TapeNode]) -> [Int?] {
        outputs.map { o in o.node.flatMap { n in nodes.lastIndex { $0 === n } }.map { nodes.count - 1 - $0 } }
    }

    private static func backpropagate(_ nodes: [TapeNode], _ target: Tensor, _ seed: Tensor?, _ sources: [Tensor],
                                      checkRecorded: Bool) throws -> [Tensor?] {
        let seedGrad = try seedGradient(target, seed)
        var grads: [ObjectIdentifier: Tensor] = [:]
        let key = gradientKey
        let sourceKeys = Set(sources.map(key))
        grads[key(target)] = seedGrad
        let state = currentTapeState()
        let outerTracked = state.inputsTracked
        defer { state.inputsTracked = outerTracked }
        for node in nodes.reversed() {
            let k = ObjectIdentifier(node)
            guard let g = grads[k], let backward = node.backward else { continue }
            if !sourceKeys.contains(k) { grads[k] = nil }
            state.inputsTracked = node.inputs.map(isTracked)
            let inputGrads = try backward(g)
            for (input, ig) in zip(node.inputs, inputGrads) {
                guard let ig = ig, isTracked(input) else { continue }
                if checkRecorded, isTracked(g), !isTracked(ig), try reduce(.any, ig).double(at: 0) != 0 {
                    throw EngineError.notImplemented(
                        "create_graph: the gradient of an op with output \(node.outputShape) is not differentiable yet")
                }
                let ik = key(input)
                if let prev = grads[ik] { grads[ik] = try add(prev, ig) } else { grads[ik] = ig }
            }
        }
        return sources.map { grads[key($0)] }
    }
}

/// Reduces a broadcast gradient back to `shape` (sums over broadcast dimensions).
func sumToShape(_ g: Tensor, _ shape: [Int]) throws -> Tensor {
    if g.shape == shape { return g }
    let lead = g.rank - shape.count
    var axes: [Int] = Array(0..<Swift.max(lead, 0))
    for (i, d) in shape.enumerated() where d == 1 && g.shape[i + lead] != 1 { axes.append(i + lead) }
    let s = axes.isEmpty ? g : try sum(g, axes: axes, keepdims: true)
    return try reshape(s, shape)
}

extension Tape {
    /// Ops (and, for ops of several outputs, the output positions) whose derivative is zero
    /// almost everywhere or undefined by convention, as in JAX: a gradient through them is
    /// zero (nil), not an error. Every other op that produces a float output from a tracked
    /// input without recording a VJP raises when a gradient through that output is requested.
    /// Run after a registry op produced `outputs` from `inputs`: a float output that recorded
    /// no VJP although an input is tracked gets a node that raises at gradient time, so a
    /// missing derivative is an error instead of a silent zero. The op's schema says which
    /// outputs have no gradient by definition (`.zero`, `.no`, `constantOutputs`). Costs one
    /// thread-local read when no tape is recording.
    @inline(__always)
    static func requireGradients(_ schema: OpSchema, _ outputs: @autoclosure () -> [Tensor],
                                 _ inputs: @autoclosure () -> [Tensor]) {
        switch schema.grad {
        case .zero, .no: return
        default: break
        }
        let s = currentTapeState()
        guard !s.tapes.isEmpty, s.paused == 0 else { return }
        markUndifferentiated(schema, outputs(), inputs())
    }

    private static func markUndifferentiated(_ schema: OpSchema, _ outputs: [Tensor], _ ins: [Tensor]) {
        guard ins.contains(where: isTracked) else { return }
        let name = schema.name
        // An output that is one of the inputs (an identity op passing it through) is the
        // caller's own tensor: it is never marked.
        for (i, out) in outputs.enumerated()
        where out.dtype.isFloatingPoint && !isTracked(out) && !ins.contains(where: { $0 === out }) {
            if schema.constantOutputs.contains(i) { continue }
            record(out, ins) { _ in
                throw EngineError.notImplemented(
                    "the gradient of \(name)\(outputs.count > 1 ? " (output \(i))" : "") is not implemented")
            }
        }
    }
}
