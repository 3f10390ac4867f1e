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
        // The conv takes its bias, activation and then the pool.
        XCTAssertEqual(opNames(fused), ["reshape", "conv", "reshape", "reshape", "matmul", "softmax"])
        let want = try program.run(inputs: [x, w, b, k, kb]), got = try fused.run(inputs: [x, w, b, k, kb])
        XCTAssertEqual(try want[0].array(Float.self), try got[0].array(Float.self))
    }

    func testTwoProductsReadingOneAddFuseOnce() throws {
        // h = x1 W1 + x2 W2 (Keras's two-input models): the add is one product's bias, once;
        // taking it for both dropped the first product's node and read its value undefined.
        let x1 = try tensor([3, 2], 1), w1 = try tensor([2, 4], 2), x2 = try tensor([3, 5], 3), w2 = try tensor([5, 4], 4)
        try Tracer.begin()
        for t in [x1, w1, x2, w2] { try Tracer.declareInput(t) }
        let h = try op("relu", [try op("add", [try op("matmul", [x1, w1]), try op("matmul", [x2, w2])])])
        let program = try Tracer.end(outputs: [h])
        let fused = try program.optimized()
        XCTAssertEqual(opNames(fused), ["matmul", "matmul"])
        XCTAssertEqual(try fused.run(inputs: [x1, w1, x2, w2])[0].array(Float.self),
                       try program.run(inputs: [x1, w1, x2, w2])[0].array(Float.self))
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

    // MARK: conv + max pool

    /// `conv` with `max_pool_size` against the conv, then `max_pool`, bit for bit.
    private func checkPooled(_ x: Tensor, _ w: Tensor, bias: Tensor?, _ activation: EpilogueActivation,
                             conv convAttrs: [String: AttrValue] = [:], pool: [Int], strides: [Int]? = nil,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        var fusedAttrs = convAttrs
        fusedAttrs["activation"] = .string(activation.rawValue)
        fusedAttrs["max_pool_size"] = .ints(pool)
        if let s = strides { fusedAttrs["max_pool_strides"] = .ints(s) }
        let fused = try op("conv", [x, w] + (bias.map { [$0] } ?? []), fusedAttrs)
        var convOnly = convAttrs
        convOnly["activation"] = .string(activation.rawValue)
        var poolAttrs: [String: AttrValue] = ["pool_size": .ints(pool)]
        if let s = strides { poolAttrs["strides"] = .ints(s) }
        let want = try op("max_pool", [try op("conv", [x, w] + (bias.map { [$0] } ?? []), convOnly)], poolAttrs)
        XCTAssertEqual(fused.shape, want.shape, file: file, line: line)
        XCTAssertEqual(fused.dtype, want.dtype, file: file, line: line)
        XCTAssertEqual(try cast(fused, to: .float64).array(Double.self).map(\.bitPattern),
                       try cast(want, to: .float64).array(Double.self).map(\.bitPattern),
                       "x \(x.shape) w \(w.shape) pool \(pool) strides \(strides ?? pool)", file: file, line: line)
    }

    func testConvMaxPoolEqualsTheOps() throws {
        // The MNIST convnet's first layer, with and without its epilogue.
        let x1 = try tensor([9, 28, 28, 1], 1), w1 = try tensor([3, 3, 1, 32], 2), b1 = try tensor([32], 3)
        try checkPooled(x1, w1, bias: b1, .relu, pool: [2, 2])
        try checkPooled(x1, w1, bias: nil, .none, pool: [2])
        // Odd sizes (the last row and column fall outside every window), overlapping and
        // sparse windows, a strided conv with same padding, float64, a Keras-shaped bias.
        let x2 = try tensor([3, 13, 12, 3], 4), w2 = try tensor([3, 2, 3, 5], 5)
        try checkPooled(x2, w2, bias: try tensor([5], 6), .tanh, pool: [2, 2])
        try checkPooled(x2, w2, bias: nil, .sigmoid, pool: [3, 2], strides: [2, 1])
        try checkPooled(x2, w2, bias: try tensor([1, 1, 1, 5], 7), .relu, conv: ["strides": .ints([2]), "padding": .string("same")],
                        pool: [2], strides: [3])
        try checkPooled(try tensor([2, 9, 9, 2], 8, dtype: .float64), try tensor([2, 2, 2, 4], 9, dtype: .float64),
                        bias: try tensor([4], 10, dtype: .float64), .relu, pool: [2, 2])
        // 1-D and 3-D.
        try checkPooled(try tensor([4, 17, 3], 11), try tensor([3, 3, 6], 12), bias: try tensor([6], 13), .relu, pool: [2])
        try checkPooled(try tensor([2, 6, 7, 5, 2], 14), try tensor([2, 2, 2, 2, 3], 15), bias: nil, .none, pool: [2, 3, 2])
        // Where the kernel does not apply, the two ops run: groups, the Winograd path, half
        // precision, a window larger than the output (an empty result), no images.
        try checkPooled(try tensor([2, 8, 8, 4], 16), try tensor([3, 3, 2, 4], 17), bias: nil, .relu,
                        conv: ["groups": .int(2)], pool: [2])
        try checkPooled(try tensor([2, 10, 10, 16], 18), try tensor([3, 3, 16, 16], 19), bias: try tensor([16], 20), .relu,
                        pool: [2, 2])
        try checkPooled(try tensor([2, 8, 8, 2], 21, dtype: .float16), try tensor([3, 3, 2, 3], 22, dtype: .float16),
                        bias: nil, .relu, pool: [2])
        try checkPooled(try tensor([2, 4, 4, 1], 23), try tensor([3, 3, 1, 2], 24), bias: nil, .none, pool: [3])
        try checkPooled(try tensor([0, 8, 8, 1], 25), try tensor([3, 3, 1, 2], 26), bias: nil, .relu, pool: [2])
        // Bad windows are errors, as max_pool's.
        XCTAssertThrowsError(try op("conv", [x1, w1], ["max_pool_size": .ints([0, 2])]))
        XCTAssertThrowsError(try op("conv", [x1, w1], ["max_pool_size": .ints([2, 2, 2])]))
        XCTAssertThrowsError(try op("conv", [x1, w1], ["max_pool_size": .ints([2]), "max_pool_strides": .ints([-1])]))
    }

    func testConvMaxPoolPropagatesNaNAsMaxPoolDoes() throws {
        var v = try tensor([2, 8, 8, 1], 1).array(Float.self)
        v[9] = .nan
        v[70] = .infinity
        v[100] = -.infinity
        let x = try Tensor(v, shape: [2, 8, 8, 1])
        try checkPooled(x, try tensor([3, 3, 1, 4], 2), bias: try tensor([4], 3), .none, pool: [2])
        try checkPooled(x, try tensor([3, 3, 1, 4], 2), bias: nil, .relu, pool: [3], strides: [1])
    }

    func testVectorMaxPoolGivesTheBitsOfTheScalarLoop() throws {
        // float32 max pooling takes whole vectors of 8 or 32 channels; float64 runs the scalar
        // loop. Max is exact, so both give the same bits, NaN, infinities and signed zeros included.
        for c in [8, 24, 32, 64] {
            var v = try tensor([2, 7, 6, c], c).array(Float.self)
            for (i, special) in [Float.nan, .infinity, -.infinity, -0.0, 0.0, -.nan].enumerated() {
                for k in stride(from: i * 37, to: v.count, by: 97) { v[k] = special }
            }
            let x = try Tensor(v, shape: [2, 7, 6, c])
            for attrs: [String: AttrValue] in [["pool_size": .ints([2])],
                                               ["pool_size": .ints([3]), "strides": .ints([2]), "padding": .string("same")],
                                               ["pool_size": .ints([1, 4]), "strides": .ints([1, 1])]] {
                let fast = try op("max_pool", [x], attrs)
                let scalar = try cast(try op("max_pool", [try cast(x, to: .float64)], attrs), to: .float32)
                XCTAssertEqual(try fast.array(Float.self).map(\.bitPattern), try scalar.array(Float.self).map(\.bitPattern),
                               "\(c) channels, \(attrs)")
            }
        }
    }

    func testOneChannelConvEqualsTheSameConvThroughPixelMajorColumns() throws {
        // A one-channel input takes tap-major columns; a second, zero channel (zero weights)
        // sends the same conv through the pixel-major path. Strides, dilation, same padding.
        for (attrs, k) in [([:], [3, 3]), (["strides": AttrValue.ints([2, 1]), "padding": .string("same")], [5, 3]),
                           (["dilation": .ints([2])], [3, 2])] as [([String: AttrValue], [Int])] {
            let x = try tensor([3, 11, 9, 1], 1), w = try tensor(k + [1, 6], 2)
            let x2 = try op("concatenate", [x, try zerosLike(x)], ["axis": .int(-1)])
            let w2 = try op("concatenate", [w, try zerosLike(w)], ["axis": .int(2)])
            let one = try op("conv", [x, w], attrs).array(Float.self), two = try op("conv", [x2, w2], attrs).array(Float.self)
            XCTAssertEqual(one.count, two.count)
            for (a, b) in zip(one, two) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(attrs)") }
        }
    }

    func testGradientsThroughConvMaxPoolAreTheOps() throws {
        let inputs = [try tensor([3, 12, 12, 2], 1), try tensor([3, 3, 2, 4], 2), try tensor([4], 3)]
        func grads(fused: Bool) throws -> [[Float]] {
            let leaves = inputs.map { stopGradient($0) }
            for t in leaves { t.requiresGrad = true }
            Tape.push()
            defer { try? Tape.pop() }
            let y = fused
                ? try op("conv", leaves, ["activation": .string("relu"), "max_pool_size": .ints([2])])
                : try op("max_pool", [try op("conv", leaves, ["activation": .string("relu")])], ["pool_size": .ints([2])])
            let loss = try op("sum", [try op("multiply", [y, try tensor(y.shape, 4)])])
            return try Tape.gradient(of: loss, wrt: leaves).map { try XCTUnwrap($0).array(Float.self) }
        }
        XCTAssertEqual(try grads(fused: true), try grads(fused: false))
    }

    func testThePassFusesAMaxPoolIntoTheConvBeforeIt() throws {
        let x = try tensor([4, 12, 12, 1], 1), w = try tensor([3, 3, 1, 8], 2), b = try tensor([8], 3)
        func traced(_ body: (Tensor) throws -> [Tensor]) throws -> (Program, Program) {
            try Tracer.begin()
            for t in [x, w, b] { try Tracer.declareInput(t) }
            let h = try op("relu", [try op("add", [try op("conv", [x, w]), b])])
            let p = try Tracer.end(outputs: try body(h))
            return (p, try p.optimized())
        }
        let pooled: [String: AttrValue] = ["pool_size": .ints([2, 2]), "strides": .ints([2, 2]), "padding": .string("valid")]
        let (plain, fused) = try traced { h in [try op("max_pool", [h], pooled)] }
        XCTAssertEqual(opNames(fused), ["conv"])
        guard case .op(_, _, let attrs, let ins, _) = fused.nodes[0] else { return XCTFail("no conv node") }
        XCTAssertEqual(ins.count, 3)
        XCTAssertEqual(try attrs.ints("max_pool_size"), [2, 2])
        XCTAssertEqual(try attrs.ints("max_pool_strides"), [2, 2])
        XCTAssertEqual(try fused.run(inputs: [x, w, b])[0].array(Float.self),
                       try plain.run(inputs: [x, w, b])[0].array(Float.self))
        // The activation is read elsewhere, the pool has same padding, or averages: no fusion.
        XCTAssertEqual(opNames(try traced { h in [try op("max_pool", [h], pooled), h] }.1), ["conv", "max_pool"])
        XCTAssertEqual(opNames(try traced { h in [try op("max_pool", [h], ["pool_size": .ints([2]), "padding": .string("same")])] }.1),
                       ["conv", "max_pool"])
        XCTAssertEqual(opNames(try traced { h in [try op("avg_pool", [h], ["pool_size": .ints([2])])] }.1), ["conv", "avg_pool"])
    }
}

private extension Tensor {
    func transposedForTest() throws -> Tensor {
        try OpRegistry.call("transpose", [self], Attrs(["perm": .ints([1, 0])]))[0]
    }
}
