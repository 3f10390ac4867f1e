import XCTest
import Foundation
@testable import TensorEngine

/// Conv and matmul epilogues (bias + activation in the kernel) and the pass that forms them:
/// every path gives the same bits as the ops it stands for.
final class EpilogueTests: XCTestCase {
    override func tearDown() {
        Tracer.abort()
        while Tape.depth > 0 { try? Tape.pop() }
    }

    private func op(_ name: String, _ inputs: [Tensor], _ attrs: [String: AttrValue] = [:]) throws -> Tensor {
        let r = try OpRegistry.call(name, inputs, Attrs(attrs))
        XCTAssertEqual(r.count, 1)
        return r[0]
    }

    private func tensor(_ shape: [Int], _ seed: Int, dtype: DType = .float32) throws -> Tensor {
        let n = shape.reduce(1, *)
        let v = (0..<n).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) * 2 }
        return try cast(try Tensor(v, shape: shape), to: dtype)
    }

    /// act(base(inputs) + bias) through the fused op and through the three ops.
    private func check(_ base: String, _ inputs: [Tensor], bias: Tensor?, _ activation: EpilogueActivation,
                       attrs: [String: AttrValue] = [:], file: StaticString = #filePath, line: UInt = #line) throws {
        var fusedAttrs = attrs
        fusedAttrs["activation"] = .string(activation.rawValue)
        let fused = try op(base, inputs + (bias.map { [$0] } ?? []), fusedAttrs)
        var want = try op(base, inputs, attrs)
        if let b = bias { want = try op("add", [want, b]) }
        if activation != .none { want = try op(activation.rawValue, [want]) }
        XCTAssertEqual(fused.shape, want.shape, file: file, line: line)
        XCTAssertEqual(fused.dtype, want.dtype, file: file, line: line)
        XCTAssertEqual(try cast(fused, to: .float64).array(Double.self).map(\.bitPattern),
                       try cast(want, to: .float64).array(Double.self).map(\.bitPattern),
                       "\(base) \(activation) bias \(bias?.shape.description ?? "none")", file: file, line: line)
    }

    func testConvEpiloguesEqualTheOps() throws {
        for dtype in [DType.float32, .float64] {
            // Winograd (3x3, 16+ channels), im2col (1 channel), grouped, strided 1-D.
            let cases: [([Int], [Int], [String: AttrValue])] = [
                ([2, 9, 9, 16], [3, 3, 16, 24], [:]),
                ([3, 7, 6, 1], [3, 3, 1, 8], ["padding": .string("same")]),
                ([2, 6, 6, 4], [3, 3, 2, 6], ["groups": .int(2)]),
                ([2, 11, 3], [3, 3, 5], ["strides": .ints([2])]),
            ]
            for (i, (xs, ws, attrs)) in cases.enumerated() {
                let x = try tensor(xs, i, dtype: dtype), w = try tensor(ws, i + 10, dtype: dtype)
                let o = ws.last!
                for activation in EpilogueActivation.allCases {
                    try check("conv", [x, w], bias: try tensor([o], i + 20, dtype: dtype), activation, attrs: attrs)
                    try check("conv", [x, w], bias: nil, activation, attrs: attrs)
                }
                // A bias reshaped as Keras's Conv layers do.
                try check("conv", [x, w], bias: try tensor(Array(repeating: 1, count: xs.count - 1) + [o], i + 30, dtype: dtype),
                          .relu, attrs: attrs)
            }
        }
    }

    func testMatmulEpiloguesEqualTheOps() throws {
        // Small, one GEMM threaded by rows and by columns, a shared kernel over a batch, and
        // per-entry products.
        let cases: [([Int], [Int])] = [([5, 4], [4, 3]), ([600, 64], [64, 48]), ([40, 64], [64, 900]),
                                       ([3, 50, 20], [20, 30]), ([4, 6, 5], [4, 5, 7])]
        for dtype in [DType.float32, .float64] {
            for (i, (a, b)) in cases.enumerated() {
                let x = try tensor(a, i, dtype: dtype), y = try tensor(b, i + 10, dtype: dtype)
                for activation in EpilogueActivation.allCases {
                    try check("matmul", [x, y], bias: try tensor([b.last!], i + 20, dtype: dtype), activation)
                    try check("matmul", [x, y], bias: nil, activation)
                }
            }
        }
    }

    func testNaNInfinitiesAndSignedZerosMatchTheOps() throws {
        // Nine columns: one 8-lane vector and a tail.
        let row: [Float] = [.nan, -0.0, 1, -1, 2, -3, 0, .infinity, -.infinity]
        for dtype in [DType.float32, .float64] {
            let a = try cast(try Tensor([1, -1, 0] as [Float], shape: [3, 1]), to: dtype)
            let w = try cast(try Tensor(row, shape: [1, 9]), to: dtype)
            let b = try cast(try Tensor([-0.0, -0.0, 0, 0, -0.0, 1, -1, 0, 0] as [Float], shape: [9]), to: dtype)
            for activation in EpilogueActivation.allCases {
                try check("matmul", [a, w], bias: b, activation)
                try check("matmul", [a, w], bias: nil, activation)
            }
        }
    }

    func testEpiloguesTheKernelCannotTakeRunAsOps() throws {
        let x = try tensor([4, 5], 1), w = try tensor([5, 3], 2)
        // A bias that broadcasts over rows, or widens the result, or is another dtype.
        try check("matmul", [x, w], bias: try tensor([4, 1], 3), .relu)
        try check("matmul", [x, w], bias: try tensor([2, 4, 3], 4), .tanh)
        try check("matmul", [x, w], bias: try tensor([3], 5, dtype: .float64), .sigmoid)
        // Half precision, integers, vectors.
        let h = try tensor([2, 6, 6, 2], 6, dtype: .float16), hw = try tensor([3, 3, 2, 4], 7, dtype: .float16)
        try check("conv", [h, hw], bias: try tensor([4], 8, dtype: .float16), .relu)
        let ints = try cast(try tensor([3, 4], 9), to: .int32)
        try check("matmul", [ints, ints.transposedForTest()], bias: try cast(try tensor([3], 10), to: .int32), .none)
        try check("matmul", [try tensor([5], 11), w], bias: try tensor([3], 12), .relu)
        // No products: the output is the activated bias.
        try check("matmul", [try tensor([3, 0], 13), try tensor([0, 2], 14)], bias: try tensor([2], 15), .sigmoid)
        try check("conv", [try tensor([1, 5, 5, 0], 16), try tensor([3, 3, 0, 4], 17)], bias: try tensor([4], 18), .tanh)
        XCTAssertThrowsError(try op("matmul", [x, w], ["activation": .string("softmax")]))
    }

    func testGradientsThroughAFusedNodeAreTheOps() throws {
        // (base op, inputs, bias, activation): Winograd and im2col convs, a Keras-shaped conv
        // bias, a plain and a batched matmul.
        let cases: [(String, [Tensor], Tensor, EpilogueActivation)] = [
            ("conv", [try tensor([2, 8, 8, 16], 1), try tensor([3, 3, 16, 16], 2)], try tensor([16], 3), .tanh),
            ("conv", [try tensor([2, 7, 7, 1], 4), try tensor([3, 3, 1, 5], 5)], try tensor([1, 1, 1, 5], 6), .relu),
            ("matmul", [try tensor([6, 9], 7), try tensor([9, 4], 8)], try tensor([4], 9), .sigmoid),
            ("matmul", [try tensor([3, 5, 9], 10), try tensor([9, 4], 11)], try tensor([4], 12), .none),
        ]
        for (base, inputs, bias, activation) in cases {
            func grads(fused: Bool) throws -> [[Float]] {
                let leaves = (inputs + [bias]).map { stopGradient($0) }
                for t in leaves { t.requiresGrad = true }
                Tape.push()
                defer { try? Tape.pop() }
                var y: Tensor
                if fused {
                    y = try op(base, leaves, ["activation": .string(activation.rawValue)])
                } else {
                    y = try op("add", [try op(base, Array(leaves.prefix(2))), leaves[2]])
                    if activation != .none { y = try op(activation.rawValue, [y]) }
                }
                let loss = try op("sum", [try op("multiply", [y, try tensor(y.shape, 13)])])
                return try Tape.gradient(of: loss, wrt: leaves).map { try XCTUnwrap($0).array(Float.self) }
            }
            XCTAssertEqual(try grads(fused: true), try grads(fused: false), "\(base) \(activation)")
        }
    }

    private func opNames(_ p: Program) -> [String] {
        p.nodes.compactMap { if case .op(_, let name, _, _, _) = $0 { name } else { nil } }
    }

    func testThePassFusesConvBiasActivationAsKerasLayersCallThem() throws {
        let x = try tensor([2, 10, 10, 16], 1), w = try tensor([3, 3, 16, 16], 2), b = try tensor([16], 3)
        let k = try tensor([64, 10], 4), kb = try tensor([10], 5)
        try Tracer.begin()
        for t in [x, w, b, k, kb] { try Tracer.declareInput(t) }
        let y = try op("conv", [x, w])
        let bias = try op("reshape", [b], ["shape": .ints([1, 1, 1, 16])])
        let h = try op("relu", [try op("add", [y, bias])])
        let p = try op("max_pool", [h], ["pool_size": .ints([2, 2]), "strides": .ints([2, 2])])
        let flat = try op("reshape", [p], ["shape": .ints([2, -1])])
        let d = try op("softmax", [try op("add", [kb, try op("matmul", [try op("reshape", [flat], ["shape": .ints([-1, 64])]), k])])])
        let program = try Tracer.end(outputs: [d])
        let fused = try program.optimized()
        XCTAssertEqual(opNames(fused), ["reshape", "conv", "max_pool", "reshape", "reshape", "matmul", "softmax"])
        let want = try program.run(inputs: [x, w, b, k, kb]), got = try fused.run(inputs: [x, w, b, k, kb])
        XCTAssertEqual(try want[0].array(Float.self), try got[0].array(Float.self))
    }

    func testThePassLeavesValuesThatAreReadElsewhere() throws {
        let x = try tensor([4, 6], 1), w = try tensor([6, 5], 2), b = try tensor([5], 3)
        // The sum is an output too: the relu stays apart (the bias still fuses).
        try Tracer.begin()
        for t in [x, w, b] { try Tracer.declareInput(t) }
        let s = try op("add", [try op("matmul", [x, w]), b])
        let p1 = try Tracer.end(outputs: [s, try op("relu", [s])]).optimized()
        XCTAssertEqual(opNames(p1), ["matmul", "relu"])
        // The product is read twice: nothing fuses.
        try Tracer.begin()
        for t in [x, w, b] { try Tracer.declareInput(t) }
        let m = try op("matmul", [x, w])
        let p2 = try Tracer.end(outputs: [try op("add", [m, b]), try op("negative", [m])]).optimized()
        XCTAssertEqual(opNames(p2), ["matmul", "add", "negative"])
        // A tape step between the product and its add: nothing fuses.
        try Tracer.begin()
        for t in [x, w, b] { try Tracer.declareInput(t) }
        let m3 = try op("matmul", [x, w])
        Tape.push()
        let s3 = try op("add", [m3, b])
        try Tape.pop()
        let p3 = try Tracer.end(outputs: [s3]).optimized()
        XCTAssertEqual(opNames(p3), ["matmul", "add"])
        for (p, n) in [(p1, 2), (p2, 2), (p3, 1)] { XCTAssertEqual(try p.run(inputs: [x, w, b]).count, n) }
    }
}

private extension Tensor {
    func transposedForTest() throws -> Tensor {
        try OpRegistry.call("transpose", [self], Attrs(["perm": .ints([1, 0])]))[0]
    }
}
