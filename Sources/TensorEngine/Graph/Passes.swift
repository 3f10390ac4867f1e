// Graph passes run when a trace ends (`Program.optimized()`): constant folding, common
// subexpressions, epilogue fusion, conv + max-pool fusion, elementwise fusion, then dead code.
//
// Both rest on registry ops being pure functions of their inputs and attributes (random
// ops read their seed as an input). Both work on the program's top-level node list only:
// values defined inside control-flow blocks are left alone, though uses inside blocks of
// a value replaced outside are redirected.
//
// Tapes make a node's meaning depend on where it runs: an op recorded under a pushed tape
// gets a gradient, the same op before the push does not, and a set-requires-grad node
// changes what later ops record. So two nodes merge only within one stretch between tape
// steps, requires-grad changes and control flow, where both would be recorded alike; and
// no node whose outputs are program outputs, gradient sources or get their requires-grad
// flag set is merged or folded (the caller, or a tape, tells those handles apart).
//
// A vjp node runs the TapeNodes one op node records at replay, so no pass merges, folds or
// fuses an op node a vjp node names (another op would record other TapeNodes, or none),
// except the epilogue fusion, which makes the ops' vjp nodes one for the fused op; a vjp
// node is no op, so it is never merged or folded itself, and ends a stretch.

extension Program {
    /// Constant folding, common subexpressions, epilogue fusion, conv + max-pool fusion,
    /// elementwise fusion and dead code, in that order.
    public func optimized() throws -> Program {
        try foldingConstants().eliminatingCommonSubexpressions().fusingEpilogues().fusingPools().fusingElementwise()
            .eliminatingDeadCode()
    }

    /// Values whose identity matters beyond their contents: program outputs, values a
    /// set-requires-grad node flips and gradient sources (each gets its own gradient),
    /// anywhere, blocks included.
    fileprivate var pinnedValues: Set<Int> {
        var pinned = Set(outputs.map(\.value))
        func visit(_ nodes: [GraphNode]) {
            for node in nodes {
                switch node {
                case .setRequiresGrad(let v, _): pinned.insert(v)
                case .gradient(_, _, let sources, _, _): pinned.formUnion(sources)
                case .cond(_, let branches, _): for b in branches { visit(b.nodes) }
                case .whileLoop(_, _, let condition, let body, _, _):
                    visit(condition.nodes)
                    visit(body.nodes)
                default: break
                }
            }
        }
        visit(nodes)
        return pinned
    }

    /// The op nodes (by first output) whose TapeNodes vjp nodes run.
    var recordedForVJP: Set<Int> {
        var ops = Set<Int>()
        for node in nodes { if case .vjp(let step) = node { ops.insert(step.op) } }
        return ops
    }

    /// Each value's number of readers among the top-level nodes (a read inside a block counts
    /// for the node that holds it) and the program's outputs.
    fileprivate var readCounts: [Int] {
        var uses = [Int](repeating: 0, count: valueCount)
        for node in nodes { for v in node.inputValues { uses[v] += 1 } }
        for o in outputs { uses[o.value] += 1 }
        return uses
    }

    /// Largest result (in elements) folded into a constant: the constant then lives as long
    /// as the program, and is written into its file.
    static let foldLimit = 1024

    /// The program with every top-level op whose inputs are all constants (none requiring
    /// a gradient) run once, here, and its results made constants, when they are small.
    /// Ops with no inputs (`full`, `arange`) stay: they cost one fill per run, and a
    /// translator reads their shapes (the ONNX exporter makes a `full` of the traced batch
    /// size follow the batch).
    public func foldingConstants() throws -> Program {
        let pinned = pinnedValues, recorded = recordedForVJP
        var constantOf: [Int: Tensor] = [:]
        for c in constants { constantOf[c.value] = c.tensor }
        var kept: [GraphNode] = []
        var folded: [Constant] = []
        for node in nodes {
            guard case .op(let index, _, let attrs, let ins, let outs) = node, !ins.isEmpty,
                  !outs.contains(where: pinned.contains), !recorded.contains(outs.first ?? -1),
                  let args = Optional(ins.compactMap { constantOf[$0] }), args.count == ins.count,
                  !args.contains(where: \.requiresGrad),
                  let results = try? OpRegistry.ops[index].run(args, attrs),
                  results.count == outs.count,
                  results.allSatisfy({ $0.count <= Program.foldLimit && !$0.requiresGrad })
            else {
                kept.append(node)
                continue
            }
            for (v, t) in zip(outs, results) {
                constantOf[v] = t
                folded.append(Constant(value: v, tensor: t))
            }
        }
        if folded.isEmpty { return self }
        return try Program(valueCount: valueCount, inputs: inputs, outputs: outputs, constants: constants + folded,
                           nodes: kept)
    }

    /// The program with each top-level op node that repeats an earlier one (same op,
    /// attributes and inputs, in the same stretch: see the top of this file) dropped and
    /// its outputs read from the earlier node's.
    public func eliminatingCommonSubexpressions() throws -> Program {
        let pinned = pinnedValues, recorded = recordedForVJP
        var replacement: [Int: Int] = [:]
        func resolve(_ v: Int) -> Int { replacement[v] ?? v }
        var seen: [String: [Int]] = [:]
        var kept: [GraphNode] = []
        for node in nodes {
            let node = node.readingReplaced(resolve)
            switch node {
            case .op(let index, _, let attrs, let ins, let outs)
            where !outs.contains(where: pinned.contains) && !recorded.contains(outs.first ?? -1):
                let key = "\(index)|\(ins)|" + attrs.values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                    .joined(separator: ",")
                if let earlier = seen[key], earlier.count == outs.count {
                    for (v, e) in zip(outs, earlier) { replacement[v] = e }
                    continue
                }
                seen[key] = outs
            case .op:
                break
            default:
                // A tape step, requires-grad change or control flow ends the stretch.
                seen.removeAll()
            }
            kept.append(node)
        }
        if replacement.isEmpty { return self }
        return try Program(valueCount: valueCount, inputs: inputs,
                           outputs: outputs.map { Output(value: resolve($0.value), spec: $0.spec) },
                           constants: constants, nodes: kept)
    }
}

extension Program {
    /// The program with each top-level `conv` or `matmul` whose one reader is an `add`, and
    /// that add's one reader an activation (relu, sigmoid, tanh) if there is one, made one
    /// node with a `bias` input and an `activation` attribute (Epilogue.swift), placed where
    /// the last of them was. The three must lie in one stretch (see the top of this file), and
    /// neither intermediate may be pinned. The fused op computes the same values, as the ops
    /// themselves wherever the kernel cannot (a bias that is not one row of channels, a tape
    /// recording), so the rewrite needs no shapes. Under a lowered gradient the ops' vjp
    /// nodes become one for the fused op, in the place of the first (the activation's): the
    /// fused op records one TapeNode whose VJP is the three ops' (or, where the kernel cannot
    /// run, the ops' own nodes), and the gradients passed between the three were read by the
    /// next vjp alone. Ops whose vjp nodes do not form such a chain stay apart.
    public func fusingEpilogues() throws -> Program {
        guard let conv = OpRegistry.lookup("conv"), let matmul = OpRegistry.lookup("matmul"),
              let add = OpRegistry.lookup("add") else { return self }
        var activations: [Int: EpilogueActivation] = [:]
        for a in EpilogueActivation.allCases where a != .none {
            if let i = OpRegistry.lookup(a.rawValue) { activations[i] = a }
        }
        let readers = SoleReaders(self), uses = readers.uses
        var vjpsOf: [Int: [Int]] = [:]
        for (n, node) in nodes.enumerated() {
            if case .vjp(let step) = node { vjpsOf[step.op, default: []].append(n) }
        }
        /// One op of a chain to fuse, outermost first: its first output, the input its
        /// gradient passes to the next op's vjp (nil for the last), and where its other inputs
        /// go among the fused op's.
        typealias Link = (op: Int, passes: Int?, inputs: [Int: Int])
        /// The chain's vjp nodes as one for the fused op yielding `result`: where it goes and
        /// the nodes it replaces; nil when they do not form a chain.
        func fusedVJP(_ chain: [Link], result: Int) -> (at: Int, step: VJPStep, replaced: [Int])? {
            var found: [(at: Int, step: VJPStep)] = []
            for link in chain {
                let at = vjpsOf[link.op] ?? []
                guard at.count <= 1 else { return nil }
                guard let p = at.first, case .vjp(let step) = nodes[p] else { break }
                found.append((p, step))
            }
            // A vjp exists for a prefix of the chain: an op's gradient reaches the one it reads.
            guard let first = found.first, !chain[found.count...].contains(where: { vjpsOf[$0.op] != nil }),
                  first.step.outputNodes == [0], found.allSatisfy({ $0.step.releases == first.step.releases })
            else { return nil }
            var targets: [Int] = [], outs: [Int] = []
            for (k, f) in found.enumerated() {
                let passed = f.step.targets.indices.filter { f.step.targets[$0] == chain[k].passes }
                if k + 1 < found.count {
                    let g = passed.count == 1 ? f.step.outputs[passed[0]] : -1
                    guard g >= 0, uses[g] == 1, found[k + 1].step.seeds == [g] else { return nil }
                } else if !passed.isEmpty {
                    return nil
                }
                for (i, t) in f.step.targets.enumerated() where t != chain[k].passes {
                    guard let fusedInput = chain[k].inputs[t] else { return nil }
                    targets.append(fusedInput)
                    outs.append(f.step.outputs[i])
                }
            }
            let step = VJPStep(op: result, tapeNodes: 0, outputNodes: [0], seeds: first.step.seeds, targets: targets,
                               outputs: outs, releases: first.step.releases)
            return (first.at, step, found.dropFirst().map(\.at))
        }
        var rewritten = nodes.map { Optional($0) }
        var fused = 0
        // Adds (and activations) an earlier fusion took: in `matmul(a) + matmul(b)` both
        // products read the one add, which only the first may take (the second would drop
        // the first product's node and read its value as the bias).
        var taken = Set<Int>()
        for (n, node) in nodes.enumerated() {
            guard case .op(let index, let name, var attrs, let ins, let outs) = node, index == conv || index == matmul,
                  ins.count == 2, !attrs.has("activation"), outs.count == 1,
                  let sum = readers.reader(of: outs[0], after: n), sum.index == add, sum.inputs.count == 2, sum.outputs.count == 1,
                  !taken.contains(sum.at)
            else { continue }
            let base = sum.inputs[0] == outs[0] ? 0 : 1
            let bias = sum.inputs[1 - base]
            guard bias != outs[0] else { continue }
            var last = sum.at, result = sum.outputs[0], activation = EpilogueActivation.none
            var chain: [Link] = [(sum.outputs[0], base, [1 - base: 2]), (outs[0], nil, [0: 0, 1: 1])]
            if let act = readers.reader(of: result, after: sum.at), let a = activations[act.index], act.attrs.values.isEmpty,
               act.inputs.count == 1, act.outputs.count == 1 {
                (last, result, activation) = (act.at, act.outputs[0], a)
                chain.insert((act.outputs[0], 0, [:]), at: 0)
            }
            if chain.contains(where: { vjpsOf[$0.op] != nil }) {
                guard let (at, step, replaced) = fusedVJP(chain, result: result) else { continue }
                rewritten[at] = .vjp(step)
                for p in replaced { rewritten[p] = nil }
            }
            attrs.set("activation", .string(activation.rawValue))
            taken.formUnion([sum.at, last])
            rewritten[n] = nil
            if last != sum.at { rewritten[sum.at] = nil }
            rewritten[last] = .op(index: index, name: name, attrs: attrs, inputs: ins + [bias], outputs: [result])
            fused += 1
        }
        if fused == 0 { return self }
        return try Program(valueCount: valueCount, inputs: inputs, outputs: outputs, constants: constants,
                           nodes: rewritten.compactMap { $0 })
    }
}

/// Where each top-level value has its one reader: the fusion passes merge a node into its
/// value's only reader, in the same stretch (see the top of this file), when the value is not
/// pinned.
private struct SoleReaders {
    typealias Reader = (at: Int, index: Int, attrs: Attrs, inputs: [Int], outputs: [Int])
    let nodes: [GraphNode], uses: [Int], pinned: Set<Int>
    private var stretch: [Int] = []

    init(_ program: Program) {
        nodes = program.nodes
        uses = program.readCounts
        pinned = program.pinnedValues
        var current = 0
        for node in nodes {
            if case .op = node {} else { current += 1 }
            stretch.append(current)
        }
    }

    /// The op node reading `v` (its only reader) in node `n`'s stretch.
    func reader(of v: Int, after n: Int) -> Reader? {
        guard uses[v] == 1, !pinned.contains(v) else { return nil }
        var j = n + 1
        while j < nodes.count, stretch[j] == stretch[n] {
            if case .op(let index, _, let attrs, let ins, let outs) = nodes[j], ins.contains(v) {
                return (j, index, attrs, ins, outs)
            }
            j += 1
        }
        return nil
    }
}

extension Program {
    /// The program with each top-level `conv` whose one reader is a `max_pool` of valid
    /// padding made one conv node with `max_pool_size` (and `max_pool_strides`) attributes
    /// (Conv.swift), placed where the pool was: it pools each chunk of images while the
    /// convolution's output is in cache. The conv may carry its epilogue already. As with
    /// epilogues, the fused op computes the two ops itself wherever its kernel cannot (a tape
    /// recording, groups, the Winograd path), so the rewrite needs no shapes. Ops whose
    /// TapeNodes vjp nodes run (a training step) stay apart: the kernel would not run there.
    public func fusingPools() throws -> Program {
        guard let conv = OpRegistry.lookup("conv"), let maxPool = OpRegistry.lookup("max_pool") else { return self }
        let readers = SoleReaders(self), recorded = recordedForVJP
        var rewritten = nodes.map { Optional($0) }
        var fused = 0
        for (n, node) in nodes.enumerated() {
            guard case .op(let index, let name, var attrs, let ins, let outs) = node, index == conv, outs.count == 1,
                  !attrs.has("max_pool_size"), !recorded.contains(outs[0]), let pool = readers.reader(of: outs[0], after: n),
                  pool.index == maxPool, pool.inputs == [outs[0]], pool.outputs.count == 1,
                  !recorded.contains(pool.outputs[0]) else { continue }
            let poolAttrs = pool.attrs.values
            guard case .ints(let size)? = poolAttrs["pool_size"] else { continue }
            if let padding = poolAttrs["padding"] {
                guard case .string("valid") = padding else { continue }
            }
            attrs.set("max_pool_size", .ints(size))
            if let strides = poolAttrs["strides"] { attrs.set("max_pool_strides", strides) }
            rewritten[n] = nil
            rewritten[pool.at] = .op(index: index, name: name, attrs: attrs, inputs: ins, outputs: pool.outputs)
            fused += 1
        }
        if fused == 0 { return self }
        return try Program(valueCount: valueCount, inputs: inputs, outputs: outputs, constants: constants,
                           nodes: rewritten.compactMap { $0 })
    }
}

extension Program {
    /// The program with each run of top-level elementwise op nodes (`ElementwiseFusion`'s ops,
    /// no attributes) that lie next to each other in the node list, split into the parts
    /// connected by data flow within the run, made one `fused_elementwise` node per part of two
    /// ops or more (FusedElementwise.swift), placed where the run was. A run lies within one
    /// stretch (see the top of this file): any other node ends it. A part's values that are read
    /// outside it, are program outputs or are pinned become the fused node's outputs; the others
    /// are never materialised. The fused op checks shapes and dtypes when it runs and falls back
    /// to the ops themselves, so the rewrite needs none.
    public func fusingElementwise() throws -> Program {
        let pinned = pinnedValues, uses = readCounts, recorded = recordedForVJP
        guard let fusedIndex = OpRegistry.lookup("fused_elementwise") else { return self }
        func fusable(_ node: GraphNode) -> Bool {
            guard case .op(_, let name, let attrs, let ins, let outs) = node, outs.count == 1, !recorded.contains(outs[0]),
                  ins.count == ElementwiseFusion.arity(name), attrs.values.isEmpty else { return false }
            return true
        }
        var rewritten: [GraphNode] = []
        var fused = 0
        var n = 0
        while n < nodes.count {
            guard fusable(nodes[n]) else {
                rewritten.append(nodes[n])
                n += 1
                continue
            }
            var end = n
            while end < nodes.count, fusable(nodes[end]) { end += 1 }
            let run = Array(nodes[n..<end])
            n = end
            // Parts by data flow: union-find over the run's nodes.
            var parent = Array(run.indices)
            func root(_ i: Int) -> Int {
                var i = i
                while parent[i] != i { parent[i] = parent[parent[i]]; i = parent[i] }
                return i
            }
            var definedAt: [Int: Int] = [:]
            for (i, node) in run.enumerated() {
                for v in node.inputValues {
                    if let d = definedAt[v] { parent[root(i)] = root(d) }
                }
                definedAt[node.outputValues[0]] = i
            }
            var parts: [Int: [Int]] = [:]
            var order: [Int] = []
            for i in run.indices {
                let r = root(i)
                if parts[r] == nil { order.append(r) }
                parts[r, default: []].append(i)
            }
            for r in order {
                let members = parts[r]!
                guard members.count >= 2, let node = fusedNode(members.map { run[$0] }, uses: uses, pinned: pinned,
                                                                 index: fusedIndex) else {
                    rewritten += members.map { run[$0] }
                    continue
                }
                rewritten.append(node)
                fused += 1
            }
        }
        if fused == 0 { return self }
        return try Program(valueCount: valueCount, inputs: inputs, outputs: outputs, constants: constants,
                           nodes: rewritten)
    }

    /// One `fused_elementwise` node for `part` (fusable op nodes, in program order), given each
    /// value's number of readers in the program; nil when none of its values is needed outside.
    private func fusedNode(_ part: [GraphNode], uses: [Int], pinned: Set<Int>, index: Int) -> GraphNode? {
        var inputs: [Int] = []
        var reference: [Int: Int] = [:]  // value -> position among the inputs, or instruction
        var names: [String] = [], operands: [Int] = []
        var readsInside: [Int: Int] = [:]
        var defined: [Int] = []
        for node in part {
            guard case .op(_, let name, _, let ins, let outs) = node else { return nil }
            for v in ins {
                readsInside[v, default: 0] += 1
                if reference[v] == nil, !defined.contains(v) {
                    reference[v] = inputs.count
                    inputs.append(v)
                }
            }
            names.append(name)
            defined.append(outs[0])
            operands += [ins[0], ins.count > 1 ? ins[1] : -1]
        }
        // Instruction references come after the inputs, now that their count is known.
        for (j, v) in defined.enumerated() { reference[v] = inputs.count + j }
        let results = defined.indices.filter { j in
            let v = defined[j]
            return pinned.contains(v) || uses[v] > (readsInside[v] ?? 0)
        }
        if results.isEmpty { return nil }
        var attrs = Attrs()
        attrs.set("ops", .string(names.joined(separator: ",")))
        attrs.set("operands", .ints(operands.map { $0 < 0 ? -1 : reference[$0]! }))
        attrs.set("results", .ints(results))
        return .op(index: index, name: "fused_elementwise", attrs: attrs, inputs: inputs,
                   outputs: results.map { defined[$0] })
    }
}

extension GraphNode {
    /// The node with every value it reads (in nested blocks too) passed through `resolve`.
    func readingReplaced(_ resolve: (Int) -> Int) -> GraphNode {
        func block(_ b: GraphBlock) -> GraphBlock {
            GraphBlock(nodes: b.nodes.map { $0.readingReplaced(resolve) }, results: b.results.map(resolve))
        }
        switch self {
        case .op(let index, let name, let attrs, let ins, let outs):
            return .op(index: index, name: name, attrs: attrs, inputs: ins.map(resolve), outputs: outs)
        case .tapePush, .tapePop:
            return self
        case .setRequiresGrad(let v, let flag):
            return .setRequiresGrad(value: resolve(v), flag: flag)
        case .gradient(let t, let seed, let srcs, let createGraph, let outs):
            return .gradient(target: resolve(t), seed: seed.map(resolve), sources: srcs.map(resolve),
                             createGraph: createGraph, outputs: outs)
        case .vjp(var step):
            step.seeds = step.seeds.map { $0.map(resolve) }
            return .vjp(step)
        case .cond(let selector, let branches, let outs):
            return .cond(selector: resolve(selector), branches: branches.map(block), outputs: outs)
        case .whileLoop(let initial, let params, let condition, let body, let outs, let maxIterations):
            return .whileLoop(initial: initial.map(resolve), parameters: params, condition: block(condition),
                              body: block(body), outputs: outs, maxIterations: maxIterations)
        }
    }
}
