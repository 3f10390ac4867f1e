import XCTest
import Foundation
@testable import TensorEngine

/// Lowered gradients: a traced `Tape.gradient` becomes a seed, vjp nodes and adds, whose
/// replay equals the eager gradient bit for bit; what cannot be mapped exactly stays one
/// `gradient` node; the last vjp of an op frees what its TapeNodes held.
final class GraphVJPTests: XCTestCase {
    override func tearDown() {
        Tracer.abort()
        while Tape.depth > 0 { try? Tape.pop() }
    }

    private func op(_ name: String, _ inputs: Tensor..., attrs: [String: AttrValue] = [:]) throws -> Tensor {
        try OpRegistry.call(name, inputs, Attrs(attrs))[0]
    }

    private func leaf(_ t: Tensor) throws -> Tensor {
        let l = try op("stop_gradient", t)
        l.requiresGrad = true
        return l
    }

    private func values(_ n: Int, _ seed: Int) -> [Float] {
        (0..<n).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) }
    }

    /// x, y, w1, b1, w2, b2 for step `s` (x and y are not tracked).
    /// `rowBias`: b1 is one row of channels (the fused matmul's kernel adds it), else a whole
    /// [5, 8] matrix (the fused op runs as its ops).
    private func arguments(_ s: Int, rowBias: Bool = true) throws -> [Tensor] {
        try [
            Tensor(values(20, 100 + s), shape: [5, 4]), Tensor(values(15, 200 + s), shape: [5, 3]),
            leaf(Tensor(values(32, 1 + s), shape: [4, 8])),
            leaf(rowBias ? Tensor(values(8, 2 + s), shape: [8]) : Tensor(values(40, 2 + s), shape: [5, 8])),
            leaf(Tensor(values(24, 3 + s), shape: [8, 3])), leaf(Tensor(values(3, 4 + s), shape: [3])),
        ]
    }

    enum Variant { case lowered, typedCall, nestedTape, cond }

    /// A 4-8-3 MLP's loss, mean((h w2 + b2 - y)^2) + mean(h) with h = relu(x w1 + b1) read
    /// twice, and its gradients with respect to x (not tracked: nil) and the weights.
    /// Returns [loss, gradients of w1, b1, w2, b2].
    private func step(_ a: [Tensor], _ variant: Variant = .lowered, tracing: Bool = false) throws -> [Tensor] {
        let (x, y, w1, b1, w2, b2) = (a[0], a[1], a[2], a[3], a[4], a[5])
        Tape.push()
        let pre = try op("add", try op("matmul", x, w1), b1)
        var h = try op("relu", pre)
        switch variant {
        case .lowered: break
        case .typedCall:
            _ = try exp(h)  // records on the tape outside the registry
        case .nestedTape:
            Tape.push()
            _ = try Tape.gradient(of: try op("sum", h), wrt: [w1])
            try Tape.pop()
        case .cond:
            if tracing {
                let sel = try Tensor([true])
                _ = try Tracer.beginCond(selector: sel, count: 2)
                let r0 = try op("negative", h)
                try Tracer.nextBranch()
                let r1 = try op("abs", h)
                h = try XCTUnwrap(try Tracer.endCond(results: [[r0], [r1]]))[0]
            } else {
                h = try op("abs", h)
            }
        }
        let p = try op("add", try op("matmul", h, w2), b2)
        let d = try op("subtract", p, y)
        let all: AttrValue = .ints([0, 1])
        let loss = try op("add", try op("mean", try op("multiply", d, d), attrs: ["axes": all]),
                          try op("mean", h, attrs: ["axes": all]))
        let grads = try Tape.gradient(of: loss, wrt: [x, w1, b1, w2, b2])
        try Tape.pop()
        XCTAssertNil(grads[0], "x is not tracked")
        return try [loss] + grads[1...].map { try XCTUnwrap($0) }
    }

    private func trace(_ variant: Variant, rowBias: Bool = true) throws -> (Program, [Tensor]) {
        let a = try arguments(0, rowBias: rowBias)
        try Tracer.begin()
        for t in a { try Tracer.declareInput(t) }
        let out = try step(a, variant, tracing: true)
        return (try Tracer.end(outputs: out), out)
    }

    private func count(_ p: Program, _ pred: (GraphNode) -> Bool) -> Int { p.nodes.filter(pred).count }
    private func isVJP(_ n: GraphNode) -> Bool { if case .vjp = n { true } else { false } }
    private func isGradient(_ n: GraphNode) -> Bool { if case .gradient = n { true } else { false } }

    private func assertBitwiseEqual(_ a: [Tensor], _ b: [Tensor], _ what: String, line: UInt = #line) throws {
        XCTAssertEqual(a.count, b.count, what, line: line)
        for (i, (u, v)) in zip(a, b).enumerated() {
            XCTAssertEqual(u.shape, v.shape, "\(what): output \(i)", line: line)
            XCTAssertEqual(try u.array(Float.self).map(\.bitPattern), try v.array(Float.self).map(\.bitPattern),
                           "\(what): output \(i)", line: line)
        }
    }

    func testLoweredGradientReplaysBitForBitAsEager() throws {
        let (program, first) = try trace(.lowered)
        XCTAssertEqual(count(program, isGradient), 0, "the gradient is lowered")
        // matmul, add, relu, matmul, add, subtract, multiply, mean, mean, add: all on the path.
        XCTAssertEqual(count(program, isVJP), 10)
        XCTAssertTrue(program.nodes.contains { if case .vjp(let s) = $0 { s.releases } else { false } })
        try assertBitwiseEqual(first, try step(try arguments(0)), "the traced step")
        let variants = [program, try program.eliminatingDeadCode(), try program.optimized()]
        for s in 1..<5 {
            let a = try arguments(s)
            let eager = try step(a)
            for (k, p) in variants.enumerated() {
                try assertBitwiseEqual(try p.run(inputs: a), eager, "step \(s), program \(k)")
            }
            XCTAssertEqual(Tape.depth, 0)
        }
        let fusedVJPs = try program.optimized().nodes.filter { if case .vjp(let s) = $0 { s.tapeNodes == 0 } else { false } }
        XCTAssertEqual(fusedVJPs.count, 2, "both layers' epilogues fused, with their vjps")
        // Replay does not need the trace's tensors: a program read back from its file runs alike.
        let loaded = try Program(serialized: try program.serialized())
        XCTAssertEqual(try loaded.serialized(), try program.serialized())
        XCTAssertTrue(program.describedAsJSON().contains("\"kind\":\"vjp\""))
        let a = try arguments(7)
        try assertBitwiseEqual(try loaded.run(inputs: a), try step(a), "loaded")
    }

    func testVJPNodesNobodyReadsAreDeadCode() throws {
        let (program, _) = try trace(.lowered)
        // Only the loss and w2's gradient are read: the vjps below the second layer go.
        let partial = try Program(valueCount: program.valueCount, inputs: program.inputs,
                                  outputs: [program.outputs[0], program.outputs[3]], constants: program.constants,
                                  nodes: program.nodes).eliminatingDeadCode()
        let names = partial.nodes.compactMap { n -> String? in
            guard case .vjp(let s) = n else { return nil }
            return partial.nodes.lazy.compactMap { if case .op(_, let name, _, _, let outs) = $0, outs[0] == s.op { name } else { nil } }.first
        }
        // mean(h)'s vjp gives h's gradient alone, which nothing reads now.
        XCTAssertEqual(names, ["add", "mean", "multiply", "subtract", "add", "matmul"])
        let eager = try step(try arguments(2))
        try assertBitwiseEqual(try partial.run(inputs: try arguments(2)), [eager[0], eager[3]], "partial")
        let noGradient = try Program(valueCount: program.valueCount, inputs: program.inputs, outputs: [program.outputs[0]],
                                     constants: program.constants, nodes: program.nodes).eliminatingDeadCode()
        XCTAssertEqual(count(noGradient, isVJP), 0)
    }

    func testAFusedEpilogueThatRunsAsItsOpsReplaysAsEager() throws {
        let (program, _) = try trace(.lowered, rowBias: false)
        let optimized = try program.optimized()
        XCTAssertTrue(optimized.nodes.contains { if case .vjp(let s) = $0 { s.tapeNodes == 0 } else { false } })
        for s in 1..<3 {
            let a = try arguments(s, rowBias: false)
            try assertBitwiseEqual(try optimized.run(inputs: a), try step(a), "step \(s)")
        }
    }

    func testWhatCannotBeMappedStaysOneGradientNode() throws {
        for variant in [Variant.typedCall, .nestedTape, .cond] {
            let (program, first) = try trace(variant)
            XCTAssertEqual(count(program, isVJP), 0, "\(variant)")
            XCTAssertGreaterThanOrEqual(count(program, isGradient), 1, "\(variant)")
            try assertBitwiseEqual(first, try step(try arguments(0), variant), "\(variant), traced")
            for s in 1..<3 {
                let a = try arguments(s)
                try assertBitwiseEqual(try program.run(inputs: a), try step(a, variant), "\(variant), step \(s)")
            }
            let loaded = try Program(serialized: try program.serialized())
            let a = try arguments(5)
            try assertBitwiseEqual(try loaded.run(inputs: a), try step(a, variant), "\(variant), loaded")
        }
    }

    func testVersion2FilesStillLoadAndRun() throws {
        // A version 2 file is the same layout without vjp nodes.
        let (opaque, _) = try trace(.typedCall)
        var bytes = try opaque.serialized()
        XCTAssertEqual(bytes[8], 3)
        bytes[8] = 2
        let old = try Program(serialized: bytes)
        let a = try arguments(4, rowBias: true)
        try assertBitwiseEqual(try old.run(inputs: a), try step(a, .typedCall), "version 2")
        var lowered = try trace(.lowered).0.serialized()
        lowered[8] = 2
        XCTAssertThrowsError(try Program(serialized: lowered)) { XCTAssertTrue("\($0)".contains("node kind 7"), "\($0)") }
    }

    func testCreateGraphStaysOneGradientNode() throws {
        let x = try leaf(Tensor([0.5, -1, 2] as [Float]))
        func secondDerivative(_ x: Tensor) throws -> Tensor {
            Tape.push()
            Tape.push()
            let y = try op("sum", try op("multiply", try op("multiply", x, x), x))
            let g = try XCTUnwrap(try Tape.gradient(of: y, wrt: [x], createGraph: true)[0])
            let gg = try XCTUnwrap(try Tape.gradient(of: try op("sum", g), wrt: [x])[0])
            try Tape.pop()
            return gg
        }
        try Tracer.begin()
        try Tracer.declareInput(x)
        let program = try Tracer.end(outputs: [try secondDerivative(x)])
        XCTAssertEqual(count(program, isVJP), 0)
        XCTAssertEqual(count(program, isGradient), 2)
        let x2 = try leaf(Tensor([1, 3, -2] as [Float]))
        try assertBitwiseEqual(try program.run(inputs: [x2]), [try secondDerivative(x2)], "create_graph")
    }

    func testSeedsAndSecondGradientsOnOneTape() throws {
        // A given seed, and two gradients on one tape: only the second releases.
        func twice(_ x: Tensor, _ seed: Tensor) throws -> [Tensor] {
            Tape.push()
            let y = try op("multiply", try op("tanh", x), x)
            let g1 = try XCTUnwrap(try Tape.gradient(of: y, seed: seed, wrt: [x])[0])
            let g2 = try XCTUnwrap(try Tape.gradient(of: try op("sum", y), wrt: [x, y])[1])
            try Tape.pop()
            return [g1, g2]
        }
        let x = try leaf(Tensor([0.3, -0.7, 1.5] as [Float])), seed = try Tensor([1, 2, 3] as [Float])
        try Tracer.begin()
        try Tracer.declareInput(x)
        try Tracer.declareInput(seed)
        let program = try Tracer.end(outputs: try twice(x, seed))
        let steps = program.nodes.compactMap { if case .vjp(let s) = $0 { s } else { nil } }
        XCTAssertEqual(count(program, isGradient), 0)
        XCTAssertEqual(steps.filter(\.releases).count, 3, "sum, multiply and tanh, in the second gradient")
        XCTAssertEqual(steps.count, 5)
        for s in 0..<3 {
            let x2 = try leaf(Tensor(values(3, s))), seed2 = try Tensor(values(3, s + 9))
            try assertBitwiseEqual(try program.run(inputs: [x2, seed2]), try twice(x2, seed2), "step \(s)")
        }
    }

    func testLastVJPFreesTheActivationsItsOpHeld() throws {
        let (program, _) = try trace(.lowered)
        // `pre` (the first add's output) is read by the relu op alone; after that the relu's
        // TapeNode (its input) and the add's (its output, for the VJP) hold it, until their
        // vjps release them, before the tape's pop.
        func vjp(of v: Int) -> Int? {
            program.nodes.firstIndex { if case .vjp(let s) = $0 { s.op == v && s.releases } else { false } }
        }
        guard let reluAt = program.nodes.firstIndex(where: { if case .op(_, "relu", _, _, _) = $0 { true } else { false } }),
              case .op(_, _, _, let reluIns, let reluOuts) = program.nodes[reluAt],
              let reluVJP = vjp(of: reluOuts[0]), let addVJP = vjp(of: reluIns[0]),
              let popAt = program.nodes.firstIndex(where: { if case .tapePop = $0 { true } else { false } })
        else { return XCTFail("no relu, or its vjps do not release") }
        XCTAssertLessThan(reluVJP, addVJP)
        XCTAssertLessThan(addVJP, popAt)
        weak var pre: Tensor?
        var aliveBefore = false, aliveAfter = true
        _ = try program.run(inputs: try arguments(1)) { n, slots in
            if n == reluAt - 1 { pre = slots[reluIns[0]] }
            if n == reluAt { XCTAssertNil(slots[reluIns[0]], "the graph dropped it after its last read") }
            if n == reluVJP - 1 { aliveBefore = pre != nil }
            if n == addVJP { aliveAfter = pre != nil }
        }
        XCTAssertTrue(aliveBefore, "the TapeNodes held it")
        XCTAssertFalse(aliveAfter, "the vjps released it, before the tape's pop")
    }

    func testADivergentReplayIsAnError() throws {
        let (program, _) = try trace(.lowered)
        // The same program with one op's vjp expecting a TapeNode more than the op records.
        var nodes = program.nodes
        let at = try XCTUnwrap(nodes.firstIndex(where: isVJP))
        guard case .vjp(let original) = nodes[at] else { return }
        var step = original
        step.tapeNodes += 1
        nodes[at] = .vjp(step)
        let broken = try Program(valueCount: program.valueCount, inputs: program.inputs, outputs: program.outputs,
                                 constants: program.constants, nodes: nodes)
        XCTAssertThrowsError(try broken.run(inputs: try arguments(1))) { XCTAssertTrue("\($0)".contains("when traced"), "\($0)") }
        XCTAssertEqual(Tape.depth, 0, "the failed run popped its tape")
        // Malformed vjp nodes are rejected when the program is built.
        step = original
        step.targets = step.targets.map { _ in 99 }
        nodes[at] = .vjp(step)
        XCTAssertThrowsError(try Program(valueCount: program.valueCount, inputs: program.inputs, outputs: program.outputs,
                                         constants: program.constants, nodes: nodes))
    }
}
