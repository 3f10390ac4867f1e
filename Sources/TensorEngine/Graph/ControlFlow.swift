// Control flow in programs: `cond` (one of several branches, picked by a scalar selector)
// and `whileLoop` (a condition block and a body block run until the condition is false).
//
// Branches and loop blocks are nested node lists in the program's one SSA value space. A
// block may read any value visible where its node stands; the values it defines are
// visible only inside it (and in blocks nested in it). A cond's outputs are new values
// holding the taken branch's results; a loop's parameters are new values, visible in both
// of its blocks, bound to the carried state before each iteration, and its outputs hold
// the final state. Both hand out new tensor handles whose gradients flow to the tensors
// they stand for, so a tape active around a cond or a loop differentiates through it, at
// replay as during the trace.
//
// Liveness is planned per block: a value is dropped after its last use in the block that
// defines it; a block's results are dropped by the node that reads them; values a block
// reads from outside count, at the level that defines them, as read by the node holding
// the block, so a loop's free values live for the whole loop.

/// A nested list of nodes and the values it yields.
public struct GraphBlock {
    public var nodes: [GraphNode]
    public var results: [Int]

    public init(nodes: [GraphNode], results: [Int]) {
        self.nodes = nodes
        self.results = results
    }

    /// Values the block reads (in its nodes or as results) that it does not define, in
    /// first-read order. `entry`: values the block's node defines for it (a loop's parameters).
    func freeValues(entry: [Int] = []) -> [Int] {
        var local = Set(entry)
        var seen = Set<Int>()
        var free: [Int] = []
        func read(_ v: Int) {
            if !local.contains(v), seen.insert(v).inserted { free.append(v) }
        }
        for node in nodes {
            node.inputValues.forEach(read)
            local.formUnion(node.outputValues)
        }
        results.forEach(read)
        return free
    }
}

/// What a vjp node expects of the op whose TapeNodes it runs (`VJPStep`).
struct OpCapture: Equatable {
    let tapeNodes: Int
    let outputNodes: [Int?]
}

/// The liveness plan of one block: what to drop when it starts and after each node, which of
/// its results it defines itself (its node drops them once read), and its nodes' own blocks.
/// At the top level, also the op nodes whose TapeNodes vjp nodes run, and the vjp node
/// that runs each such op's last.
final class BlockPlan {
    let freeAfter: [[Int]]
    let unusedAtEntry: [Int]
    let localResults: [Int]
    /// Per node: a cond's branches, a loop's condition and body; empty for other nodes.
    let children: [[BlockPlan]]
    let captures: [Int: OpCapture]
    let lastVJP: Set<Int>

    init(freeAfter: [[Int]], unusedAtEntry: [Int], localResults: [Int], children: [[BlockPlan]],
         captures: [Int: OpCapture] = [:], lastVJP: Set<Int> = []) {
        self.freeAfter = freeAfter
        self.unusedAtEntry = unusedAtEntry
        self.localResults = localResults
        self.children = children
        self.captures = captures
        self.lastVJP = lastVJP
    }
}

/// Checks a program's nodes (SSA order and scoping, op indices and names, balanced tapes,
/// control-flow arities) and plans their liveness.
struct ProgramValidator {
    let valueCount: Int
    private var defined: [Bool]
    private var visible: [Bool]
    /// The block that defines each value (-1: not yet defined).
    private var owner: [Int]
    private var lastUse: [Int]
    private var blocks = 0

    init(valueCount: Int) throws {
        guard valueCount >= 0 else { throw EngineError.value("program: negative value count") }
        self.valueCount = valueCount
        defined = [Bool](repeating: false, count: valueCount)
        visible = defined
        owner = [Int](repeating: -1, count: valueCount)
        lastUse = [Int](repeating: -1, count: valueCount)
    }

    private mutating func define(_ v: Int, in block: Int, _ what: String) throws {
        guard v >= 0, v < valueCount else { throw EngineError.value("program: \(what) defines value \(v), out of range [0, \(valueCount))") }
        guard !defined[v] else { throw EngineError.value("program: value \(v) is defined twice") }
        defined[v] = true
        visible[v] = true
        owner[v] = block
    }

    private func use(_ v: Int, _ what: String) throws {
        guard v >= 0, v < valueCount, visible[v] else {
            throw EngineError.value("program: \(what) reads value \(v) before it is defined or outside the block that defines it")
        }
    }

    /// Validates and plans a block. `entry`: values defined at its start (the program's
    /// inputs and constants, a loop body's parameters). `depth`: tapes active at its start;
    /// `base`: how many of them were pushed outside the block (it must not pop those).
    /// Returns the plan and the values read from outside the block.
    mutating func block(_ nodes: [GraphNode], entry: [Int], results: [Int], depth startDepth: Int, base: Int,
                        path: String) throws -> (BlockPlan, [Int]) {
        let b = blocks
        blocks += 1
        for v in entry { try define(v, in: b, "\(path)an input") }
        var local = entry
        var freeReads: [Int] = []
        var freeSeen = Set<Int>()
        func read(_ v: Int, at n: Int) {
            if owner[v] == b {
                lastUse[v] = n
            } else if freeSeen.insert(v).inserted {
                freeReads.append(v)
            }
        }
        var children: [[BlockPlan]] = []
        var depth = startDepth
        // This block's op nodes by first output: position, input and output counts, whether
        // a tape was active; the vjp nodes' expectations of them and the last vjp of each.
        var opAt: [Int: (n: Int, inputs: Int, outputs: Int, taped: Bool)] = [:]
        var captures: [Int: OpCapture] = [:]
        var lastVJPOf: [Int: Int] = [:]
        var released = Set<Int>()
        for (n, node) in nodes.enumerated() {
            let what = "\(path)node \(n)"
            var kids: [BlockPlan] = []
            switch node {
            case .op(let index, let name, _, let ins, let outs):
                guard index >= 0, index < OpRegistry.ops.count, OpRegistry.ops[index].name == name else {
                    throw EngineError.value("program: \(what) names op '\(name)' at index \(index), which the registry does not hold")
                }
                for v in ins { try use(v, "\(what) (op '\(name)')"); read(v, at: n) }
                if let first = outs.first { opAt[first] = (n, ins.count, outs.count, depth > 0) }
            case .vjp(let step):
                guard path.isEmpty else { throw EngineError.value("program: \(what) is a vjp node inside control flow") }
                guard let op = opAt[step.op], op.taped else {
                    throw EngineError.value("program: \(what) is a vjp node of value \(step.op), which no earlier op node under a tape defines first")
                }
                guard !released.contains(step.op) else {
                    throw EngineError.value("program: \(what) runs TapeNodes an earlier vjp node released")
                }
                guard step.tapeNodes >= 0, step.outputNodes.count == op.outputs, step.seeds.count == op.outputs,
                      step.outputNodes.allSatisfy({ ($0 ?? 0) >= 0 && (step.tapeNodes == 0 || ($0 ?? 0) < step.tapeNodes) }),
                      zip(step.seeds, step.outputNodes).allSatisfy({ $0.0 == nil || $0.1 != nil }),
                      step.targets.count == step.outputs.count, step.targets.allSatisfy({ $0 >= 0 && $0 < op.inputs }) else {
                    throw EngineError.value("program: \(what) is a malformed vjp node for an op of \(op.inputs) input(s) and \(op.outputs) output(s)")
                }
                let capture = OpCapture(tapeNodes: step.tapeNodes, outputNodes: step.outputNodes)
                guard captures[op.n].map({ $0 == capture }) ?? true else {
                    throw EngineError.value("program: \(what) expects other TapeNodes of its op than an earlier vjp node")
                }
                captures[op.n] = capture
                lastVJPOf[step.op] = n
                if step.releases { released.insert(step.op) }
                for v in node.inputValues { try use(v, what); read(v, at: n) }
            case .tapePush:
                depth += 1
            case .tapePop:
                guard depth > base else {
                    throw EngineError.value("program: \(what) pops a tape \(path.isEmpty ? "the program" : "its block") did not push")
                }
                depth -= 1
            case .setRequiresGrad(let v, _):
                try use(v, what)
                read(v, at: n)
            case .gradient(_, _, let sources, let createGraph, let outs):
                guard sources.count == outs.count else { throw EngineError.value("program: \(what) has \(sources.count) sources and \(outs.count) gradients") }
                guard depth >= (createGraph ? 2 : 1), !createGraph || depth > base else {
                    throw EngineError.value("program: \(what) takes a gradient without a tape the program pushed")
                }
                if createGraph { depth -= 1 }
                for v in node.inputValues { try use(v, what); read(v, at: n) }
            case .cond(let selector, let branches, let outs):
                try use(selector, what)
                read(selector, at: n)
                guard !branches.isEmpty else { throw EngineError.value("program: \(what) is a cond without branches") }
                for (k, branch) in branches.enumerated() {
                    guard branch.results.count == outs.count else {
                        throw EngineError.value("program: \(what) branch \(k) yields \(branch.results.count) values for \(outs.count) outputs")
                    }
                    let (plan, free) = try block(branch.nodes, entry: [], results: branch.results, depth: depth, base: depth,
                                                 path: "\(what) branch \(k): ")
                    kids.append(plan)
                    for v in free { read(v, at: n) }
                }
            case .whileLoop(let initial, let params, let condition, let body, let outs, let maxIterations):
                for v in initial { try use(v, what); read(v, at: n) }
                guard params.count == initial.count, body.results.count == initial.count, outs.count == initial.count else {
                    throw EngineError.value("program: \(what) carries \(initial.count) values into \(params.count) parameters, "
                                            + "its body yields \(body.results.count) and it has \(outs.count) outputs")
                }
                guard condition.results.count == 1 else {
                    throw EngineError.value("program: \(what) has a condition of \(condition.results.count) values (one needed)")
                }
                guard (maxIterations ?? 0) >= 0 else { throw EngineError.value("program: \(what) has a negative iteration limit") }
                let free: [Int]
                (kids, free) = try loop(params, condition, body, depth: depth, path: what)
                for v in free { read(v, at: n) }
            }
            children.append(kids)
            for v in node.outputValues {
                try define(v, in: b, what)
                local.append(v)
            }
        }
        guard depth == startDepth else {
            throw EngineError.value(path.isEmpty ? "program: ends with \(depth - startDepth) tape(s) still pushed"
                                                 : "program: \(path)ends with \(depth - startDepth) tape(s) pushed or popped")
        }
        var isResult = Set<Int>()
        var localResults: [Int] = []
        for r in results {
            try use(r, "\(path)a result")
            if owner[r] == b {
                if isResult.insert(r).inserted { localResults.append(r) }
            } else {
                read(r, at: nodes.count)
            }
        }
        var freeAfter = [[Int]](repeating: [], count: nodes.count)
        for (n, node) in nodes.enumerated() {
            for v in node.outputValues where lastUse[v] < 0 && !isResult.contains(v) { freeAfter[n].append(v) }
        }
        for v in local where lastUse[v] >= 0 && !isResult.contains(v) { freeAfter[lastUse[v]].append(v) }
        let unused = entry.filter { lastUse[$0] < 0 && !isResult.contains($0) }
        if !path.isEmpty { for v in local { visible[v] = false } }
        return (BlockPlan(freeAfter: freeAfter, unusedAtEntry: unused, localResults: localResults, children: children,
                          captures: captures, lastVJP: Set(lastVJPOf.values)), freeReads)
    }

    /// A loop's two blocks: the parameters are defined for both, and planned as the body's
    /// (it drops them at their last use there; the condition only reads them).
    /// Returns the blocks' plans and the values they read from outside the loop.
    mutating func loop(_ params: [Int], _ condition: GraphBlock, _ body: GraphBlock, depth: Int,
                       path: String) throws -> ([BlockPlan], [Int]) {
        // Defined in a block of their own that the condition sees as enclosing it.
        let p = blocks
        blocks += 1
        for v in params { try define(v, in: p, "\(path) (a parameter)") }
        let (condPlan, condFree) = try block(condition.nodes, entry: [], results: condition.results, depth: depth, base: depth,
                                             path: "\(path) condition: ")
        let isParam = Set(params)
        for v in params { defined[v] = false }
        let (bodyPlan, bodyFree) = try block(body.nodes, entry: params, results: body.results, depth: depth, base: depth,
                                             path: "\(path) body: ")
        var seen = Set<Int>()
        let free = (condFree + bodyFree).filter { !isParam.contains($0) && seen.insert($0).inserted }
        return ([condPlan, bodyPlan], free)
    }

    /// Plans a loop recorded by a trace, whose free values are defined outside this validator.
    static func planLoop(valueCount: Int, free: [Int], params: [Int], condition: GraphBlock, body: GraphBlock,
                         depth: Int) throws -> [BlockPlan] {
        var v = try ProgramValidator(valueCount: valueCount)
        let outer = v.blocks
        v.blocks += 1
        for f in Set(free) { try v.define(f, in: outer, "a free value") }
        return try v.loop(params, condition, body, depth: depth, path: "while_loop").0
    }
}

/// A new handle on `t`'s storage through which a tape's gradients flow to `t`.
func gradientAlias(_ t: Tensor) -> Tensor {
    let r = stopGradient(t)
    Tape.record(r, [t]) { g in [g] }
    return r
}

/// The branch a selector picks: its value clamped to the branches (false, true: 0, 1).
func branchIndex(_ selector: Tensor, count: Int) throws -> Int {
    guard selector.count == 1, selector.dtype == .bool || selector.dtype.isInteger else {
        throw EngineError.value("a cond selector must be one bool or integer value, got \(TensorSpec(of: selector))")
    }
    let v = try selector.double(at: 0)
    return v <= 0 ? 0 : v >= Double(count - 1) ? count - 1 : Int(v)
}

/// Whether a loop condition's value holds (non-zero, as Python's `bool`).
func loopContinues(_ pred: Tensor) throws -> Bool {
    guard pred.count == 1, !pred.dtype.isComplex else {
        throw EngineError.value("a while_loop condition must be one bool or real value, got \(TensorSpec(of: pred))")
    }
    return try pred.double(at: 0) != 0
}

/// Runs nested blocks on a program's value slots.
enum BlockRunner {
    static func read(_ slots: [Tensor?], _ v: Int) throws -> Tensor {
        guard let t = slots[v] else { throw EngineError.internal("program value \(v) was dropped before its last use") }
        return t
    }

    static func run(_ nodes: [GraphNode], _ plan: BlockPlan, _ slots: inout [Tensor?]) throws {
        for v in plan.unusedAtEntry { slots[v] = nil }
        for (n, node) in nodes.enumerated() {
            try Program.execute(node, plan, n, &slots)
            for v in plan.freeAfter[n] { slots[v] = nil }
        }
    }

    /// Runs block `plan` and returns its results, dropping those it defined.
    static func results(_ block: GraphBlock, _ plan: BlockPlan, _ slots: inout [Tensor?]) throws -> [Tensor] {
        try run(block.nodes, plan, &slots)
        let out = try block.results.map { try read(slots, $0) }
        for v in plan.localResults { slots[v] = nil }
        return out
    }

    static func cond(_ selector: Int, _ branches: [GraphBlock], _ outputs: [Int], _ plans: [BlockPlan],
                     _ slots: inout [Tensor?]) throws {
        let k = try branchIndex(try read(slots, selector), count: branches.count)
        let results = try self.results(branches[k], plans[k], &slots)
        for (o, r) in zip(outputs, results) { slots[o] = gradientAlias(r) }
    }

    /// Runs a loop from `state` after `done` iterations; returns the final state.
    static func loop(_ params: [Int], _ condition: GraphBlock, _ body: GraphBlock, _ maxIterations: Int?,
                     _ plans: [BlockPlan], state start: [Tensor], done: Int, _ slots: inout [Tensor?]) throws -> [Tensor] {
        var state = start
        var iteration = done
        while maxIterations.map({ iteration < $0 }) ?? true {
            for (p, s) in zip(params, state) { slots[p] = gradientAlias(s) }
            guard try loopContinues(try results(condition, plans[0], &slots)[0]) else { break }
            state = try results(body, plans[1], &slots)
            iteration += 1
        }
        for p in params { slots[p] = nil }
        return state
    }
}
