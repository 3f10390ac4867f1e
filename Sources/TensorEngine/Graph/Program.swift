// Programs: a training (or inference) step recorded once and replayed many times.
//
// A `Program` is a list of nodes over SSA values (dense integer ids, each defined exactly
// once: by being a declared input, a constant, or a node's output). Nodes are registry op
// calls (op by index, its name, `Attrs`, input and output ids), the structural steps a
// training step needs from the engine's tape (push, pop, setting a value's `requiresGrad`,
// `gradient`), and control flow (`cond`, `whileLoop`) over nested blocks of nodes
// (ControlFlow.swift). Replay runs the forward ops with a real tape active, so they record
// their VJPs (TapeNodes) as in the eager step. A gradient taken during the trace is lowered
// into the graph where every node on its tape was recorded by a registry op of the top
// level (Tracer.swift): then the backward pass is explicit nodes, a seed, one `vjp` node per
// op on the gradient's path (running the TapeNodes that op recorded at replay) and registry
// `add`s that accumulate gradients in the order the tape would, so the values are those of
// `Tape.gradient` bit for bit and the liveness plan sees the whole backward. The last `vjp`
// of an op releases its TapeNodes, freeing the activations they hold during the backward
// pass instead of at the tape's pop. Other gradients stay one opaque `gradient` node that
// asks the tape, as the eager step did.
//
// A program is specialised on its inputs' dtypes and shapes (like `jax.jit`): `run`
// rejects anything else. It is immutable once built; building it validates it (SSA order
// and scoping, op indices, balanced tapes) and computes a liveness plan, so `run` drops each
// intermediate right after its last use, and from it a reuse plan: at each op node, the
// inputs dying there that the op may write an output over (its schema's `InPlace`). At run
// time such an input is offered to the op only if no one else can see it (its tensor and
// storage referenced by the runner alone, dense, not borrowed, not kept by a recording
// tape), so reuse is never observable; a caller's input qualifies only when the caller
// gave up its reference (`run(consuming:)`). `eliminatingDeadCode()` drops nodes whose
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
    /// Part of a lowered gradient: runs the VJPs of the TapeNodes an earlier op node of the
    /// top level recorded at this replay (see `VJPStep`).
    case vjp(VJPStep)
    /// Runs `branches[k]`, k the scalar `selector`'s value (bool or integer) clamped to the
    /// branches; `outputs[i]` receives its `results[i]` (ControlFlow.swift).
    case cond(selector: Int, branches: [GraphBlock], outputs: [Int])
    /// Binds `parameters` to the carried state (first `initial`), runs `condition` and, while
    /// its one result is non-zero and fewer than `maxIterations` iterations ran, `body`,
    /// whose results are the next state; `outputs` receive the final state. Indirect: its
    /// payload would otherwise make every node larger.
    indirect case whileLoop(initial: [Int], parameters: [Int], condition: GraphBlock, body: GraphBlock, outputs: [Int],
                   maxIterations: Int?)

    /// Values read, in order; for control flow, also the values its blocks read from outside.
    public var inputValues: [Int] {
        switch self {
        case .op(_, _, _, let inputs, _): return inputs
        case .tapePush, .tapePop: return []
        case .setRequiresGrad(let v, _): return [v]
        case .gradient(let t, let s, let srcs, _, _): return [t] + (s.map { [$0] } ?? []) + srcs
        case .vjp(let step): return step.seeds.compactMap { $0 }
        case .cond(let selector, let branches, _):
            var seen: Set<Int> = [selector]
            return [selector] + branches.flatMap { $0.freeValues() }.filter { seen.insert($0).inserted }
        case .whileLoop(let initial, let params, let condition, let body, _, _):
            var seen = Set(initial)
            return initial + (condition.freeValues(entry: params) + body.freeValues(entry: params)).filter { seen.insert($0).inserted }
        }
    }

    /// Values defined.
    public var outputValues: [Int] {
        switch self {
        case .op(_, _, _, _, let outputs): return outputs
        case .gradient(_, _, _, _, let outputs): return outputs.compactMap { $0 }
        case .vjp(let step): return step.outputs
        case .cond(_, _, let outputs), .whileLoop(_, _, _, _, let outputs, _): return outputs
        case .tapePush, .tapePop, .setRequiresGrad: return []
        }
    }
}

/// One op's share of a lowered gradient. The op node is named by its first output, which
/// the step does not read: the op's TapeNodes hold what its VJPs need, and its outputs may
/// be dropped as soon as the forward is done with them.
public struct VJPStep: Equatable {
    /// The op node (at the top level, before this step), by its first output.
    public var op: Int
    /// How many TapeNodes the op records (checked when it runs); 0 for a fused op, which
    /// records one or the nodes of the ops it stands for.
    public var tapeNodes: Int
    /// Per output of the op: the index among its TapeNodes, counted from the last, of the
    /// one that output carries, nil where it carries none of them (checked when the op runs).
    public var outputNodes: [Int?]
    /// Per output of the op: the value holding the gradient flowing into it, nil for none.
    public var seeds: [Int?]
    /// Per gradient this step gives: the index among the op's inputs of the input it is for
    /// (checked when the step runs).
    public var targets: [Int]
    /// The gradients. Those for one input are in the order the tape's backward pass gives
    /// them; across inputs the order does not matter (each input's are summed on their own).
    public var outputs: [Int]
    /// Whether this is the last step to run the op's TapeNodes: they are released after it.
    public var releases: Bool

    public init(op: Int, tapeNodes: Int, outputNodes: [Int?], seeds: [Int?], targets: [Int], outputs: [Int],
                releases: Bool) {
        self.op = op
        self.tapeNodes = tapeNodes
        self.outputNodes = outputNodes
        self.seeds = seeds
        self.targets = targets
        self.outputs = outputs
        self.releases = releases
    }
}

/// The TapeNodes an op node recorded at one replay, and its inputs, until its last `vjp`.
struct CapturedOp {
    let nodes: [TapeNode]
    let inputs: [Tensor]
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
    /// The liveness plan (per node, the values whose last use it is; the inputs and
    /// constants nothing reads), with control-flow nodes' plans for their blocks.
    let plan: BlockPlan
    /// Per top-level node: the values its op may write an output over (see the top of this
    /// file). Never a constant (the program holds it) nor a program output (it is not dead);
    /// so an output taking a buffer aliases nothing live.
    let reusePlan: [[Int]]
    /// Runs of one program are serialised: a set-requires-grad node may change a constant's
    /// flag, which another thread's run would read.
    private let runLock = Mutex(())

    public init(valueCount: Int, inputs: [Input], outputs: [Output], constants: [Constant], nodes: [GraphNode]) throws {
        self.valueCount = valueCount
        self.inputs = inputs
        self.outputs = outputs
        self.constants = constants
        self.nodes = nodes
        plan = try Program.validateAndPlan(valueCount, inputs, outputs, constants, nodes)
        reusePlan = Program.planReuse(nodes, plan, constants)
    }

    /// The reuse plan from the liveness plan: per op node, the inputs whose last reader it is
    /// and that its schema lets an output be written over.
    private static func planReuse(_ nodes: [GraphNode], _ plan: BlockPlan, _ constants: [Constant]) -> [[Int]] {
        let isConstant = Set(constants.map(\.value))
        return nodes.enumerated().map { n, node in
            guard case .op(let index, _, _, let ins, _) = node else { return [] }
            let dying = Set(plan.freeAfter[n])
            var seen = Set<Int>()
            return OpRegistry.ops[index].schema.inPlace.inputs(count: ins.count).map { ins[$0] }
                .filter { dying.contains($0) && !isConstant.contains($0) && seen.insert($0).inserted }
        }
    }

    /// Offers the op reading `ins` those of `values` (inputs dying at it) that no one but the
    /// slots can see (`BufferReuse`); whether it offered any.
    private static func offerDying(_ values: [Int], _ ins: [Int], _ slots: inout [Tensor?]) -> Bool {
        // A recording tape keeps an op's inputs for its VJP, which would read them overwritten.
        if Tape.shouldRecord(ins.compactMap { slots[$0] }) { return false }
        var offered: [Tensor] = []
        for v in values {
            guard var t = slots[v] else { continue }
            slots[v] = nil
            if isKnownUniquelyReferenced(&t) && t.hasUniqueStorage() { offered.append(t) }
            slots[v] = t
        }
        if offered.isEmpty { return false }
        BufferReuse.offer(offered)
        return true
    }

    /// Checks SSA order and scoping, op indices and names, balanced tapes and control-flow
    /// arities; returns the liveness plan (ControlFlow.swift).
    private static func validateAndPlan(_ valueCount: Int, _ inputs: [Input], _ outputs: [Output],
                                        _ constants: [Constant], _ nodes: [GraphNode]) throws -> BlockPlan {
        var validator = try ProgramValidator(valueCount: valueCount)
        let (plan, _) = try validator.block(nodes, entry: inputs.map(\.value) + constants.map(\.value),
                                            results: outputs.map(\.value), depth: 0, base: 0, path: "")
        return plan
    }

    /// Runs the program on `inputs` (dtypes and shapes as traced) and returns its outputs.
    public func run(inputs args: [Tensor]) throws -> [Tensor] {
        try run(inputs: args, observer: nil)
    }

    /// `run(inputs:)` taking over the references in `args`, which it empties (also on
    /// failure): an input nothing else references once they are gone (a variable's old value
    /// the caller is about to replace) may have its buffer written over by the program after
    /// its last use. Inputs still referenced elsewhere are only read, as by `run(inputs:)`.
    public func run(consuming args: inout [Tensor]) throws -> [Tensor] {
        try run(consuming: &args, observer: nil)
    }

    /// `observer` sees the value slots after each node has run and its dead values were
    /// dropped (tests check liveness through it). `reuse`: whether ops may write over dying
    /// inputs' buffers (tests compare runs without).
    func run(inputs args: [Tensor], observer: ((Int, [Tensor?]) -> Void)?, reuse: Bool = true) throws -> [Tensor] {
        // A second reference to the caller's array: it keeps every input referenced.
        var held = args
        return try run(consuming: &held, observer: observer, reuse: reuse)
    }

    func run(consuming args: inout [Tensor], observer: ((Int, [Tensor?]) -> Void)?, reuse: Bool = true) throws -> [Tensor] {
        defer { args.removeAll() }
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
            args.removeAll()
            for v in plan.unusedAtEntry { slots[v] = nil }
            let depth = Tape.depth
            var captured: [Int: CapturedOp] = [:]
            do {
                for (n, node) in nodes.enumerated() {
                    if let capture = plan.captures[n] {
                        try Program.runCapturing(node, capture, &captured, &slots)
                    } else if case .vjp(let step) = node {
                        try Program.runVJP(step, dropsCapture: plan.lastVJP.contains(n), &captured, &slots)
                    } else if reuse, !reusePlan[n].isEmpty, case .op(_, _, _, let ins, _) = node,
                              Program.offerDying(reusePlan[n], ins, &slots) {
                        defer { BufferReuse.clear() }
                        try Program.execute(node, plan, n, &slots)
                    } else {
                        try Program.execute(node, plan, n, &slots)
                    }
                    for v in plan.freeAfter[n] { slots[v] = nil }
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

    /// Runs node `n` of the block planned by `plan` (which holds the plans of its blocks).
    static func execute(_ node: GraphNode, _ plan: BlockPlan, _ n: Int, _ slots: inout [Tensor?]) throws {
        func read(_ v: Int) throws -> Tensor { try BlockRunner.read(slots, v) }
        switch node {
        case .op(let index, let name, let attrs, let ins, let outs):
            try runOp(index, name, attrs, ins, outs, &slots)
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
        case .vjp:
            throw EngineError.internal("a vjp node ran outside the top level of its program")
        case .cond(let selector, let branches, let outs):
            try BlockRunner.cond(selector, branches, outs, plan.children[n], &slots)
        case .whileLoop(let initial, let params, let condition, let body, let outs, let maxIterations):
            let final = try BlockRunner.loop(params, condition, body, maxIterations, plan.children[n], state: try initial.map(read),
                                             done: 0, &slots)
            for (o, t) in zip(outs, final) { slots[o] = gradientAlias(t) }
        }
    }

    /// Runs registry op `index` (`name`) on values `ins` and puts its results in `outs`;
    /// returns the inputs it read and the results.
    @discardableResult
    static func runOp(_ index: Int, _ name: String, _ attrs: Attrs, _ ins: [Int], _ outs: [Int],
                      _ slots: inout [Tensor?]) throws -> (inputs: [Tensor], results: [Tensor]) {
        let inputs = try ins.map { try BlockRunner.read(slots, $0) }
        let results = try OpRegistry.ops[index].run(inputs, attrs)
        guard results.count == outs.count else {
            throw EngineError.internal("op \(name) returned \(results.count) outputs at replay, \(outs.count) when traced")
        }
        for (v, r) in zip(outs, results) { slots[v] = r }
        return (inputs, results)
    }

    /// Runs op node `node`, whose TapeNodes vjp nodes run later: takes them from the
    /// innermost tape and checks they are the ones the trace saw (as many, and carried by
    /// the same outputs), so a replay that diverges from its trace is an error, not a wrong
    /// gradient.
    static func runCapturing(_ node: GraphNode, _ capture: OpCapture, _ captured: inout [Int: CapturedOp],
                             _ slots: inout [Tensor?]) throws {
        guard case .op(let index, let name, let attrs, let ins, let outs) = node, let key = outs.first else {
            throw EngineError.internal("a vjp node names a value that no op node defines")
        }
        let state = currentTapeState()
        let tape = state.tapes.count - 1
        guard tape >= 0 else {
            throw EngineError.internal("op \(name) runs without a tape at replay but recorded a gradient when traced")
        }
        let before = state.tapes[tape].count
        let (inputs, results) = try runOp(index, name, attrs, ins, outs, &slots)
        let recorded = state.tapes.count - 1 == tape ? state.tapes[tape].count - before : -1
        guard recorded == capture.tapeNodes || (capture.tapeNodes == 0 && recorded > 0) else {
            throw EngineError.internal("op \(name) recorded \(recorded) tape node(s) at replay, \(capture.tapeNodes) when traced")
        }
        let nodes = Array(state.tapes[tape][before...])
        for (j, (carried, at)) in zip(Tape.carriedNodes(results, in: nodes), capture.outputNodes).enumerated() {
            guard carried == at else {
                throw EngineError.internal("output \(j) of op \(name) carries another tape node at replay than when traced")
            }
        }
        captured[key] = CapturedOp(nodes: nodes, inputs: inputs)
    }

    /// Runs a vjp node on the TapeNodes its op captured, as `Tape.gradient` runs them.
    static func runVJP(_ step: VJPStep, dropsCapture: Bool, _ captured: inout [Int: CapturedOp],
                       _ slots: inout [Tensor?]) throws {
        guard let op = captured[step.op] else { throw EngineError.internal("a vjp node runs before its op") }
        var seeds: [(TapeNode, Tensor)] = []
        for (v, at) in zip(step.seeds, step.outputNodes) {
            if let v = v, let at = at { seeds.append((op.nodes[op.nodes.count - 1 - at], try BlockRunner.read(slots, v))) }
        }
        let grads = try Tape.paused { try Tape.backpropagate(op: op.nodes, seeds: seeds) }
        guard grads.count == step.outputs.count else {
            throw EngineError.internal("a vjp gave \(grads.count) gradient(s) at replay, \(step.outputs.count) when traced")
        }
        var given = [Bool](repeating: false, count: grads.count)
        for (c, (input, g)) in grads.enumerated() {
            guard let i = step.targets.indices.first(where: { !given[$0] && op.inputs[step.targets[$0]] === input }) else {
                throw EngineError.internal("gradient \(c) of a vjp is for another input at replay than when traced")
            }
            given[i] = true
            slots[step.outputs[i]] = g
        }
        if step.releases { for n in op.nodes { n.release() } }
        if dropsCapture { captured[step.op] = nil }
    }

    /// The program without nodes whose outputs reach no program output and that have no
    /// side effect. Tape push/pop and a create-graph gradient (which pops a tape) always
    /// stay; a vjp node none of whose gradients is read goes (its op's TapeNodes are then
    /// released by the tape's pop), and an op node stays while a kept vjp node runs the
    /// TapeNodes it records; setting `requiresGrad` stays where a later node reads the value
    /// or it is an input, constant or output (whose flag the caller sees) or defined outside
    /// the block that sets it. Inside control flow the same holds per block; a cond drops the outputs
    /// nothing reads (and its branches' results for them); a cond or loop none of whose
    /// outputs is read goes unless a block keeps a node for its side effect. Inputs stay
    /// (the signature is unchanged); constants no node reads any more are dropped.
    public func eliminatingDeadCode() throws -> Program {
        // Values whose requiresGrad flag the caller can see.
        var external = [Bool](repeating: false, count: valueCount)
        for v in inputs.map(\.value) + constants.map(\.value) + outputs.map(\.value) { external[v] = true }
        var live = [Bool](repeating: false, count: valueCount)
        for o in outputs { live[o.value] = true }

        // Op nodes (by first output) whose TapeNodes a kept vjp node runs.
        var recordsForVJP = Set<Int>()

        /// The block's live nodes (its live values marked in `live` on entry) and whether one
        /// of them is kept for a side effect alone.
        func prune(_ nodes: [GraphNode], entry: [Int], nested: Bool) -> ([GraphNode], Bool) {
            var definedHere = Set(entry)
            if nested { for node in nodes { definedHere.formUnion(node.outputValues) } }
            var kept: [GraphNode] = []
            var effect = false
            for node in nodes.reversed() {
                var keep: GraphNode?
                switch node {
                case .tapePush, .tapePop, .gradient(_, _, _, true, _):
                    keep = node
                    effect = true
                case .setRequiresGrad(let v, _):
                    let outer = nested && !definedHere.contains(v)
                    if live[v] || external[v] || outer { keep = node }
                    if outer { effect = true }
                case .op(_, _, _, _, let outs):
                    if outs.contains(where: { live[$0] }) || outs.first.map(recordsForVJP.contains) == true { keep = node }
                case .gradient:
                    if node.outputValues.contains(where: { live[$0] }) { keep = node }
                case .vjp(let step):
                    if step.outputs.contains(where: { live[$0] }) {
                        keep = node
                        recordsForVJP.insert(step.op)
                    }
                case .cond(let selector, let branches, let outs):
                    let used = outs.indices.filter { live[outs[$0]] }
                    var newBranches: [GraphBlock] = []
                    var sideEffect = false
                    for b in branches {
                        let results = used.map { b.results[$0] }
                        for r in results { live[r] = true }
                        let (body, e) = prune(b.nodes, entry: [], nested: true)
                        sideEffect = sideEffect || e
                        newBranches.append(GraphBlock(nodes: body, results: results))
                    }
                    if !used.isEmpty || sideEffect {
                        keep = .cond(selector: selector, branches: newBranches, outputs: used.map { outs[$0] })
                        effect = effect || sideEffect
                    }
                case .whileLoop(let initial, let params, let condition, let body, let outs, let maxIterations):
                    // Every carried value feeds the next iteration: the state stays whole.
                    for r in condition.results + body.results { live[r] = true }
                    let (condNodes, e1) = prune(condition.nodes, entry: [], nested: true)
                    let (bodyNodes, e2) = prune(body.nodes, entry: params, nested: true)
                    if outs.contains(where: { live[$0] }) || e1 || e2 {
                        keep = .whileLoop(initial: initial, parameters: params,
                                          condition: GraphBlock(nodes: condNodes, results: condition.results),
                                          body: GraphBlock(nodes: bodyNodes, results: body.results),
                                          outputs: outs, maxIterations: maxIterations)
                        effect = effect || e1 || e2
                    }
                }
                if let k = keep {
                    for v in k.inputValues { live[v] = true }
                    kept.append(k)
                }
            }
            return (kept.reversed(), effect)
        }
        let (kept, _) = prune(nodes, entry: [], nested: false)
        let usedConstants = constants.filter { live[$0.value] }
        // Renumber the values left densely (in definition order), so a program's value count
        // is the number of values it defines.
        var newID = [Int](repeating: -1, count: valueCount)
        var count = 0
        func renumber(_ v: Int) -> Int {
            if newID[v] < 0 { newID[v] = count; count += 1 }
            return newID[v]
        }
        func renumbered(_ block: GraphBlock) -> GraphBlock {
            GraphBlock(nodes: block.nodes.map(renumbered), results: block.results.map(renumber))
        }
        func renumbered(_ node: GraphNode) -> GraphNode {
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
            case .vjp(var step):
                step.op = renumber(step.op)
                step.seeds = step.seeds.map { $0.map(renumber) }
                step.outputs = step.outputs.map(renumber)
                return .vjp(step)
            case .cond(let selector, let branches, let outs):
                let s = renumber(selector)
                let bs = branches.map(renumbered)
                return .cond(selector: s, branches: bs, outputs: outs.map(renumber))
            case .whileLoop(let initial, let params, let condition, let body, let outs, let maxIterations):
                let i = initial.map(renumber), p = params.map(renumber)
                let c = renumbered(condition), b = renumbered(body)
                return .whileLoop(initial: i, parameters: p, condition: c, body: b, outputs: outs.map(renumber),
                                  maxIterations: maxIterations)
            }
        }
        let ins = inputs.map { Input(value: renumber($0.value), spec: $0.spec, requiresGrad: $0.requiresGrad) }
        let consts = usedConstants.map { Constant(value: renumber($0.value), tensor: $0.tensor) }
        let newNodes = kept.map(renumbered)
        let outs = outputs.map { Output(value: renumber($0.value), spec: $0.spec) }
        return try Program(valueCount: count, inputs: ins, outputs: outs, constants: consts, nodes: newNodes)
    }
}
