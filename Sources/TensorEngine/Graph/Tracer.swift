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
// A gradient (without create_graph) is lowered into graph nodes when the mapping from its
// tape to the program is exact: the tape was pushed at the top level, no other tape is
// pushed inside it, and every TapeNode on it was recorded by one registry op node of the
// top level (the tracer notes the tape's length as each op starts and ends). Its backward
// pass then runs here op by op, as `Tape.gradient` would, appending a seed, one `vjp` node
// per op on the gradient's path and the `add`s that accumulate. Anything else (a typed call
// outside the registry or control flow that recorded on the tape, a custom gradient, a
// nested tape, create_graph) leaves the gradient one opaque `gradient` node. When the trace
// ends, the vjp nodes of the last gradient taken on each tape release their op's TapeNodes.
//
// What cannot be replayed makes `end` fail with the reason instead of returning a program:
// a custom (foreign) VJP, a tape popped or differentiated that was pushed before the trace
// began, a tape left pushed, or running a program inside a trace.
//
// Control flow (`beginCond`/`nextBranch`/`endCond`, `beginWhile`/`whileBody`/`endWhile`)
// records nested blocks: while one is open, nodes go to it, and the values it defines are
// visible only inside it; using one elsewhere (a result leaked through Python state) makes
// the trace unreplayable. Every branch of a cond runs for real; the node's outputs are new
// handles on the taken branch's results. A loop's condition and body run once while
// recording; the engine then runs the rest of the iterations from the recorded blocks.
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
    /// The block (scope) that defines each value: 0 for the top level.
    private var scopeOf: [Int] = []
    /// The scopes open now, outermost first (0, the top level, always).
    private var openScopes: [Int] = [0]
    private var scopeCount = 1
    /// Tensors named outside a block that a node inside it named again (an op that returns
    /// its input, as a cast to the same dtype does), with their earlier value: the block's
    /// name is dropped when it closes.
    private var shadowed: [(scope: Int, tensor: ObjectIdentifier, value: Int)] = []
    /// Control flow being recorded, innermost last.
    private var frames: [Frame] = []
    /// The tape pushed at the top level and active now, while gradients on it can be lowered.
    private var tapeLog: TapeLog?
    /// How many tapes were pushed at the top level so far (a tape's serial number).
    private var topTapes = 0
    /// Per top-level tape: the vjp nodes (their positions in the top-level node list) of the
    /// last gradient taken while it was active, empty when that gradient was not lowered.
    private var lastGradient: [Int: [Int]] = [:]

    /// Which recorded op node made each TapeNode of a tape pushed at the top level.
    private final class TapeLog {
        struct OpGroup {
            /// The op node, by its first output.
            let op: Int
            let nodes: [TapeNode]
            let inputs: [Tensor]
            /// Per output: the index in `nodes`, from the last, of the node it carries, if one.
            let outputNodes: [Int?]
        }
        let serial: Int
        /// The tape's index in the thread's tape stack.
        let tape: Int
        /// TapeNodes accounted for (the tape's length after the last recorded op).
        var mark = 0
        /// False once a TapeNode not made by a recorded op of the top level is on the tape, or
        /// a tape is pushed inside it.
        var exact = true
        var groups: [OpGroup] = []
        var groupOf: [ObjectIdentifier: Int] = [:]

        init(serial: Int, tape: Int) {
            self.serial = serial
            self.tape = tape
        }

        /// The tape's length now, or nil when it is not the innermost tape any more.
        func length() -> Int? {
            let s = currentTapeState()
            return s.tapes.count - 1 == tape ? s.tapes[tape].count : nil
        }
    }

    /// A cond or loop being recorded.
    private final class Frame {
        enum Kind {
            case cond(selector: Int, taken: Int, count: Int)
            /// `continues`: the condition's value on the first iteration, once recorded.
            case loop(initial: [Tensor], params: [Int], continues: Bool?)
        }
        var kind: Kind
        /// The node list the frame's node goes into.
        var outer: [GraphNode]
        /// Tapes active when it began: its blocks must leave them so.
        let depth: Int
        /// Finished blocks, and the scope of each (finished and current).
        var blocks: [GraphBlock] = []
        var scopes: [Int] = []

        init(_ kind: Kind, outer: [GraphNode], depth: Int) {
            self.kind = kind
            self.outer = outer
            self.depth = depth
        }
    }

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
        guard tr.frames.isEmpty else {
            throw EngineError.notImplemented("the trace cannot be replayed: it ends inside a cond or while_loop")
        }
        guard tr.tapeDepth == 0 else {
            throw EngineError.notImplemented("the trace cannot be replayed: it ends with \(tr.tapeDepth) tape(s) it pushed still active")
        }
        let outs = outputs.map { Program.Output(value: tr.value(of: $0), spec: TensorSpec(of: $0)) }
        // The last gradient on a tape is the last to run its TapeNodes: no gradient walks
        // them after it, so its vjp nodes release them (the tape's pop releases the rest).
        var nodes = tr.nodes
        for positions in tr.lastGradient.values {
            for p in positions {
                if case .vjp(var step) = nodes[p] {
                    step.releases = true
                    nodes[p] = .vjp(step)
                }
            }
        }
        return try Program(valueCount: tr.valueCount, inputs: tr.inputs, outputs: outs, constants: tr.constants, nodes: nodes)
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

    /// Called by the registry's entry points before an op runs: a TapeNode recorded since
    /// the last traced op came from outside the registry.
    @inlinable @inline(__always)
    public static func opStarting() {
        if let tr = current { tr.noteOpStart() }
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
        if tr.tapeDepth == 1 && tr.frames.isEmpty {
            tr.topTapes += 1
            tr.tapeLog = TapeLog(serial: tr.topTapes, tape: currentTapeState().tapes.count - 1)
        } else {
            tr.tapeLog?.exact = false
        }
    }

    static func tapePopped() {
        guard let tr = current, tr.failure == nil else { return }
        guard tr.tapeDepth > 0 else { return tr.fail("a tape pushed before the trace began was popped") }
        if let f = tr.frames.last, tr.tapeDepth <= f.depth {
            return tr.fail("a tape pushed outside a cond branch or while_loop was popped inside it")
        }
        tr.tapeDepth -= 1
        tr.nodes.append(.tapePop)
        if tr.tapeDepth == 0 { tr.tapeLog = nil }
    }

    static func requiresGradSet(_ t: Tensor, _ flag: Bool) {
        guard let tr = current, tr.failure == nil else { return }
        let v = tr.value(of: t)
        guard tr.failure == nil else { return }
        tr.nodes.append(.setRequiresGrad(value: v, flag: flag))
    }

    static func gradientTaken(_ target: Tensor, _ seed: Tensor?, _ sources: [Tensor], _ createGraph: Bool,
                              _ grads: [Tensor?]) {
        guard let tr = current, tr.failure == nil else { return }
        guard tr.tapeDepth >= (createGraph ? 2 : 1) else {
            return tr.fail("a gradient was taken from a tape pushed before the trace began")
        }
        if createGraph, let f = tr.frames.last, tr.tapeDepth <= f.depth {
            return tr.fail("a gradient inside a cond branch or while_loop consumed a tape pushed outside it")
        }
        if createGraph { tr.tapeDepth -= 1 }
        if let log = tr.tapeLog {
            tr.lastGradient[log.serial] = []
            // create_graph moved the tape's nodes onto the one beneath.
            if createGraph { log.exact = false }
        }
        let t = tr.value(of: target), s = seed.map { tr.value(of: $0) }, srcs = sources.map { tr.value(of: $0) }
        let outs = grads.map { $0.map(tr.name) }
        guard tr.failure == nil else { return }
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
        let ins = inputs.map { value(of: $0) }
        guard failure == nil else { return }
        let outs = outputs.map(name)
        nodes.append(.op(index: op, name: OpRegistry.ops[op].name, attrs: attrs, inputs: ins, outputs: outs))
        if let log = tapeLog, log.exact { attribute(log, op: outs.first, inputs, outputs) }
    }

    @usableFromInline
    func noteOpStart() {
        guard failure == nil, let log = tapeLog, log.exact else { return }
        if log.length() != log.mark { log.exact = false }
    }

    /// Gives the TapeNodes recorded since the last op to the op just recorded.
    private func attribute(_ log: TapeLog, op: Int?, _ inputs: [Tensor], _ outputs: [Tensor]) {
        guard let end = log.length() else { return log.exact = false }
        guard end > log.mark else { return }
        guard let op = op, frames.isEmpty else { return log.exact = false }
        let made = Array(currentTapeState().tapes[log.tape][log.mark..<end])
        log.mark = end
        let outputNodes = Tape.carriedNodes(outputs, in: made)
        for n in made { log.groupOf[ObjectIdentifier(n)] = log.groups.count }
        log.groups.append(TapeLog.OpGroup(op: op, nodes: made, inputs: inputs, outputNodes: outputNodes))
    }

    /// Whether a gradient on `log`'s tape can be lowered: every tracked input a TapeNode
    /// reads is either made inside its own op or one of that op's inputs (whose gradient
    /// the graph then accumulates), and that input's own node, if any, is on the tape.
    private static func lowerable(_ log: TapeLog) -> Bool {
        for (g, group) in log.groups.enumerated() {
            for node in group.nodes {
                for t in node.inputs where Tape.isTracked(t) {
                    if let n = t.node, n.isLive {
                        guard let owner = log.groupOf[ObjectIdentifier(n)] else { return false }
                        if owner == g { continue }
                    }
                    guard group.inputs.contains(where: { $0 === t }) else { return false }
                }
            }
        }
        return true
    }

    /// Whether gradients are lowered: `TE_GRAPH_LOWER_GRADIENTS=0` in the environment keeps
    /// every one a `gradient` node (to compare the two, or to step around a lowering bug).
    static let lowersGradients: Bool = {
        guard let v = getenv("TE_GRAPH_LOWER_GRADIENTS") else { return true }
        return String(cString: v) != "0"
    }()

    /// `Tape.gradient` without create_graph, lowered into the trace's nodes (see the top of
    /// this file); nil when no trace is active or this gradient cannot be lowered.
    static func loweredGradient(_ target: Tensor, _ seed: Tensor?, _ sources: [Tensor]) throws -> [Tensor?]? {
        guard lowersGradients, let tr = current, tr.failure == nil, let log = tr.tapeLog, log.exact, tr.frames.isEmpty,
              tr.tapeDepth == 1, log.length() == log.mark, lowerable(log),
              let fullOp = OpRegistry.lookup("full"), let addOp = OpRegistry.lookup("add") else { return nil }
        var added: [GraphNode] = []
        var vjpAt: [Int] = []
        // Per gradient key (Tape.gradientKey): the gradient so far and its value.
        var grads: [ObjectIdentifier: (Tensor, Int)] = [:]
        do {
            let seedGrad: Tensor, seedValue: Int
            if let seed = seed {
                seedGrad = try Tape.seedGradient(target, seed)
                seedValue = tr.value(of: seed)
            } else {
                // The registry's `full` is the function `Tape.gradient` seeds with.
                var attrs = Attrs()
                attrs.set("shape", .ints(target.shape))
                attrs.set("value", .float(1))
                attrs.set("dtype", .string(target.dtype.name))
                seedGrad = try OpRegistry.ops[fullOp].run([], attrs)[0]
                seedValue = tr.name(seedGrad)
                added.append(.op(index: fullOp, name: "full", attrs: attrs, inputs: [], outputs: [seedValue]))
            }
            grads[Tape.gradientKey(target)] = (seedGrad, seedValue)
            try Tape.paused {
                for group in log.groups.reversed() {
                    var seeds: [(TapeNode, Tensor)] = []
                    var seedValues: [Int?] = []
                    for at in group.outputNodes {
                        let node = at.map { group.nodes[group.nodes.count - 1 - $0] }
                        guard let node = node, let (g, v) = grads[ObjectIdentifier(node)] else {
                            seedValues.append(nil)
                            continue
                        }
                        seeds.append((node, g))
                        seedValues.append(v)
                    }
                    if seeds.isEmpty { continue }
                    let contributions = try Tape.backpropagate(op: group.nodes, seeds: seeds)
                    var targets: [Int] = [], outs: [Int] = []
                    var sums: [GraphNode] = []
                    for (input, g) in contributions {
                        guard let target = group.inputs.firstIndex(where: { $0 === input }) else {
                            throw EngineError.internal("a lowered VJP gave a gradient for a tensor that is not its op's input")
                        }
                        let v = tr.name(g)
                        targets.append(target)
                        outs.append(v)
                        let k = Tape.gradientKey(input)
                        if let (prev, pv) = grads[k] {
                            let sum = try OpRegistry.ops[addOp].run([prev, g], Attrs())[0]
                            let sv = tr.name(sum)
                            sums.append(.op(index: addOp, name: "add", attrs: Attrs(), inputs: [pv, v], outputs: [sv]))
                            grads[k] = (sum, sv)
                        } else {
                            grads[k] = (g, v)
                        }
                    }
                    vjpAt.append(added.count)
                    added.append(.vjp(VJPStep(op: group.op, tapeNodes: group.nodes.count, outputNodes: group.outputNodes,
                                              seeds: seedValues, targets: targets, outputs: outs, releases: false)))
                    added += sums
                }
            }
        } catch {
            tr.fail("a gradient raised while it was being recorded: \(error)")
            throw error
        }
        let base = tr.nodes.count
        tr.nodes += added
        tr.lastGradient[log.serial] = vjpAt.map { base + $0 }
        return sources.map { grads[Tape.gradientKey($0)]?.0 }
    }

    private func fail(_ reason: String) {
        failure = reason
        // Nothing more is recorded: let go of what the trace held.
        valueOf = [:]
        held = []
        nodes = []
        constants = []
        shadowed = []
        for f in frames {
            f.outer = []
            f.blocks = []
            if case .loop = f.kind { f.kind = .loop(initial: [], params: [], continues: nil) }
        }
    }

    /// A new value id for `t` (a node's result, or an input); `t` now names it.
    private func name(_ t: Tensor) -> Int {
        let v = valueCount
        valueCount += 1
        let id = ObjectIdentifier(t)
        let scope = openScopes[openScopes.count - 1]
        if scope != 0, let old = valueOf[id] { shadowed.append((scope, id, old)) }
        valueOf[id] = v
        held.append(t)
        scopeOf.append(scope)
        return v
    }

    /// The value `t` names, making it a constant when the trace has not met it yet. A value
    /// defined in a block that is not open (nor `extra`) fails the trace.
    private func value(of t: Tensor, alsoIn extra: Int? = nil) -> Int {
        if let v = valueOf[ObjectIdentifier(t)] {
            if v < scopeOf.count, case let s = scopeOf[v], s != 0, s != extra, !openScopes.contains(s) {
                fail("a value computed inside a cond branch or while_loop was used outside it")
            }
            return v
        }
        // A constant belongs to the top level, visible everywhere.
        let v = valueCount
        valueCount += 1
        valueOf[ObjectIdentifier(t)] = v
        held.append(t)
        scopeOf.append(0)
        constants.append(Program.Constant(value: v, tensor: t))
        return v
    }
}

// MARK: - Control flow

extension Tracer {
    private static func active() throws -> Tracer {
        guard let tr = current else { throw EngineError.value("no active trace") }
        return tr
    }

    /// Closes the innermost scope, giving back the names its nodes shadowed.
    private func closeScope() {
        let s = openScopes.removeLast()
        while let last = shadowed.last, last.scope == s {
            shadowed.removeLast()
            valueOf[last.tensor] = last.value
        }
    }

    private func openScope() -> Int {
        let s = scopeCount
        scopeCount += 1
        openScopes.append(s)
        return s
    }

    /// Ends the block being recorded in `f`, yielding `results` (its ids, resolved by the caller).
    private func closeBlock(_ f: Frame, results: [Int]) {
        closeScope()
        guard failure == nil else { return }
        if tapeDepth != f.depth { return fail("a cond branch or while_loop block left a tape pushed or popped") }
        f.blocks.append(GraphBlock(nodes: nodes, results: results))
        nodes = []
    }

    private func popFrame() -> Frame {
        let f = frames.removeLast()
        nodes = f.outer
        return f
    }

    /// Starts recording a cond of `count` branches on `selector` (a scalar bool or integer),
    /// and its branch 0. Returns the branch the selector takes and whether the cond is
    /// recorded; when it is not (the trace cannot be replayed already), run the taken branch
    /// alone and make no other cond call for it.
    public static func beginCond(selector: Tensor, count: Int) throws -> (taken: Int, recording: Bool) {
        let tr = try active()
        guard count >= 1 else { throw EngineError.value("a cond needs at least one branch") }
        let taken = try branchIndex(selector, count: count)
        guard tr.failure == nil else { return (taken, false) }
        let sel = tr.value(of: selector)
        guard tr.failure == nil else { return (taken, false) }
        let f = Frame(.cond(selector: sel, taken: taken, count: count), outer: tr.nodes, depth: tr.tapeDepth)
        tr.frames.append(f)
        tr.nodes = []
        f.scopes.append(tr.openScope())
        return (taken, true)
    }

    private func condFrame() throws -> (Frame, Int, Int) {
        guard let f = frames.last, case .cond(_, let taken, let count) = f.kind else {
            throw EngineError.value("no cond is being recorded")
        }
        return (f, taken, count)
    }

    /// Ends the branch being recorded and starts the next.
    public static func nextBranch() throws {
        let tr = try active()
        let (f, _, count) = try tr.condFrame()
        guard f.scopes.count < count else { throw EngineError.value("the cond has \(count) branches, all started") }
        // Results are named at the end, when every branch's are known.
        tr.closeBlock(f, results: [])
        f.scopes.append(tr.openScope())
    }

    /// Ends the last branch and the cond. `results[k]`: branch k's results (the same number,
    /// dtypes and shapes for every branch). Returns the cond's outputs (new handles on the
    /// taken branch's results), or nil when the trace cannot be replayed (then use the taken
    /// branch's results as they are).
    public static func endCond(results: [[Tensor]]) throws -> [Tensor]? {
        let tr = try active()
        let (f, taken, count) = try tr.condFrame()
        guard f.scopes.count == count else { throw EngineError.value("the cond has \(count) branches, \(f.scopes.count) started") }
        tr.closeBlock(f, results: [])
        _ = tr.popFrame()
        guard tr.failure == nil, case .cond(let selector, _, _) = f.kind else { return nil }
        guard results.count == count else {
            throw EngineError.value("the cond has \(count) branches, results were given for \(results.count)")
        }
        let specs = results[taken].map(TensorSpec.init(of:))
        for r in results where r.map(TensorSpec.init(of:)) != specs {
            tr.fail("the branches of a cond return different numbers, dtypes or shapes of values: "
                    + "\(r.map(TensorSpec.init(of:))) and \(specs)")
            return nil
        }
        var branches = f.blocks
        for k in 0..<count { branches[k].results = results[k].map { tr.value(of: $0, alsoIn: f.scopes[k]) } }
        guard tr.failure == nil else { return nil }
        let outputs = results[taken].map(gradientAlias)
        tr.nodes.append(.cond(selector: selector, branches: branches, outputs: outputs.map(tr.name)))
        return outputs
    }

    /// Starts recording a loop carrying `initial` and its condition block. Returns the
    /// parameters (new handles on `initial`) that the condition and the body read in place of
    /// the carried values, or nil when the loop is not recorded (the trace cannot be
    /// replayed already): then run it eagerly and make no other loop call for it.
    public static func beginWhile(initial: [Tensor]) throws -> [Tensor]? {
        let tr = try active()
        guard tr.failure == nil else { return nil }
        _ = initial.map { tr.value(of: $0) }
        guard tr.failure == nil else { return nil }
        let f = Frame(.loop(initial: initial, params: [], continues: nil), outer: tr.nodes, depth: tr.tapeDepth)
        tr.frames.append(f)
        tr.nodes = []
        f.scopes.append(tr.openScope())
        let params = initial.map(gradientAlias)
        f.kind = .loop(initial: initial, params: params.map(tr.name), continues: nil)
        f.scopes.append(tr.openScope())
        return params
    }

    private func loopFrame() throws -> Frame {
        guard let f = frames.last, case .loop = f.kind else { throw EngineError.value("no while_loop is being recorded") }
        return f
    }

    /// Ends the condition block with `pred` (one bool or real value) and starts the body's.
    /// Returns whether the condition holds (the body's results are the next state).
    public static func whileBody(pred: Tensor) throws -> Bool {
        let tr = try active()
        let f = try tr.loopFrame()
        guard case .loop(let initial, let params, nil) = f.kind, f.scopes.count == 2 else {
            throw EngineError.value("the while_loop's condition was already recorded")
        }
        let holds = try loopContinues(pred)
        let p = tr.failure == nil ? tr.value(of: pred) : 0
        tr.closeBlock(f, results: [p])
        f.kind = .loop(initial: initial, params: params, continues: holds)
        f.scopes.append(tr.openScope())
        return holds
    }

    /// Ends the body with `results` (the next state: as many values as the loop carries, of
    /// their dtypes and shapes) and the loop, and runs the loop's remaining iterations from
    /// the recorded blocks (at most `maxIterations` in all). Returns the final state (new
    /// handles), or nil when the trace cannot be replayed: then finish the loop eagerly from
    /// `results` when the condition held, else from the initial values.
    public static func endWhile(results: [Tensor], maxIterations: Int?) throws -> [Tensor]? {
        let tr = try active()
        let f = try tr.loopFrame()
        guard case .loop(let initial, let params, let continues?) = f.kind, f.scopes.count == 3 else {
            throw EngineError.value("the while_loop's condition was not recorded")
        }
        if let m = maxIterations, m < 0 { throw EngineError.value("maximum_iterations must not be negative, got \(m)") }
        let resultIDs = tr.failure == nil ? results.map { tr.value(of: $0) } : []
        tr.closeBlock(f, results: resultIDs)
        tr.closeScope()  // the parameters'

        _ = tr.popFrame()
        guard tr.failure == nil else { return nil }
        let specs = initial.map(TensorSpec.init(of:))
        guard results.map(TensorSpec.init(of:)) == specs else {
            tr.fail("a while_loop body returns values of other dtypes or shapes than it carries: "
                    + "\(results.map(TensorSpec.init(of:))) for \(specs)")
            return nil
        }
        let condition = f.blocks[0], body = f.blocks[1]
        let initialIDs = initial.map { tr.value(of: $0) }
        let node = GraphNode.whileLoop(initial: initialIDs, parameters: params, condition: condition, body: body,
                                       outputs: [], maxIterations: maxIterations)
        // The first iteration ran while recording; the engine runs the others, unrecorded.
        var final = initial
        if continues, maxIterations.map({ $0 > 0 }) ?? true {
            let free = Array(Set(node.inputValues))
            let plans = try ProgramValidator.planLoop(valueCount: tr.valueCount, free: free, params: params,
                                                      condition: condition, body: body, depth: tr.tapeDepth)
            var slots = [Tensor?](repeating: nil, count: tr.valueCount)
            for v in free { slots[v] = tr.held[v] }
            let p = pthread_getspecific(tracerKey)
            pthread_setspecific(tracerKey, nil)
            defer { pthread_setspecific(tracerKey, p) }
            final = try BlockRunner.loop(params, condition, body, maxIterations, plans, state: results, done: 1, &slots)
        }
        let outputs = final.map(gradientAlias)
        tr.nodes.append(.whileLoop(initial: initialIDs, parameters: params, condition: condition, body: body,
                                   outputs: outputs.map(tr.name), maxIterations: maxIterations))
        return outputs
    }

    /// Drops the innermost cond or loop being recorded, as if it had not run: the values it
    /// defined can no longer be used.
    public static func abortBlock() throws {
        let tr = try active()
        guard let f = tr.frames.last else { throw EngineError.value("no cond or while_loop is being recorded") }
        // Close the scopes the frame opened (their ids are the newest) that are still open.
        while let s = tr.openScopes.last, s != 0, s >= (f.scopes.first ?? Int.max) { tr.closeScope() }
        _ = tr.popFrame()
        if tr.tapeDepth != f.depth { tr.fail("a cond branch or while_loop that raised left a tape pushed or popped") }
    }
}
