// Programs: a training (or inference) step recorded once and replayed many times.
//
// A `Program` is a straight-line list of nodes over SSA values (dense integer ids, each
// defined exactly once: by being a declared input, a constant, or a node's output).
// Nodes are registry op calls (op by index, its name, `Attrs`, input and output ids) plus
// the structural steps a training step needs from the engine's tape: push, pop, setting a
// value's `requiresGrad`, and `gradient`. Replay runs the forward ops with a real tape
// active and asks that tape for gradients, exactly as the eager step did; lowering the
// VJPs into the graph is a later step.
//
// A program is specialised on its inputs' dtypes and shapes (like `jax.jit`): `run`
// rejects anything else. It is immutable once built; building it validates it (SSA order,
// op indices, balanced tapes) and computes a liveness plan, so `run` drops each
// intermediate right after its last use. `eliminatingDeadCode()` drops nodes whose
// outputs reach no program output and have no side effect.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The dtype and shape a program expects (or produces) for one value.
public struct TensorSpec: Equatable, CustomStringConvertible {
    public var dtype: DType
    public var shape: [Int]

    public init(dtype: DType, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
    }

    public init(of t: Tensor) {
        self.init(dtype: t.dtype, shape: t.shape)
    }

    func matches(_ t: Tensor) -> Bool { t.dtype == dtype && t.shape == shape }

    public var description: String { "\(dtype)\(shape)" }
}

/// One step of a program.
public enum GraphNode {
    /// A registry op: `OpRegistry.ops[index]` (named `name`) applied to `inputs`.
    case op(index: Int, name: String, attrs: Attrs, inputs: [Int], outputs: [Int])
    /// `Tape.push()`.
    case tapePush
    /// `Tape.pop()`.
    case tapePop
    /// Sets `requiresGrad` on a value (a gradient leaf for the tape).
    case setRequiresGrad(value: Int, flag: Bool)
    /// `Tape.gradient(of: target, seed:, wrt: sources, createGraph:)`; `outputs[i]` receives
    /// the gradient of `sources[i]`, nil where the trace got none (the source did not
    /// influence the target).
    case gradient(target: Int, seed: Int?, sources: [Int], createGraph: Bool, outputs: [Int?])

    /// Values read, in order.
    public var inputValues: [Int] {
        switch self {
        case .op(_, _, _, let inputs, _): return inputs
        case .tapePush, .tapePop: return []
        case .setRequiresGrad(let v, _): return [v]
        case .gradient(let t, let s, let srcs, _, _): return [t] + (s.map { [$0] } ?? []) + srcs
        }
    }

    /// Values defined.
    public var outputValues: [Int] {
        switch self {
        case .op(_, _, _, _, let outputs): return outputs
        case .gradient(_, _, _, _, let outputs): return outputs.compactMap { $0 }
        case .tapePush, .tapePop, .setRequiresGrad: return []
        }
    }
}

/// A validated, replayable program. See the top of this file.
public final class Program {
    public struct Input {
        public let value: Int
        public let spec: TensorSpec
        /// The input's `requiresGrad` during the trace; replay gives it the same flag.
        public let requiresGrad: Bool
    }

    public struct Output {
        public let value: Int
        public let spec: TensorSpec
    }

    public struct Constant {
        public let value: Int
        public let tensor: Tensor
    }

    public let valueCount: Int
    public let inputs: [Input]
    public let outputs: [Output]
    public let constants: [Constant]
    public let nodes: [GraphNode]
    /// Per node, the values whose last use it is (dropped right after it runs).
    let freeAfter: [[Int]]
    /// Inputs and constants that no node reads and no output returns.
    let unusedAtStart: [Int]
    /// Runs of one program are serialised: a set-requires-grad node may change a constant's
    /// flag, which another thread's run would read.
    private let runLock = Mutex(())

    public init(valueCount: Int, inputs: [Input], outputs: [Output], constants: [Constant], nodes: [GraphNode]) throws {
        self.valueCount = valueCount
        self.inputs = inputs
        self.outputs = outputs
        self.constants = constants
        self.nodes = nodes
        (freeAfter, unusedAtStart) = try Program.validateAndPlan(valueCount, inputs, outputs, constants, nodes)
    }

    /// Checks SSA order, op indices and names, balanced tapes and output specs; returns the
    /// liveness plan.
    private static func validateAndPlan(_ valueCount: Int, _ inputs: [Input], _ outputs: [Output],
                                        _ constants: [Constant], _ nodes: [GraphNode]) throws -> ([[Int]], [Int]) {
        guard valueCount >= 0 else { throw EngineError.value("program: negative value count") }
        var defined = [Bool](repeating: false, count: valueCount)
        func define(_ v: Int, _ what: String) throws {
            guard v >= 0, v < valueCount else { throw EngineError.value("program: \(what) defines value \(v), out of range [0, \(valueCount))") }
            guard !defined[v] else { throw EngineError.value("program: value \(v) is defined twice") }
            defined[v] = true
        }
        func use(_ v: Int, _ what: String) throws {
            guard v >= 0, v < valueCount, defined[v] else { throw EngineError.value("program: \(what) reads value \(v) before it is defined") }
        }
        for i in inputs { try define(i.value, "an input") }
        for c in constants { try define(c.value, "a constant") }
        var lastUse = [Int](repeating: -1, count: valueCount)  // -1: never read by a node
        var depth = 0
        for (n, node) in nodes.enumerated() {
            let what = "node \(n)"
            switch node {
            case .op(let index, let name, _, _, _):
                guard index >= 0, index < OpRegistry.ops.count, OpRegistry.ops[index].name == name else {
                    throw EngineError.value("program: \(what) names op '\(name)' at index \(index), which the registry does not hold")
                }
            case .tapePush:
                depth += 1
            case .tapePop:
                guard depth > 0 else { throw EngineError.value("program: \(what) pops a tape the program did not push") }
                depth -= 1
            case .setRequiresGrad:
                break
            case .gradient(_, _, let sources, let createGraph, let outs):
                guard sources.count == outs.count else { throw EngineError.value("program: \(what) has \(sources.count) sources and \(outs.count) gradients") }
                guard depth >= (createGraph ? 2 : 1) else {
                    throw EngineError.value("program: \(what) takes a gradient without a tape the program pushed")
                }
                if createGraph { depth -= 1 }
            }
            for v in node.inputValues {
                try use(v, what)
                lastUse[v] = n
            }
            for v in node.outputValues { try define(v, what) }
        }
        guard depth == 0 else { throw EngineError.value("program: ends with \(depth) tape(s) still pushed") }
        var isOutput = [Bool](repeating: false, count: valueCount)
        for o in outputs {
            try use(o.value, "an output")
            isOutput[o.value] = true
        }
        var freeAfter = [[Int]](repeating: [], count: nodes.count)
        for (n, node) in nodes.enumerated() {
            for v in node.outputValues where lastUse[v] < 0 && !isOutput[v] { freeAfter[n].append(v) }
        }
        for v in 0..<valueCount where lastUse[v] >= 0 && !isOutput[v] { freeAfter[lastUse[v]].append(v) }
        let unused = (inputs.map(\.value) + constants.map(\.value)).filter { lastUse[$0] < 0 && !isOutput[$0] }
        return (freeAfter, unused)
    }

    /// Runs the program on `inputs` (dtypes and shapes as traced) and returns its outputs.
    public func run(inputs args: [Tensor]) throws -> [Tensor] {
        try run(inputs: args, observer: nil)
    }

    /// `observer` sees the value slots after each node has run and its dead values were
    /// dropped (tests check liveness through it).
    func run(inputs args: [Tensor], observer: ((Int, [Tensor?]) -> Void)?) throws -> [Tensor] {
        Tracer.programRunning()
        guard args.count == inputs.count else {
            throw EngineError.value("program takes \(inputs.count) input(s), got \(args.count)")
        }
        for (i, (a, spec)) in zip(args, inputs).enumerated() where !spec.spec.matches(a) {
            throw EngineError.value("program input \(i) must be \(spec.spec) (as traced), got \(TensorSpec(of: a))")
        }
        return try runLock.withLock { _ in
            var slots = [Tensor?](repeating: nil, count: valueCount)
            for c in constants { slots[c.value] = c.tensor }
            for (a, spec) in zip(args, inputs) {
                if a.requiresGrad == spec.requiresGrad {
                    slots[spec.value] = a
                } else {
                    // A new handle on the same storage, so the caller's tensor keeps its flag.
                    let alias = stopGradient(a)
                    alias.requiresGrad = spec.requiresGrad
                    slots[spec.value] = alias
                }
            }
            for v in unusedAtStart { slots[v] = nil }
            let depth = Tape.depth
            do {
                for (n, node) in nodes.enumerated() {
                    try execute(node, &slots)
                    for v in freeAfter[n] { slots[v] = nil }
                    observer?(n, slots)
                }
            } catch {
                // Leave the caller's tapes as they were.
                while Tape.depth > depth { try? Tape.pop() }
                throw error
            }
            return try outputs.enumerated().map { i, o in
                guard let t = slots[o.value] else { throw EngineError.internal("program output \(i) was dropped") }
                guard o.spec.matches(t) else {
                    // An op whose result's shape depends on values (nonzero, unique, ...).
                    throw EngineError.value("program output \(i) is \(TensorSpec(of: t)) at replay but was \(o.spec) when traced")
                }
                return t
            }
        }
    }

    private func execute(_ node: GraphNode, _ slots: inout [Tensor?]) throws {
        func read(_ v: Int) throws -> Tensor {
            guard let t = slots[v] else { throw EngineError.internal("program value \(v) was dropped before its last use") }
            return t
        }
        switch node {
        case .op(let index, let name, let attrs, let ins, let outs):
            let results = try OpRegistry.ops[index].run(try ins.map(read), attrs)
            guard results.count == outs.count else {
                throw EngineError.internal("op \(name) returned \(results.count) outputs at replay, \(outs.count) when traced")
            }
            for (v, r) in zip(outs, results) { slots[v] = r }
        case .tapePush:
            Tape.push()
        case .tapePop:
            try Tape.pop()
        case .setRequiresGrad(let v, let flag):
            try read(v).requiresGrad = flag
        case .gradient(let target, let seed, let sources, let createGraph, let outs):
            let grads = try Tape.gradient(of: try read(target), seed: try seed.map(read), wrt: try sources.map(read),
                                          createGraph: createGraph)
            for (i, (v, g)) in zip(outs, grads).enumerated() {
                guard let v = v else { continue }
                guard let g = g else {
                    throw EngineError.internal("gradient of source \(i) is None at replay but was not when traced")
                }
                slots[v] = g
            }
        }
    }

    /// The program without nodes whose outputs reach no program output and that have no
    /// side effect. Tape push/pop and a create-graph gradient (which pops a tape) always
    /// stay; setting `requiresGrad` stays where a later node reads the value or it is an
    /// input, constant or output (whose flag the caller sees). Inputs stay (the signature is
    /// unchanged); constants no node reads any more are dropped.
    public func eliminatingDeadCode() throws -> Program {
        // Values whose requiresGrad flag the caller can see.
        var external = [Bool](repeating: false, count: valueCount)
        for v in inputs.map(\.value) + constants.map(\.value) + outputs.map(\.value) { external[v] = true }
        var live = [Bool](repeating: false, count: valueCount)
        for o in outputs { live[o.value] = true }
        var keep = [Bool](repeating: false, count: nodes.count)
        for n in stride(from: nodes.count - 1, through: 0, by: -1) {
            let node = nodes[n]
            switch node {
            case .tapePush, .tapePop:
                keep[n] = true
            case .gradient(_, _, _, true, _):
                keep[n] = true
            case .setRequiresGrad(let v, _):
                keep[n] = live[v] || external[v]
            case .op, .gradient:
                keep[n] = node.outputValues.contains { live[$0] }
            }
            if keep[n] { for v in node.inputValues { live[v] = true } }
        }
        let kept = nodes.indices.filter { keep[$0] }.map { nodes[$0] }
        let usedConstants = constants.filter { live[$0.value] }
        // Renumber the values left densely (in definition order), so a program's value count
        // is the number of values it defines.
        var newID = [Int](repeating: -1, count: valueCount)
        var count = 0
        func renumber(_ v: Int) -> Int {
            if newID[v] < 0 { newID[v] = count; count += 1 }
            return newID[v]
        }
        let ins = inputs.map { Input(value: renumber($0.value), spec: $0.spec, requiresGrad: $0.requiresGrad) }
        let consts = usedConstants.map { Constant(value: renumber($0.value), tensor: $0.tensor) }
        let renumbered: [GraphNode] = kept.map { node in
            // Inputs were defined (and so numbered) before the node; its outputs are numbered here.
            switch node {
            case .op(let index, let name, let attrs, let ins, let outs):
                return .op(index: index, name: name, attrs: attrs, inputs: ins.map(renumber), outputs: outs.map(renumber))
            case .tapePush, .tapePop:
                return node
            case .setRequiresGrad(let v, let flag):
                return .setRequiresGrad(value: renumber(v), flag: flag)
            case .gradient(let t, let seed, let srcs, let createGraph, let outs):
                return .gradient(target: renumber(t), seed: seed.map(renumber), sources: srcs.map(renumber),
                                 createGraph: createGraph, outputs: outs.map { $0.map(renumber) })
            }
        }
        let outs = outputs.map { Output(value: renumber($0.value), spec: $0.spec) }
        return try Program(valueCount: count, inputs: ins, outputs: outs, constants: consts, nodes: renumbered)
    }
}
