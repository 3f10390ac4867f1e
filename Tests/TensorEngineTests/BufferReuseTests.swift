import XCTest
import Foundation
@testable import TensorEngine

/// The reuse plan of compiled programs: outputs written over the buffers of inputs that die
/// at their op, never where anyone else can see those inputs.
final class BufferReuseTests: XCTestCase {
    override func tearDown() {
        Tracer.abort()
        while Tape.depth > 0 { try? Tape.pop() }
    }

    private func op(_ name: String, _ inputs: Tensor..., attrs: [String: AttrValue] = [:]) throws -> Tensor {
        try OpRegistry.call(name, inputs, Attrs(attrs))[0]
    }

    private func values(_ n: Int, _ seed: Int) -> [Float] {
        (0..<n).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) }
    }

    private static let adamAttrs: [String: AttrValue] = ["alpha": .float(0.01), "beta1": .float(0.9), "beta2": .float(0.999),
                                                          "epsilon": .float(1e-7)]

    /// x -> negative -> exp -> multiply(self) -> add(x) = g; (w, m, v) <- adam_update(w, g, m, v).
    /// Values: x 0, w 1, m 2, v 3, a 4, b 5, c 6, g 7, w' 8, m' 9, v' 10.
    private func adamProgram(_ n: Int) throws -> Program {
        let x = try Tensor(values(n, 1), shape: [n]), w = try Tensor(values(n, 2), shape: [n])
        let m = try Tensor(values(n, 3), shape: [n]), v = try Tensor(values(n, 4).map { $0 * $0 }, shape: [n])
        try Tracer.begin()
        for t in [x, w, m, v] { try Tracer.declareInput(t) }
        let a = try op("negative", x)
        let b = try op("exp", a)
        let c = try op("multiply", b, b)
        let g = try op("add", c, x)
        let r = try OpRegistry.call("adam_update", [w, g, m, v], Attrs(Self.adamAttrs))
        return try Tracer.end(outputs: r)
    }

    /// Fresh inputs for `adamProgram` held by the returned array alone, and their buffers.
    private func freshInputs(_ n: Int) throws -> ([Tensor], [UnsafeMutableRawPointer]) {
        let ts = [try Tensor(values(n, 1), shape: [n]), try Tensor(values(n, 2), shape: [n]),
                  try Tensor(values(n, 3), shape: [n]), try Tensor(values(n, 4).map { $0 * $0 }, shape: [n])]
        return (ts, ts.map(\.storage.pointer))
    }

    func testThePlanNamesDyingInputsOfOpsThatDeclareIt() throws {
        let program = try adamProgram(64)
        // exp over a, multiply over b, add over c (x lives on? no: x's last reader is add),
        // adam over w, m, v; negative reads x, which add reads later.
        XCTAssertEqual(program.reusePlan, [[], [4], [5], [6, 0], [1, 2, 3]])
    }

    func testOutputsTakeDyingBuffersAndGiveTheSameBits() throws {
        let n = 1000
        let program = try adamProgram(n)
        var pointers: [Int: UnsafeMutableRawPointer] = [:]
        var (args, inputPointers) = try freshInputs(n)
        let reused = try program.run(consuming: &args, observer: { _, slots in
            for (v, t) in slots.enumerated() { if let t = t, pointers[v] == nil { pointers[v] = t.storage.pointer } }
        })
        XCTAssertTrue(args.isEmpty)
        XCTAssertEqual(pointers[5], pointers[4], "exp wrote over negative's result")
        XCTAssertEqual(pointers[6], pointers[4], "multiply wrote over exp's result")
        XCTAssertEqual(pointers[7], pointers[4], "add wrote over multiply's result")
        XCTAssertEqual(reused.map(\.storage.pointer), Array(inputPointers[1...3]),
                       "adam_update wrote the new w, m, v over the donated old ones")

        let (plain, _) = try freshInputs(n)
        let reference = try program.run(inputs: plain, observer: nil, reuse: false)
        for (r, e) in zip(reused, reference) {
            XCTAssertEqual(try r.array(Float.self).map(\.bitPattern), try e.array(Float.self).map(\.bitPattern))
        }
        XCTAssertEqual(try plain[1].array(Float.self), values(n, 2), "without reuse no input changed")
    }

    func testInputsTheCallerHoldsAreNeverWritten() throws {
        let n = 300
        let program = try adamProgram(n)
        let (held, pointers) = try freshInputs(n)
        let before = try held.map { try $0.array(Float.self) }
        let out = try program.run(inputs: held)
        for (i, t) in held.enumerated() { XCTAssertEqual(try t.array(Float.self), before[i], "input \(i)") }
        for t in out { XCTAssertFalse(pointers.contains(t.storage.pointer)) }
        // Consumed, but the caller kept its own references: still only read.
        var args = held
        let again = try program.run(consuming: &args)
        for (i, t) in held.enumerated() { XCTAssertEqual(try t.array(Float.self), before[i], "input \(i)") }
        for t in again { XCTAssertFalse(pointers.contains(t.storage.pointer)) }
    }

    func testATensorInTwoSlotsIsNotWrittenWhileTheOtherReadsIt() throws {
        let n = 200
        let p = try Tensor(values(n, 5), shape: [n]), q = try Tensor(values(n, 6), shape: [n])
        try Tracer.begin()
        try Tracer.declareInput(p)
        try Tracer.declareInput(q)
        let r = try op("exp", p)
        let s = try op("negative", q)
        let program = try Tracer.end(outputs: [r, s])
        XCTAssertEqual(program.reusePlan, [[0], [1]])
        var args: [Tensor] = [try Tensor(values(n, 5), shape: [n])]
        args.append(args[0])
        let out = try program.run(consuming: &args)
        let expected = values(n, 5)
        XCTAssertEqual(try out[0].array(Float.self), try unary(.exp, Tensor(expected, shape: [n])).array(Float.self))
        XCTAssertEqual(try out[1].array(Float.self), expected.map { -$0 })
    }

    func testViewsAndDeferredTransposesKeepTheirInputs() throws {
        let x0 = try Tensor(values(12, 7), shape: [3, 4])
        try Tracer.begin()
        try Tracer.declareInput(x0)
        let view = try op("reshape", x0, attrs: ["shape": .ints([4, 3])])
        let t = try op("transpose", x0, attrs: ["perm": .ints([1, 0])])
        let e = try op("exp", x0)  // x0 dies here, but the view shares its storage, the transpose reads it
        let tt = try op("negative", t)  // a deferred input: not written over
        let sum = try op("add", try op("reshape", view, attrs: ["shape": .ints([3, 4])]), e)
        let program = try Tracer.end(outputs: [sum, tt])
        let expectedSum = try add(x0, unary(.exp, x0)).array(Float.self)
        let expectedT = try unary(.negative, transpose(x0, [1, 0])).array(Float.self)
        for _ in 0..<2 {
            var args = [try Tensor(values(12, 7), shape: [3, 4])]
            let out = try program.run(consuming: &args)
            XCTAssertEqual(try out[0].array(Float.self), expectedSum)
            XCTAssertEqual(try out[1].array(Float.self), expectedT)
        }
    }

    func testNothingIsOfferedWhereATapeRecords() throws {
        let x = try Tensor(values(50, 8), shape: [50]), w = try Tensor(values(50, 9), shape: [50])
        w.requiresGrad = true
        try Tracer.begin()
        try Tracer.declareInput(x)
        try Tracer.declareInput(w)
        // Two tapes: the gradient stays one opaque node (a lowered one reads k in its vjp node,
        // so k would not die at the multiply), and the multiply runs under a recording tape.
        Tape.push()
        Tape.push()
        let k = try op("exp", x)  // untracked, and dying at the multiply, whose VJP for w reads it
        let c = try op("multiply", k, w)
        let loss = try op("sum", c)
        let g = try Tape.gradient(of: loss, wrt: [w])[0]!
        try Tape.pop()
        try Tape.pop()
        let program = try Tracer.end(outputs: [loss, g])
        XCTAssertTrue(program.nodes.contains { if case .gradient = $0 { true } else { false } })
        XCTAssertTrue(program.reusePlan.contains([2]), "k is planned; the tape vetoes it at run time")
        let expected = try g.array(Float.self)
        for _ in 0..<2 {
            let w2 = try Tensor(values(50, 9), shape: [50])
            w2.requiresGrad = true
            var args = [try Tensor(values(50, 8), shape: [50]), w2]
            let out = try program.run(consuming: &args)
            XCTAssertEqual(try out[1].array(Float.self), expected)
        }
    }

    /// A fused chain's attributes over `inputs` inputs: (op, operand references) per step.
    private func chain(_ steps: [(String, Int, Int)], results: [Int]) -> Attrs {
        var a = Attrs()
        a.set("ops", .string(steps.map(\.0).joined(separator: ",")))
        a.set("operands", .ints(steps.flatMap { [$0.1, $0.2] }))
        a.set("results", .ints(results))
        return a
    }

    func testAFusedChainWritesOnlyOverInputsNoLaterStepReads() throws {
        let fused = OpRegistry.index["fused_elementwise"]!
        let n = 5000
        // t0 = exp(x); t1 = t0 + x: t0 may not take x (t1 reads it after), t1 may.
        let attrs = chain([("exp", 0, -1), ("add", 1, 0)], results: [0, 1])
        let x = try Tensor(values(n, 11), shape: [n])
        let want = try OpRegistry.ops[fused].run([x], attrs).map { try $0.array(Float.self).map(\.bitPattern) }
        let xp = x.storage.pointer
        BufferReuse.offer([x])
        let got = try OpRegistry.ops[fused].run([x], attrs)
        BufferReuse.clear()
        XCTAssertNotEqual(got[0].storage.pointer, xp)
        XCTAssertEqual(got[1].storage.pointer, xp)
        XCTAssertEqual(try got.map { try $0.array(Float.self).map(\.bitPattern) }, want)

        // power re-reads its operands after writing: never over the one it reads last.
        let pa = chain([("power", 0, 1)], results: [0])
        let b = try Tensor(values(n, 12).map { $0 * 3 }, shape: [n])
        let wantPow = try OpRegistry.ops[fused].run([x, b], pa)[0].array(Float.self).map(\.bitPattern)
        BufferReuse.offer([x, b])
        let pow = try OpRegistry.ops[fused].run([x, b], pa)[0]
        BufferReuse.clear()
        XCTAssertFalse([x.storage.pointer, b.storage.pointer].contains(pow.storage.pointer))
        XCTAssertEqual(try pow.array(Float.self).map(\.bitPattern), wantPow)
    }

    func testAnOptimizedProgramWritesItsFusedChainOverADonatedInput() throws {
        let n = 4096
        let x = try Tensor(values(n, 13), shape: [n])
        try Tracer.begin()
        try Tracer.declareInput(x)
        let y = try op("tanh", try op("add", try op("multiply", x, x), x))
        let program = try Tracer.end(outputs: [y]).optimized()
        XCTAssertTrue(program.nodes.contains { if case .op(_, "fused_elementwise", _, _, _) = $0 { true } else { false } })
        let want = try y.array(Float.self).map(\.bitPattern)
        var args = [try Tensor(values(n, 13), shape: [n])]
        let xp = args[0].storage.pointer
        let out = try program.run(consuming: &args)
        XCTAssertEqual(out[0].storage.pointer, xp)
        XCTAssertEqual(try out[0].array(Float.self).map(\.bitPattern), want)
    }

    func testUniqueStorageCheck() throws {
        let t = try Tensor(values(8, 9), shape: [8])
        XCTAssertTrue(t.hasUniqueStorage())
        let view = t.sharing(shape: [2, 4])
        XCTAssertFalse(t.hasUniqueStorage())
        XCTAssertFalse(view.hasUniqueStorage())
        withExtendedLifetime(view) {}
        let values = self.values(8, 9)
        let wrapped = try values.withUnsafeBytes { raw -> Tensor in
            let p = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
            p.copyMemory(from: raw.baseAddress!, byteCount: 32)
            return try Tensor(wrapping: p, byteCount: 32, shape: [8], dtype: .float32) { p.deallocate() }
        }
        XCTAssertFalse(wrapped.hasUniqueStorage(), "borrowed memory is never written over")
        XCTAssertEqual(try wrapped.array(Float.self), values)
    }
}
