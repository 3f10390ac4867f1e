import XCTest
import Foundation
@testable import TensorEngine

/// Elementwise fusion (FusedElementwise.swift) and the pass that forms it: the blocked
/// evaluation gives the bits of the ops one by one, anything else runs as those ops.
final class FusedElementwiseTests: XCTestCase {
    override func tearDown() {
        Tracer.abort()
        while Tape.depth > 0 { try? Tape.pop() }
    }

    private func op(_ name: String, _ inputs: [Tensor], _ attrs: [String: AttrValue] = [:]) throws -> Tensor {
        try OpRegistry.call(name, inputs, Attrs(attrs))[0]
    }

    /// A chain: each step an op name and its operands (`.input(i)` or `.step(j)`).
    enum Ref { case input(Int), step(Int) }
    typealias Chain = [(String, [Ref])]

    private func attrs(_ chain: Chain, inputs: Int, results: [Int]) -> Attrs {
        var a = Attrs()
        a.set("ops", .string(chain.map(\.0).joined(separator: ",")))
        a.set("operands", .ints(chain.flatMap { step -> [Int] in
            let refs = step.1.map { r -> Int in
                switch r {
                case .input(let i): return i
                case .step(let j): return inputs + j
                }
            }
            return refs.count == 1 ? refs + [-1] : refs
        }))
        a.set("results", .ints(results))
        return a
    }

    /// The chain's results run as the ops one by one.
    private func byOps(_ chain: Chain, _ inputs: [Tensor], results: [Int]) throws -> [Tensor] {
        var steps: [Tensor] = []
        for (name, refs) in chain {
            steps.append(try op(name, refs.map { r in
                switch r {
                case .input(let i): return inputs[i]
                case .step(let j): return steps[j]
                }
            }))
        }
        return results.map { steps[$0] }
    }

    private func bits(_ t: Tensor) throws -> [UInt64] {
        switch t.dtype {
        case .float32: return try t.array(Float.self).map { UInt64($0.bitPattern) }
        case .float64: return try t.array(Double.self).map(\.bitPattern)
        default: return try cast(t, to: .float64).array(Double.self).map(\.bitPattern)
        }
    }

    /// Runs the chain fused and by ops; checks the same shapes, dtypes and bits, and whether
    /// the blocked path took it (`blocked`).
    private func check(_ chain: Chain, _ inputs: [Tensor], results: [Int], blocked: Bool, _ what: String,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let a = attrs(chain, inputs: inputs.count, results: results)
        let fused = try OpRegistry.call("fused_elementwise", inputs, a)
        let want = try byOps(chain, inputs, results: results)
        XCTAssertEqual(fused.count, want.count, what, file: file, line: line)
        for (f, w) in zip(fused, want) {
            XCTAssertEqual(f.shape, w.shape, what, file: file, line: line)
            XCTAssertEqual(f.dtype, w.dtype, what, file: file, line: line)
            XCTAssertEqual(try bits(f), try bits(w), what, file: file, line: line)
        }
        let (program, res) = try ElementwiseFusion.instructions(a, inputCount: inputs.count)
        XCTAssertEqual(try fusedByBlocks(inputs, program, res) != nil, blocked, "blocked path: \(what)", file: file, line: line)
    }

    /// n values of `dtype` cycling through NaN, infinities, signed zeros, tiny, huge and
    /// ordinary values (`seed` shifts the ordinary ones).
    private func values(_ n: Int, _ dtype: DType, seed: Int, shape: [Int]? = nil) throws -> Tensor {
        let special: [Double] = [.nan, .infinity, -.infinity, -0.0, 0, 1, -1, 0.5, 2, 1e-30, 1e30, 88.8, -104, 3]
        let v = (0..<n).map { i -> Double in
            i % 3 == 0 ? special[(i / 3 + seed) % special.count] : sin(Double(i * 7 + seed * 13) * 0.37) * 3
        }
        let t = try Tensor(v, shape: shape ?? [n])
        return dtype == .float64 ? t : try cast(t, to: dtype)
    }

    func testEveryFusableOpFusedEqualsTheOpsBitForBit() throws {
        let unary = ElementwiseFusion.unaryOps.keys.sorted(), binary = ElementwiseFusion.binaryOps.keys.sorted()
        // Below one block, several blocks, and (for a few ops) past the threading grain (a
        // chain with a costlier op such as exp or divide takes threads from 2^16 elements).
        for n in [0, 5, 3 * ElementwiseFusion.blockSize + 17, 70_001] {
            let unary = n > 40_000 ? ["exp", "tanh", "sqrt", "sigmoid"] : unary
            for dtype in [DType.float32, .float64] {
                let x = try values(n, dtype, seed: 0), y = try values(n, dtype, seed: 5)
                let s = try values(1, dtype, seed: 7, shape: []), t = try values(1, dtype, seed: 8, shape: [1])
                let ins = [x, y, s, t]
                for u in unary {
                    // A scalar in the second position, an intermediate never materialised.
                    try check([("multiply", [.input(0), .input(2)]), (u, [.step(0)]), ("add", [.step(1), .input(1)])],
                              ins, results: [2], blocked: true, "\(u) \(dtype) n=\(n)")
                    // One-element sub-expressions, computed once; an output that is also read.
                    try check([(u, [.input(3)]), ("subtract", [.input(0), .step(0)]), (u, [.step(1)]),
                               ("maximum", [.step(2), .input(2)])],
                              ins, results: [3, 1], blocked: true, "\(u) of scalars \(dtype) n=\(n)")
                }
                for b in binary {
                    try check([(b, [.input(0), .input(1)]), (b, [.input(2), .step(0)]), (b, [.step(1), .input(3)]),
                               ("negative", [.step(2)])],
                              ins, results: [3, 0], blocked: true, "\(b) \(dtype) n=\(n)")
                    // The same value as both operands.
                    try check([(b, [.input(0), .input(0)]), ("abs", [.step(0)])], ins, results: [1], blocked: true,
                              "\(b)(x, x) \(dtype) n=\(n)")
                }
            }
        }
        // A chain of cheap ops takes threads only past the streaming grain (2^19 elements on 2).
        let big = try values(600_001, .float32, seed: 3), big2 = try values(600_001, .float32, seed: 4)
        try check([("multiply", [.input(0), .input(2)]), ("subtract", [.step(0), .input(1)]), ("maximum", [.step(1), .input(0)])],
                  [big, big2, try values(1, .float32, seed: 5, shape: [])], results: [2], blocked: true, "streaming chain")
        // Positive operands, so pow, log and sqrt take their main paths rather than NaN.
        let pos = try op("add", [try op("abs", [try values(5000, .float32, seed: 2)]), try Tensor([Float(0.25)], shape: [])])
        let e = try Tensor([Float(1.7)], shape: [])
        try check([("power", [.input(0), .input(1)]), ("log", [.step(0)]), ("sqrt", [.input(0)]),
                   ("power", [.step(2), .step(0)]), ("rsqrt", [.step(3)])],
                  [pos, e], results: [4, 1], blocked: true, "power on positives")
        // Shapes that differ but hold the same elements in the same order.
        let r = try values(12, .float32, seed: 1, shape: [3, 4]), r1 = try values(12, .float32, seed: 2, shape: [1, 3, 4])
        try check([("add", [.input(0), .input(1)]), ("tanh", [.step(0)])], [r, r1], results: [1], blocked: true,
                  "[3, 4] + [1, 3, 4]")
    }

    func testOtherCasesRunAsTheOps() throws {
        let chain: Chain = [("multiply", [.input(0), .input(1)]), ("exp", [.step(0)]), ("add", [.step(1), .input(0)])]
        let x = try values(20, .float32, seed: 0, shape: [4, 5])
        // A row broadcast.
        try check(chain, [x, try values(5, .float32, seed: 1, shape: [5])], results: [2, 0], blocked: false, "row")
        try check(chain, [x, try values(4, .float32, seed: 1, shape: [4, 1])], results: [2], blocked: false, "column")
        // Integer dtypes (exp widens to float32, then add promotes).
        let i = try cast(try values(20, .float64, seed: 3, shape: [4, 5]), to: .int32)
        try check(chain, [i, i], results: [2, 0], blocked: false, "int32")
        // Mixed float dtypes promote.
        try check(chain, [x, try values(20, .float64, seed: 1, shape: [4, 5])], results: [2], blocked: false, "mixed")
        // Shapes that do not broadcast raise as the op does.
        XCTAssertThrowsError(try OpRegistry.call("fused_elementwise", [x, try values(3, .float32, seed: 1)],
                                                 attrs(chain, inputs: 2, results: [2])))
        // Malformed attributes raise.
        for bad: [String: AttrValue] in [
            ["ops": .string("exp,nonsense"), "operands": .ints([0, -1, 1, -1]), "results": .ints([1])],
            ["ops": .string("exp"), "operands": .ints([5, -1]), "results": .ints([0])],
            ["ops": .string("exp"), "operands": .ints([0, 0]), "results": .ints([0])],
            ["ops": .string("add"), "operands": .ints([0, 1]), "results": .ints([0])],
            ["ops": .string("exp"), "operands": .ints([0, -1]), "results": .ints([])],
            ["ops": .string("exp"), "operands": .ints([0, -1, 0]), "results": .ints([0])],
        ] {
            XCTAssertThrowsError(try OpRegistry.call("fused_elementwise", [x], Attrs(bad)), "\(bad)")
        }
    }

    func testUnderATapeTheGradientsAreThoseOfTheOps() throws {
        let chain: Chain = [("square", [.input(0)]), ("multiply", [.step(0), .input(1)]), ("sqrt", [.step(1)]),
                            ("add", [.step(2), .input(0)]), ("sigmoid", [.step(3)])]
        func gradients(fused: Bool) throws -> ([UInt64], [[UInt64]]) {
            let x = try values(3000, .float32, seed: 0), w = try values(3000, .float32, seed: 4)
            x.requiresGrad = true
            w.requiresGrad = true
            Tape.push()
            defer { try? Tape.pop() }
            let outs = fused ? try OpRegistry.call("fused_elementwise", [x, w], attrs(chain, inputs: 2, results: [4, 1]))
                : try byOps(chain, [x, w], results: [4, 1])
            if fused {
                let (program, res) = try ElementwiseFusion.instructions(attrs(chain, inputs: 2, results: [4, 1]), inputCount: 2)
                XCTAssertNil(try fusedByBlocks([x, w], program, res))
            }
            let loss = try op("add", [try op("sum", [outs[0]]), try op("sum", [try op("multiply", [outs[1], outs[1]])])])
            let grads = try Tape.gradient(of: loss, wrt: [x, w])
            return (try bits(loss), try grads.map { try bits(try XCTUnwrap($0)) })
        }
        let (fusedLoss, fusedGrads) = try gradients(fused: true)
        let (opsLoss, opsGrads) = try gradients(fused: false)
        XCTAssertEqual(fusedLoss, opsLoss)
        XCTAssertEqual(fusedGrads, opsGrads)
    }

    // MARK: - The pass

    private func opNames(_ p: Program) -> [String] {
        p.nodes.compactMap { if case .op(_, let name, _, _, _) = $0 { name } else { nil } }
    }

    private func fusedNodes(_ p: Program) -> [(ops: String, inputs: [Int], outputs: [Int])] {
        p.nodes.compactMap {
            if case .op(_, "fused_elementwise", let a, let ins, let outs) = $0 {
                return ((try? a.string("ops")) ?? "", ins, outs)
            }
            return nil
        }
    }

    /// Runs both programs; the same bits for every output.
    private func assertSameRuns(_ p: Program, _ q: Program, _ inputs: [Tensor], file: StaticString = #filePath,
                                line: UInt = #line) throws {
        let a = try p.run(inputs: inputs), b = try q.run(inputs: inputs)
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) { XCTAssertEqual(try bits(x), try bits(y), file: file, line: line) }
    }

    func testThePassFusesRunsAndMaterialisesWhatIsReadOutside() throws {
        let x = try values(5000, .float32, seed: 0), y = try values(5000, .float32, seed: 1)
        try Tracer.begin()
        for t in [x, y] { try Tracer.declareInput(t) }
        // Two chains interleaved in one run: two parts.
        let a1 = try op("multiply", [x, y])
        let b1 = try op("exp", [y])
        let a2 = try op("add", [a1, x])
        let b2 = try op("negative", [b1])
        let a3 = try op("tanh", [a2])       // an output of the program
        let a4 = try op("square", [a3])
        let b3 = try op("sqrt", [b2])       // read after the run
        let s = try op("sum", [b3])         // ends the run
        let c1 = try op("abs", [b3])
        let c2 = try op("relu", [c1])
        let program = try Tracer.end(outputs: [a3, a4, s, c2])
        let fused = try program.optimized()
        XCTAssertEqual(opNames(fused), ["fused_elementwise", "fused_elementwise", "sum", "fused_elementwise"])
        let parts = fusedNodes(fused)
        XCTAssertEqual(parts.map(\.ops), ["multiply,add,tanh,square", "exp,negative,sqrt", "abs,relu"])
        // a3 (an output) and a4; b3 alone (read by sum and abs); c2 alone.
        XCTAssertEqual(parts.map(\.outputs.count), [2, 1, 1])
        try assertSameRuns(program, fused, [x, y])
    }

    func testThePassDoesNotFuseAcrossStretches() throws {
        let x = try values(300, .float32, seed: 0)
        try Tracer.begin()
        try Tracer.declareInput(x)
        let a = try op("exp", [x])
        let b = try op("negative", [a])
        Tape.push()
        let c = try op("square", [b])
        let d = try op("log", [c])
        try Tape.pop()
        let program = try Tracer.end(outputs: [d])
        let fused = try program.optimized()
        XCTAssertEqual(fusedNodes(fused).map(\.ops), ["exp,negative", "square,log"])
        // The value crossing the tape push is an output of the first part.
        XCTAssertEqual(fusedNodes(fused).map(\.outputs.count), [1, 1])
        try assertSameRuns(program, fused, [x])
    }

    func testPinnedValuesAreMaterialised() throws {
        // A gradient source in the middle of a chain keeps its own value.
        let x = try values(300, .float32, seed: 0)
        try Tracer.begin()
        try Tracer.declareInput(x)
        let a = try op("multiply", [x, x])
        let b = try op("exp", [a])
        let c = try op("sin", [b])
        b.requiresGrad = true
        Tape.push()
        let d = try op("square", [b])
        let e = try op("add", [d, c])
        let l = try op("sum", [e])
        let g = try Tape.gradient(of: l, wrt: [b])
        try Tape.pop()
        let program = try Tracer.end(outputs: [l, try XCTUnwrap(g[0])])
        let fused = try program.optimized()
        let parts = fusedNodes(fused)
        XCTAssertEqual(parts.first?.ops, "multiply,exp,sin")
        XCTAssertEqual(parts.first?.outputs.count, 2)
        try assertSameRuns(program, fused, [x])
    }

    func testAProgramWithAFusedNodeSavesAndLoads() throws {
        let x = try values(5000, .float64, seed: 0), y = try values(5000, .float64, seed: 1)
        try Tracer.begin()
        for t in [x, y] { try Tracer.declareInput(t) }
        let r = try op("divide", [try op("add", [try op("square", [x]), y]), try op("maximum", [x, y])])
        let program = try Tracer.end(outputs: [r]).optimized()
        XCTAssertEqual(opNames(program), ["fused_elementwise"])
        let path = NSTemporaryDirectory() + "fused-\(getpid()).graph"
        defer { unlink(path) }
        try program.save(to: path)
        let loaded = try Program.load(from: path)
        XCTAssertEqual(opNames(loaded), ["fused_elementwise"])
        try assertSameRuns(program, loaded, [x, y])
    }
}
