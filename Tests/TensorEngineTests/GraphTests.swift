import XCTest
import Foundation
@testable import TensorEngine

/// Programs: tracing a step through the registry and the tape, replaying it, dead code,
/// liveness and the file format.
final class GraphTests: XCTestCase {
    override func tearDown() {
        Tracer.abort()
        while Tape.depth > 0 { try? Tape.pop() }
    }

    private func op(_ name: String, _ inputs: Tensor..., attrs: [String: AttrValue] = [:]) throws -> Tensor {
        let r = try OpRegistry.call(name, inputs, Attrs(attrs))
        XCTAssertEqual(r.count, 1)
        return r[0]
    }

    private func leaf(_ t: Tensor) throws -> Tensor {
        // As the Keras backend makes a variable's value: a fresh handle flagged as a leaf.
        let l = try op("stop_gradient", t)
        l.requiresGrad = true
        return l
    }

    /// Deterministic, varied values (no RNG state shared with other tests).
    private func values(_ n: Int, _ seed: Int) -> [Float] {
        (0..<n).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) }
    }

    /// One SGD step of a 4-8-3 MLP with a mean-squared-error loss, every op through the
    /// registry as the Keras backend calls it. Returns [loss, w1, b1, w2, b2].
    private func sgdStep(_ x: Tensor, _ y: Tensor, _ weights: [Tensor], lr: Tensor) throws -> [Tensor] {
        Tape.push()
        let h = try op("relu", try op("add", try op("matmul", x, weights[0]), weights[1]))
        let p = try op("add", try op("matmul", h, weights[2]), weights[3])
        let d = try op("subtract", p, y)
        let loss = try op("mean", try op("multiply", d, d), attrs: ["axes": .ints([0, 1])])
        let grads = try Tape.gradient(of: loss, wrt: weights)
        try Tape.pop()
        var out = [loss]
        for (w, g) in zip(weights, grads) {
            let g = try XCTUnwrap(g)
            out.append(try leaf(try op("subtract", w, try op("multiply", g, lr))))
        }
        return out
    }

    private func initialWeights() throws -> [Tensor] {
        try [
            leaf(Tensor(values(32, 1), shape: [4, 8])), leaf(Tensor(values(8, 2), shape: [8])),
            leaf(Tensor(values(24, 3), shape: [8, 3])), leaf(Tensor(values(3, 4), shape: [3])),
        ]
    }

    private func batch(_ step: Int) throws -> (Tensor, Tensor) {
        (try Tensor(values(20, 100 + step), shape: [5, 4]), try Tensor(values(15, 200 + step), shape: [5, 3]))
    }

    /// Traces step 0 and returns the program, the traced step's outputs and the learning rate.
    private func traceStep() throws -> (Program, [Tensor]) {
        let w = try initialWeights()
        let (x, y) = try batch(0)
        let lr = try Tensor(scalar: Float(0.1))
        try Tracer.begin()
        for t in [x, y] + w { try Tracer.declareInput(t) }
        let out = try sgdStep(x, y, w, lr: lr)
        return (try Tracer.end(outputs: out), out)
    }

    func testReplayedStepsEqualEagerSteps() throws {
        let steps = 6
        var eager = try initialWeights()
        var losses: [Float] = []
        let lr = try Tensor(scalar: Float(0.1))
        for s in 0..<steps {
            let (x, y) = try batch(s)
            let out = try sgdStep(x, y, eager, lr: lr)
            losses.append(try out[0].array(Float.self)[0])
            eager = Array(out[1...])
        }
        XCTAssertLessThan(losses.last!, losses.first!, "the eager steps train")

        let (traced, first) = try traceStep()
        let program = try traced.eliminatingDeadCode()
        XCTAssertEqual(program.inputs.count, 6)
        XCTAssertEqual(program.outputs.count, 5)
        XCTAssertEqual(try first[0].array(Float.self)[0], losses[0], "the traced call is the first step")
        var weights = Array(first[1...])
        for s in 1..<steps {
            let (x, y) = try batch(s)
            let out = try program.run(inputs: [x, y] + weights)
            XCTAssertEqual(try out[0].array(Float.self)[0], losses[s], accuracy: 1e-6)
            weights = Array(out[1...])
            XCTAssertTrue(weights.allSatisfy(\.requiresGrad), "the new values are leaves, as traced")
        }
        for (r, e) in zip(weights, eager) {
            XCTAssertEqual(r.shape, e.shape)
            for (a, b) in zip(try r.array(Float.self), try e.array(Float.self)) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        }
        XCTAssertEqual(Tape.depth, 0)
    }

    func testReplayChecksItsInputs() throws {
        let (program, _) = try traceStep()
        let w = try initialWeights()
        let (x, y) = try batch(1)
        XCTAssertThrowsError(try program.run(inputs: [x, y] + w.dropLast()))
        let wide = try Tensor(values(24, 9), shape: [6, 4])
        XCTAssertThrowsError(try program.run(inputs: [wide, y] + w)) { e in
            XCTAssertTrue("\(e)".contains("as traced"), "\(e)")
        }
        XCTAssertThrowsError(try program.run(inputs: [try op("cast", x, attrs: ["dtype": .string("float64")]), y] + w))
        // A weight handed in without requiresGrad still gets the traced flag (on an alias).
        let plain = try Tensor(values(32, 1), shape: [4, 8])
        let out = try program.run(inputs: [x, y, plain] + w.dropFirst())
        XCTAssertFalse(plain.requiresGrad)
        XCTAssertEqual(out.count, 5)
    }

    func testSaveLoadRunGivesTheSameOutputs() throws {
        let (program, first) = try traceStep()
        let bytes = try program.serialized()
        let loaded = try Program(serialized: bytes)
        XCTAssertEqual(try loaded.serialized(), bytes, "a loaded program writes the same file")
        XCTAssertEqual(loaded.nodes.count, program.nodes.count)
        let (x, y) = try batch(3)
        let ws = Array(first[1...])
        let a = try program.run(inputs: [x, y] + ws), b = try loaded.run(inputs: [x, y] + ws)
        for (p, q) in zip(a, b) { XCTAssertEqual(try p.array(Float.self), try q.array(Float.self)) }

        let path = "/tmp/graph-tests-\(getpid()).teg"
        defer { unlink(path) }
        try program.save(to: path)
        let fromFile = try Program.load(from: path)
        let c = try fromFile.run(inputs: [x, y] + ws)
        for (p, q) in zip(a, c) { XCTAssertEqual(try p.array(Float.self), try q.array(Float.self)) }
        XCTAssertThrowsError(try Program.load(from: "/nonexistent/dir/x.teg"))
        XCTAssertThrowsError(try Program.load(from: "/tmp"))
    }

    func testMalformedFilesAreErrors() throws {
        let (program, _) = try traceStep()
        let bytes = try program.serialized()
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try Program(serialized: Array(bytes[..<n])), "a file cut at \(n) bytes")
        }
        XCTAssertThrowsError(try Program(serialized: bytes + [0]))
        var badMagic = bytes
        badMagic[0] = UInt8(ascii: "X")
        XCTAssertThrowsError(try Program(serialized: badMagic)) { XCTAssertTrue("\($0)".contains("magic")) }
        var future = bytes
        future[8] = 4
        XCTAssertThrowsError(try Program(serialized: future)) { XCTAssertTrue("\($0)".contains("version 4")) }
        // The same file naming an op this engine does not have.
        let name = Array("matmul".utf8)
        let at = try XCTUnwrap((0...(bytes.count - name.count)).first { Array(bytes[$0..<($0 + name.count)]) == name })
        var unknown = bytes
        unknown[at + 5] = UInt8(ascii: "x")
        XCTAssertThrowsError(try Program(serialized: unknown)) { XCTAssertTrue("\($0)".contains("unknown op 'matmux'"), "\($0)") }
        // Every single-byte corruption is an error or a valid program, never a crash.
        for i in stride(from: 0, to: bytes.count, by: 3) {
            var b = bytes
            b[i] ^= 0xA5
            _ = try? Program(serialized: b)
        }
    }

    func testDeadCodeElimination() throws {
        let x = try Tensor([1, 2, 3] as [Float])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let unused = try op("exp", x)
        _ = try op("sum", unused)
        let y = try op("negative", x)
        let program = try Tracer.end(outputs: [y])
        XCTAssertEqual(program.nodes.count, 3)
        let pruned = try program.eliminatingDeadCode()
        XCTAssertEqual(pruned.nodes.count, 1)
        guard case .op(_, let name, _, _, _) = pruned.nodes[0] else { return XCTFail("not an op") }
        XCTAssertEqual(name, "negative")
        XCTAssertEqual(pruned.valueCount, 2, "values are renumbered densely")
        XCTAssertEqual(try pruned.run(inputs: [x])[0].array(Float.self), [-1, -2, -3])
        XCTAssertEqual(try program.run(inputs: [x])[0].array(Float.self), [-1, -2, -3])
    }

    private func opNames(_ p: Program) -> [String] {
        p.nodes.compactMap { if case .op(_, let name, _, _, _) = $0 { name } else { nil } }
    }

    func testConstantFoldingRunsConstantOpsOnce() throws {
        let x = try Tensor([1, 2, 3] as [Float])
        let two = try Tensor(scalar: Float(2)), big = try Tensor(zeros: [2048])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let four = try op("multiply", two, two)          // constants only: folded
        let y = try op("add", x, try op("sqrt", four))   // reads the input: kept
        let bigSum = try op("add", big, big)             // too large to become a constant
        let z = try op("sum", bigSum)
        let program = try Tracer.end(outputs: [y, z])
        let folded = try program.optimized()
        // multiply and sqrt ran here; what is left reads the input or the large constant.
        XCTAssertEqual(opNames(folded), ["add", "add", "sum"])
        XCTAssertEqual(try folded.run(inputs: [x])[0].array(Float.self), [3, 4, 5])
        XCTAssertEqual(try folded.run(inputs: [x])[1].array(Float.self), [0])
        // A program output keeps its node (the caller sees that handle).
        try Tracer.begin()
        try Tracer.declareInput(x)
        let asOutput = try Tracer.end(outputs: [try op("multiply", two, two), try op("add", x, x)]).optimized()
        XCTAssertEqual(opNames(asOutput), ["multiply", "add"])
        // An op with no inputs stays an op (translators read its shape).
        try Tracer.begin()
        try Tracer.declareInput(x)
        let filled = try op("full", attrs: ["shape": .ints([3]), "value": .float(1)])
        let withFull = try Tracer.end(outputs: [try op("add", x, filled)]).optimized()
        XCTAssertEqual(opNames(withFull), ["full", "add"])
        // A constant that requires a gradient is not folded (a tape would record the op).
        let w = try leaf(Tensor([1, 2] as [Float]))
        try Tracer.begin()
        try Tracer.declareInput(x)
        let wx = try op("sum", try op("multiply", w, w))
        let kept = try Tracer.end(outputs: [try op("add", x, wx)]).optimized()
        XCTAssertEqual(opNames(kept), ["multiply", "sum", "add"])
    }

    func testCommonSubexpressionsMergeWithinAStretchOnly() throws {
        let x = try Tensor([1, 4, 9] as [Float])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let a = try op("sqrt", x), b = try op("sqrt", x)          // merged
        let c = try op("sum", x, attrs: ["axes": .ints([0])])
        let d = try op("sum", x, attrs: ["axes": .ints([0]), "keepdims": .bool(true)])  // other attrs: kept
        let s1 = try op("add", a, b)
        Tape.push()
        let e = try op("sqrt", x)                                 // after a tape step: kept
        try Tape.pop()
        let program = try Tracer.end(outputs: [s1, c, d, e])
        let merged = try program.optimized()
        XCTAssertEqual(opNames(merged), ["sqrt", "sum", "sum", "add", "sqrt"])
        let want = try program.run(inputs: [x]), got = try merged.run(inputs: [x])
        for (w, g) in zip(want, got) {
            XCTAssertEqual(w.shape, g.shape)
            XCTAssertEqual(try w.array(Float.self), try g.array(Float.self))
        }
        // Outputs keep their own nodes: the caller tells the handles apart.
        try Tracer.begin()
        try Tracer.declareInput(x)
        let p = try Tracer.end(outputs: [try op("negative", x), try op("negative", x)]).optimized()
        XCTAssertEqual(opNames(p), ["negative", "negative"])
    }

    func testOptimizedTrainingStepReplaysLikeTheTrace() throws {
        let (traced, _) = try traceStep()
        let plain = try traced.eliminatingDeadCode(), optimized = try traced.optimized()
        XCTAssertLessThanOrEqual(optimized.nodes.count, plain.nodes.count)
        var (wa, wb) = (try initialWeights(), try initialWeights())
        for s in 0..<3 {
            let (x, y) = try batch(s)
            let a = try plain.run(inputs: [x, y] + wa), b = try optimized.run(inputs: [x, y] + wb)
            for (u, v) in zip(a, b) { XCTAssertEqual(try u.array(Float.self), try v.array(Float.self)) }
            (wa, wb) = (Array(a[1...]), Array(b[1...]))
        }
    }

    func testDeadCodeKeepsTapeSteps() throws {
        let (program, _) = try traceStep()
        let pruned = try program.eliminatingDeadCode()
        func count(_ p: Program, _ pred: (GraphNode) -> Bool) -> Int { p.nodes.filter(pred).count }
        XCTAssertEqual(count(pruned) { if case .tapePush = $0 { true } else { false } }, 1)
        XCTAssertEqual(count(pruned) { if case .gradient = $0 { true } else { false } }, 0, "lowered")
        XCTAssertEqual(count(pruned) { if case .vjp = $0 { true } else { false } }, 8)
        XCTAssertEqual(count(pruned) { if case .setRequiresGrad = $0 { true } else { false } }, 4)
    }

    func testLivenessDropsIntermediatesAtTheirLastUse() throws {
        let x = try Tensor(values(64, 5), shape: [64])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let a = try op("negative", x)
        let b = try op("exp", a)
        let c = try op("sum", b)
        let program = try Tracer.end(outputs: [c, b])
        // Values: x 0, a 1, b 2, c 3. a's last use is node 1; b is an output.
        weak var aAtReplay: Tensor?
        var aAliveAfterNode1 = true
        var seen: [Int: [Bool]] = [:]
        let out = try program.run(inputs: [x]) { n, slots in
            if n == 0 { aAtReplay = slots[1] }
            if n == 1 { aAliveAfterNode1 = aAtReplay != nil }
            seen[n] = slots.map { $0 != nil }
        }
        XCTAssertEqual(seen[0], [false, true, false, false], "x's last use was node 0")
        XCTAssertEqual(seen[1], [false, false, true, false], "a dropped after node 1")
        XCTAssertEqual(seen[2], [false, false, true, true])
        XCTAssertFalse(aAliveAfterNode1, "nothing else held the intermediate: it was freed at its last use")
        XCTAssertEqual(out.count, 2)
        XCTAssertEqual(try out[0].array(Float.self)[0], try reduce(.sum, b).array(Float.self)[0], accuracy: 1e-4)
    }

    func testUnusedGradientIsNilAndReplays() throws {
        let x = try leaf(Tensor([1, 2, 3] as [Float])), z = try leaf(Tensor([5] as [Float]))
        try Tracer.begin()
        try Tracer.declareInput(x)
        try Tracer.declareInput(z)
        Tape.push()
        let s = try op("sum", try op("multiply", x, x))
        let g = try Tape.gradient(of: s, wrt: [x, z])
        try Tape.pop()
        XCTAssertNil(g[1])
        let program = try Tracer.end(outputs: [try XCTUnwrap(g[0])]).eliminatingDeadCode()
        let x2 = try leaf(Tensor([4, 5, 6] as [Float]))
        XCTAssertEqual(try program.run(inputs: [x2, z])[0].array(Float.self), [8, 10, 12])
    }

    func testWhatCannotBeReplayedFailsTheTrace() throws {
        let x = try leaf(Tensor([1, 2] as [Float]))
        // A custom gradient.
        try Tracer.begin()
        Tape.push()
        _ = Tape.recordCustom(try op("negative", x), inputs: [x]) { [$0] }
        try Tape.pop()
        XCTAssertThrowsError(try Tracer.end(outputs: [])) { XCTAssertTrue("\($0)".contains("custom gradient"), "\($0)") }
        XCTAssertFalse(Tracer.isActive, "a failed end still ends the trace")
        // A tape pushed before the trace.
        Tape.push()
        try Tracer.begin()
        let y = try op("sum", try op("multiply", x, x))
        _ = try Tape.gradient(of: y, wrt: [x])
        XCTAssertThrowsError(try Tracer.end(outputs: [y])) { XCTAssertTrue("\($0)".contains("before the trace"), "\($0)") }
        try Tape.pop()
        // A tape left pushed.
        try Tracer.begin()
        Tape.push()
        XCTAssertThrowsError(try Tracer.end(outputs: []))
        try Tape.pop()
        // Inputs declared twice or after use; traces do not nest.
        try Tracer.begin()
        XCTAssertThrowsError(try Tracer.begin())
        try Tracer.declareInput(x)
        XCTAssertThrowsError(try Tracer.declareInput(x))
        let n = try op("negative", x)
        XCTAssertThrowsError(try Tracer.declareInput(n))
        // A program run inside a trace.
        let p = try Tracer.end(outputs: [n])
        try Tracer.begin()
        _ = try p.run(inputs: [x])
        XCTAssertThrowsError(try Tracer.end(outputs: []))
        XCTAssertThrowsError(try Tracer.end(outputs: []), "no trace is active")
    }

    func testAValueDependentOutputShapeIsAnError() throws {
        let x = try Tensor([1, 0, 2] as [Float])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let nz = try OpRegistry.call("nonzero", [x])
        let program = try Tracer.end(outputs: nz)
        XCTAssertEqual(try program.run(inputs: [try Tensor([0, 3, 4] as [Float])]).count, nz.count)
        XCTAssertThrowsError(try program.run(inputs: [try Tensor([1, 1, 1] as [Float])])) {
            XCTAssertTrue("\($0)".contains("at replay"), "\($0)")
        }
    }

    func testConstantsAreKeptByReference() throws {
        let x = try Tensor([1, 2] as [Float]), k = try Tensor([10, 20] as [Float])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let y = try op("add", x, k)
        let program = try Tracer.end(outputs: [y])
        XCTAssertEqual(program.constants.count, 1)
        XCTAssertTrue(program.constants[0].tensor === k)
        XCTAssertEqual(try program.run(inputs: [try Tensor([3, 4] as [Float])])[0].array(Float.self), [13, 24])
        let loaded = try Program(serialized: try program.serialized())
        XCTAssertEqual(try loaded.run(inputs: [x])[0].array(Float.self), [11, 22])
    }

    func testTracesAreConfinedToTheirThread() throws {
        let x = try Tensor([1, 2] as [Float])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let done = DispatchSemaphore(value: 0)
        Thread {
            XCTAssertNotNil(try? OpRegistry.call("exp", [x]))
            done.signal()
        }.start()
        done.wait()
        let y = try op("negative", x)
        let program = try Tracer.end(outputs: [y])
        XCTAssertEqual(program.nodes.count, 1, "the other thread's op was not recorded")
    }
}
