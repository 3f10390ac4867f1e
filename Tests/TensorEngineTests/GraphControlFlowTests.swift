import XCTest
@testable import TensorEngine

/// Programs with control flow: a cond's and a loop's recording, replay (each branch, the
/// loop's iterations, gradients through them), scoping, liveness, dead code, the file
/// format and the JSON description.
final class GraphControlFlowTests: XCTestCase {
    override func tearDown() {
        Tracer.abort()
        while Tape.depth > 0 { try? Tape.pop() }
    }

    private func op(_ name: String, _ inputs: Tensor..., attrs: [String: AttrValue] = [:]) throws -> Tensor {
        try OpRegistry.call(name, inputs, Attrs(attrs))[0]
    }

    private func floats(_ t: Tensor) throws -> [Float] { try t.array(Float.self) }

    /// y = sum(p ? exp(x) : -x) * 2, traced with p as given.
    private func traceCond(_ p: Bool, _ x: Tensor) throws -> (Program, Tensor) {
        let sel = try Tensor([p])
        try Tracer.begin()
        try Tracer.declareInput(sel)
        try Tracer.declareInput(x)
        let (taken, recording) = try Tracer.beginCond(selector: sel, count: 2)
        XCTAssertEqual(taken, p ? 1 : 0)
        XCTAssertTrue(recording)
        let a = try op("negative", x)
        try Tracer.nextBranch()
        let b = try op("exp", x)
        let out = try XCTUnwrap(try Tracer.endCond(results: [[a], [b]]))
        XCTAssertEqual(try floats(out[0]), try floats(p ? b : a), "the cond's output is the taken branch's")
        let y = try op("multiply", try op("sum", out[0]), try Tensor(scalar: Float(2)))
        return (try Tracer.end(outputs: [y]), y)
    }

    private func expected(_ p: Bool, _ x: [Float]) -> Float {
        2 * x.map { p ? Float(Foundation.exp(Double($0))) : -$0 }.reduce(0, +)
    }

    func testCondRunsTheBranchTheSelectorTakes() throws {
        let x = try Tensor([0.5, -1, 2] as [Float])
        for traced in [false, true] {
            let (raw, y) = try traceCond(traced, x)
            XCTAssertEqual(try floats(y)[0], expected(traced, [0.5, -1, 2]), accuracy: 1e-5, "the traced call")
            let program = try raw.eliminatingDeadCode()
            guard case .cond(_, let branches, _) = try XCTUnwrap(program.nodes.first) else { return XCTFail("no cond") }
            XCTAssertEqual(branches.count, 2)
            for p in [false, true] {
                let x2 = try Tensor([1, 2, -3] as [Float])
                let out = try program.run(inputs: [try Tensor([p]), x2])
                XCTAssertEqual(try floats(out[0])[0], expected(p, [1, 2, -3]), accuracy: 1e-4, "traced \(traced), run \(p)")
            }
        }
    }

    func testSwitchClampsItsIndex() throws {
        let x = try Tensor([3] as [Float])
        let sel = try Tensor([Int32(1)])
        try Tracer.begin()
        try Tracer.declareInput(sel)
        try Tracer.declareInput(x)
        _ = try Tracer.beginCond(selector: sel, count: 3)
        let r0 = try op("negative", x)
        try Tracer.nextBranch()
        let r1 = try op("square", x)
        try Tracer.nextBranch()
        let r2 = try op("sqrt", x)
        let out = try XCTUnwrap(try Tracer.endCond(results: [[r0], [r1], [r2]]))
        let program = try Tracer.end(outputs: out)
        for (i, want) in [(-5, -3), (0, -3), (1, 9), (2, Float(3).squareRoot()), (9, Float(3).squareRoot())] as [(Int32, Float)] {
            XCTAssertEqual(try floats(try program.run(inputs: [try Tensor([i]), x])[0])[0], want, accuracy: 1e-6, "index \(i)")
        }
        try Tracer.begin()
        XCTAssertThrowsError(try Tracer.beginCond(selector: try Tensor([Float(1)]), count: 2)) { e in
            XCTAssertTrue("\(e)".contains("selector"), "\(e)")
        }
        XCTAssertThrowsError(try Tracer.beginCond(selector: try Tensor([true, false]), count: 2))
    }

    func testGradientsFlowThroughACondAtReplay() throws {
        let x = try Tensor([1, 2] as [Float])
        x.requiresGrad = true
        let sel = try Tensor([true])
        try Tracer.begin()
        try Tracer.declareInput(sel)
        try Tracer.declareInput(x)
        Tape.push()
        _ = try Tracer.beginCond(selector: sel, count: 2)
        let a = try op("multiply", x, try Tensor([3, 3] as [Float]))
        try Tracer.nextBranch()
        let b = try op("square", x)
        let out = try XCTUnwrap(try Tracer.endCond(results: [[a], [b]]))
        let loss = try op("sum", out[0])
        let g = try XCTUnwrap(try Tape.gradient(of: loss, wrt: [x])[0])
        try Tape.pop()
        XCTAssertEqual(try floats(g), [2, 4], "d sum(x^2) / dx while tracing")
        let program = try Tracer.end(outputs: [g]).eliminatingDeadCode()
        XCTAssertEqual(try floats(try program.run(inputs: [try Tensor([true]), x])[0]), [2, 4])
        XCTAssertEqual(try floats(try program.run(inputs: [try Tensor([false]), x])[0]), [3, 3])
    }

    /// (i, acc) -> (i + 1, acc * 2) while i < n, at most `limit` times.
    private func traceLoop(n: Int32, limit: Int?) throws -> (Program, [Tensor]) {
        let nT = try Tensor([n]), acc = try Tensor([1, -2] as [Float]), i0 = try Tensor([Int32(0)])
        try Tracer.begin()
        try Tracer.declareInput(nT)
        try Tracer.declareInput(acc)
        let params = try XCTUnwrap(try Tracer.beginWhile(initial: [i0, acc]))
        let holds = try Tracer.whileBody(pred: try op("less", params[0], nT))
        XCTAssertEqual(holds, n > 0)
        let next = [try op("add", params[0], try Tensor([Int32(1)])), try op("multiply", params[1], try Tensor([2] as [Float]))]
        let out = try XCTUnwrap(try Tracer.endWhile(results: next, maxIterations: limit))
        return (try Tracer.end(outputs: out), out)
    }

    func testWhileLoopRunsItsIterationsWhileTracingAndAtReplay() throws {
        let (program, first) = try traceLoop(n: 3, limit: nil)
        XCTAssertEqual(try first[0].array(Int32.self), [3], "the engine ran iterations 2 and 3 while tracing")
        XCTAssertEqual(try floats(first[1]), [8, -16])
        for n: Int32 in [0, 1, 5] {
            let out = try program.run(inputs: [try Tensor([n]), try Tensor([1, 1] as [Float])])
            XCTAssertEqual(try out[0].array(Int32.self), [n])
            XCTAssertEqual(try floats(out[1]), [Float(1 << n), Float(1 << n)])
        }
        let (limited, firstLimited) = try traceLoop(n: 0, limit: 2)
        XCTAssertEqual(try firstLimited[0].array(Int32.self), [0], "the condition did not hold: the initial state")
        let out = try limited.run(inputs: [try Tensor([Int32(10)]), try Tensor([1, 1] as [Float])])
        XCTAssertEqual(try out[0].array(Int32.self), [2], "maxIterations")
    }

    func testABranchValueUsedOutsideFailsTheTrace() throws {
        let x = try Tensor([1] as [Float]), sel = try Tensor([true])
        try Tracer.begin()
        try Tracer.declareInput(x)
        _ = try Tracer.beginCond(selector: sel, count: 2)
        let inside = try op("exp", x)
        try Tracer.nextBranch()
        _ = try XCTUnwrap(try Tracer.endCond(results: [[inside], [x]]))
        _ = try op("negative", inside)  // leaked out of branch 0
        XCTAssertThrowsError(try Tracer.end(outputs: [x])) { e in
            XCTAssertTrue("\(e)".contains("used outside it"), "\(e)")
        }
    }

    func testAnOpReturningItsInputInsideABranchKeepsItsOuterName() throws {
        let x = try Tensor([1, 2] as [Float]), sel = try Tensor([true])
        try Tracer.begin()
        try Tracer.declareInput(sel)
        try Tracer.declareInput(x)
        _ = try Tracer.beginCond(selector: sel, count: 2)
        let same = try op("cast", x, attrs: ["dtype": .string("float32")])
        XCTAssertTrue(same === x, "a cast to the same dtype hands back its input")
        let a = try op("negative", same)
        try Tracer.nextBranch()
        let out = try XCTUnwrap(try Tracer.endCond(results: [[a], [x]]))
        let y = try op("add", out[0], x)  // x after the cond: its outer name, not the branch's
        let program = try Tracer.end(outputs: [y])
        XCTAssertEqual(try floats(try program.run(inputs: [try Tensor([true]), x])[0]), [2, 4])
        XCTAssertEqual(try floats(try program.run(inputs: [try Tensor([false]), x])[0]), [0, 0])
    }

    func testBranchesOfOtherSpecsFailTheTrace() throws {
        let x = try Tensor([1, 2] as [Float]), sel = try Tensor([false])
        try Tracer.begin()
        try Tracer.declareInput(x)
        _ = try Tracer.beginCond(selector: sel, count: 2)
        let a = try op("negative", x)
        try Tracer.nextBranch()
        let b = try op("sum", x)
        XCTAssertNil(try Tracer.endCond(results: [[a], [b]]), "not recorded: use the taken branch's results")
        XCTAssertThrowsError(try Tracer.end(outputs: [a])) { XCTAssertTrue("\($0)".contains("different"), "\($0)") }
    }

    func testValidationChecksScopesAndArity() throws {
        let spec = TensorSpec(dtype: .float32, shape: [1])
        let neg = try XCTUnwrap(OpRegistry.lookup("negative"))
        let inputs = [Program.Input(value: 0, spec: TensorSpec(dtype: .bool, shape: [1]), requiresGrad: false),
                      Program.Input(value: 1, spec: spec, requiresGrad: false)]
        func branch(_ def: Int) -> GraphBlock {
            GraphBlock(nodes: [.op(index: neg, name: "negative", attrs: Attrs(), inputs: [1], outputs: [def])], results: [def])
        }
        let good: [GraphNode] = [.cond(selector: 0, branches: [branch(2), branch(3)], outputs: [4])]
        XCTAssertNoThrow(try Program(valueCount: 5, inputs: inputs, outputs: [.init(value: 4, spec: spec)], constants: [], nodes: good))
        // Reading value 2 (branch 0's) after the cond.
        let leak = good + [.op(index: neg, name: "negative", attrs: Attrs(), inputs: [2], outputs: [5])]
        XCTAssertThrowsError(try Program(valueCount: 6, inputs: inputs, outputs: [.init(value: 5, spec: spec)], constants: [],
                                         nodes: leak)) { XCTAssertTrue("\($0)".contains("outside the block"), "\($0)") }
        // Branch 1 reading branch 0's value.
        let across: [GraphNode] = [.cond(selector: 0, branches: [branch(2), GraphBlock(nodes: [], results: [2])], outputs: [4])]
        XCTAssertThrowsError(try Program(valueCount: 5, inputs: inputs, outputs: [.init(value: 4, spec: spec)], constants: [],
                                         nodes: across))
        let arity: [GraphNode] = [.cond(selector: 0, branches: [branch(2), GraphBlock(nodes: [], results: [])], outputs: [4])]
        XCTAssertThrowsError(try Program(valueCount: 5, inputs: inputs, outputs: [.init(value: 4, spec: spec)], constants: [],
                                         nodes: arity))
        let unbalanced: [GraphNode] = [.cond(selector: 0, branches: [GraphBlock(nodes: [.tapePush], results: [1])], outputs: [4])]
        XCTAssertThrowsError(try Program(valueCount: 5, inputs: inputs, outputs: [.init(value: 4, spec: spec)], constants: [],
                                         nodes: unbalanced))
    }

    func testLivenessInsideABranch() throws {
        let x = try Tensor((0..<64).map { Float($0) }, shape: [64]), sel = try Tensor([true])
        try Tracer.begin()
        try Tracer.declareInput(sel)
        try Tracer.declareInput(x)
        _ = try Tracer.beginCond(selector: sel, count: 2)
        let a = try op("negative", x)
        try Tracer.nextBranch()
        let b = try op("exp", try op("negative", x))  // an intermediate dropped inside the branch
        let c = try op("sqrt", b)
        let out = try XCTUnwrap(try Tracer.endCond(results: [[a], [c]]))
        let y = try op("sum", out[0])
        let program = try Tracer.end(outputs: [y]).eliminatingDeadCode()
        var afterCond: [Bool] = []
        _ = try program.run(inputs: [sel, x]) { n, slots in
            if n == 0 { afterCond = slots.map { $0 != nil } }
        }
        // Alive after the cond: its output alone (the inputs' last use was the cond).
        guard case .cond(_, _, let outs) = program.nodes[0] else { return XCTFail("no cond") }
        XCTAssertEqual(afterCond.indices.filter { afterCond[$0] }, outs)
    }

    func testDeadCodeInsideAndAroundControlFlow() throws {
        let x = try Tensor([1, 2] as [Float]), sel = try Tensor([true])
        try Tracer.begin()
        try Tracer.declareInput(sel)
        try Tracer.declareInput(x)
        _ = try Tracer.beginCond(selector: sel, count: 2)
        let a0 = try op("negative", x), a1 = try op("exp", x)
        _ = try op("sin", x)  // dead inside the branch
        try Tracer.nextBranch()
        let b0 = try op("square", x), b1 = try op("cos", x)
        let out = try XCTUnwrap(try Tracer.endCond(results: [[a0, a1], [b0, b1]]))
        // A second cond nothing reads.
        _ = try Tracer.beginCond(selector: sel, count: 1)
        let unused = try op("tanh", x)
        _ = try Tracer.endCond(results: [[unused]])
        let program = try Tracer.end(outputs: [out[0]]).eliminatingDeadCode()
        XCTAssertEqual(program.nodes.count, 1)
        guard case .cond(_, let branches, let outs) = program.nodes[0] else { return XCTFail("no cond") }
        XCTAssertEqual(outs.count, 1, "the unread output went")
        XCTAssertEqual(branches.map { $0.nodes.count }, [1, 1])
        XCTAssertEqual(try floats(try program.run(inputs: [sel, x])[0]), [1, 4])
        XCTAssertEqual(try floats(try program.run(inputs: [try Tensor([false]), x])[0]), [-1, -2])
    }

    func testControlFlowSurvivesSaveLoadAndIsDescribed() throws {
        let (loop, _) = try traceLoop(n: 2, limit: 7)
        let (cond, _) = try traceCond(true, try Tensor([1, 2] as [Float]))
        for program in [try loop.eliminatingDeadCode(), try cond.eliminatingDeadCode()] {
            let bytes = try program.serialized()
            XCTAssertEqual(bytes[8], 3, "version 3")
            let loaded = try Program(serialized: bytes)
            XCTAssertEqual(try loaded.serialized(), bytes)
            for n in stride(from: 0, to: bytes.count, by: 1) {
                XCTAssertThrowsError(try Program(serialized: Array(bytes[..<n])), "a file cut at \(n) bytes")
            }
            for i in 0..<bytes.count {
                var b = bytes
                b[i] ^= 0x5A
                _ = try? Program(serialized: b)
            }
            var v1 = bytes
            v1[8] = 1
            XCTAssertThrowsError(try Program(serialized: v1), "a version 1 file holds no control flow")
        }
        let inputs = [try Tensor([Int32(4)]), try Tensor([1, 3] as [Float])]
        let loaded = try Program(serialized: try loop.serialized())
        XCTAssertEqual(try floats(try loaded.run(inputs: inputs)[1]), try floats(try loop.run(inputs: inputs)[1]))
        XCTAssertEqual(try floats(try loaded.run(inputs: inputs)[1]), [16, 48])
        let json = loop.describedAsJSON()
        XCTAssertTrue(json.contains("\"kind\":\"while\""), json)
        XCTAssertTrue(json.contains("\"max_iterations\":7"), json)
        XCTAssertTrue(cond.describedAsJSON().contains("\"kind\":\"cond\",\"selector\":0,\"branches\":[{\"nodes\":"))
    }
}
