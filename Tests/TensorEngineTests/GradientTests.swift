import XCTest
@testable import TensorEngine

/// Deterministic pseudo-random doubles in [lo, hi) for test inputs.
func testValues(_ n: Int, seed: Int, lo: Double = -1, hi: Double = 1) -> [Double] {
    var s = UInt64(truncatingIfNeeded: seed &* 6364136223846793005 &+ 1442695040888963407)
    return (0..<n).map { _ in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return lo + (hi - lo) * Double(s >> 11) / Double(1 << 53)
    }
}

func f64(_ shape: [Int], seed: Int, lo: Double = -1, hi: Double = 1) throws -> Tensor {
    try Tensor(testValues(shape.reduce(1, *), seed: seed, lo: lo, hi: hi), shape: shape)
}

/// Compares the tape's gradient of sum(f(inputs) * w) (w fixed and random, so every output
/// gradient differs) with central finite differences, for every element of every input.
func checkGradient(_ name: String, _ inputs: [Tensor], tolerance: Double = 1e-5, eps: Double = 1e-6,
                   file: StaticString = #filePath, line: UInt = #line,
                   _ f: ([Tensor]) throws -> Tensor) throws {
    let probe = try Tape.paused { try f(inputs) }
    let w = try f64(probe.shape, seed: 99)
    func loss(_ xs: [Tensor]) throws -> Double {
        try Tape.paused { try sum(try multiply(try cast(f(xs), to: .float64), w)).double(at: 0) }
    }
    Tape.push()
    defer { try? Tape.pop() }
    for x in inputs { x.requiresGrad = true }
    let l = try sum(try multiply(try cast(f(inputs), to: .float64), w))
    let grads = try Tape.gradient(of: l, wrt: inputs)
    for x in inputs { x.requiresGrad = false }
    for (k, x) in inputs.enumerated() {
        let base = x.doubles()
        let analytic = grads[k]?.doubles() ?? [Double](repeating: 0, count: x.count)
        XCTAssertEqual(analytic.count, x.count, "\(name): gradient \(k) has the wrong size", file: file, line: line)
        for i in 0..<x.count {
            var plus = base, minus = base
            plus[i] += eps
            minus[i] -= eps
            var xp = inputs, xm = inputs
            xp[k] = try Tensor(plus, shape: x.shape)
            xm[k] = try Tensor(minus, shape: x.shape)
            let numeric = (try loss(xp) - loss(xm)) / (2 * eps)
            let err = abs(numeric - analytic[i]) / max(1, abs(numeric))
            XCTAssertLessThan(err, tolerance, "\(name): d/dx\(k)[\(i)] analytic \(analytic[i]) vs numeric \(numeric)", file: file, line: line)
            if err >= tolerance { return }
        }
    }
}

final class GradientTests: XCTestCase {
    func testBinaryOps() throws {
        let a = try f64([2, 3], seed: 1), b = try f64([3], seed: 2, lo: 0.5, hi: 2)
        for op in [BinaryOp.add, .subtract, .multiply, .divide, .maximum, .minimum, .arctan2, .mod] {
            try checkGradient(op.rawValue, [a, b]) { try binary(op, $0[0], $0[1]) }
        }
        let pa = try f64([2, 3], seed: 3, lo: 0.5, hi: 2)
        try checkGradient("power", [pa, b]) { try power($0[0], $0[1]) }
        // broadcasting on both sides
        let c = try f64([2, 1, 3], seed: 4), d = try f64([4, 1], seed: 5)
        try checkGradient("multiply-broadcast", [c, d]) { try multiply($0[0], $0[1]) }
    }

    func testUnaryOps() throws {
        let x = try f64([7], seed: 6, lo: -2, hi: 2)
        let positive = try f64([7], seed: 7, lo: 0.2, hi: 0.9)
        let ops: [(String, UnaryOp, Tensor)] = [
            ("negative", .negative, x), ("abs", .abs, x), ("square", .square, x), ("relu", .relu, x),
            ("exp", .exp, x), ("expm1", .expm1, x), ("log", .log, positive), ("log1p", .log1p, positive),
            ("sqrt", .sqrt, positive), ("rsqrt", .rsqrt, positive), ("reciprocal", .reciprocal, positive),
            ("sin", .sin, x), ("cos", .cos, x), ("tan", .tan, positive), ("tanh", .tanh, x), ("sinh", .sinh, x),
            ("cosh", .cosh, x), ("arcsin", .arcsin, positive), ("arccos", .arccos, positive), ("arctan", .arctan, x),
            ("sigmoid", .sigmoid, x), ("softplus", .softplus, x), ("softsign", .softsign, x), ("silu", .silu, x),
            ("selu", .selu, x), ("erf", .erf, x), ("relu6", .relu6, try f64([7], seed: 8, lo: -3, hi: 9)),
            ("gelu", .gelu(approximate: false), x), ("gelu-approx", .gelu(approximate: true), x),
            ("elu", .elu(alpha: 0.7), x), ("leaky_relu", .leakyRelu(slope: 0.1), x),
            ("erfinv", .erfinv, try f64([7], seed: 9, lo: -0.9, hi: 0.9)), ("i0", .i0, x), ("i1", .i1, x),
        ]
        for (name, op, input) in ops {
            try checkGradient(name, [input]) { try unary(op, $0[0]) }
        }
    }

    func testReductions() throws {
        let x = try f64([2, 3, 4], seed: 9)
        for op in [ReduceOp.sum, .mean, .max, .min, .prod] {
            for axes in [nil, [1], [0, 2], [-1]] as [[Int]?] {
                try checkGradient("\(op.rawValue) \(String(describing: axes))", [x]) { try reduce(op, $0[0], axes: axes) }
            }
        }
        try checkGradient("sum keepdims", [x]) { try reduce(.sum, $0[0], axes: [1], keepdims: true) }
    }

    func testMatmul() throws {
        try checkGradient("matmul 2d", [try f64([3, 4], seed: 10), try f64([4, 2], seed: 11)]) { try matmul($0[0], $0[1]) }
        try checkGradient("matmul batched broadcast", [try f64([2, 1, 3, 4], seed: 12), try f64([3, 4, 2], seed: 13)]) {
            try matmul($0[0], $0[1])
        }
        try checkGradient("matmul vec-mat", [try f64([4], seed: 14), try f64([4, 3], seed: 15)]) { try matmul($0[0], $0[1]) }
        try checkGradient("matmul mat-vec", [try f64([2, 4], seed: 16), try f64([4], seed: 17)]) { try matmul($0[0], $0[1]) }
        try checkGradient("matmul float32", [try cast(try f64([3, 4], seed: 18), to: .float32), try cast(try f64([4, 2], seed: 19), to: .float32)],
                          tolerance: 1e-2) { try matmul($0[0], $0[1]) }
    }

    /// A VJP learns which of its inputs are tracked (`Tape.needsInputGrad`), and the ops that
    /// skip an untracked input's gradient still give the tracked ones exactly.
    func testNeedsInputGrad() throws {
        let x = try f64([3, 4], seed: 30), w = try f64([4, 2], seed: 31), c = try f64([2], seed: 32)
        var seen: [[Bool]] = []
        Tape.push()
        defer { try? Tape.pop() }
        w.requiresGrad = true
        let y = Tape.recordCustom(try Tape.paused { try add(try matmul(x, w), c) }, inputs: [x, w, c]) { g in
            seen.append((0..<3).map(Tape.needsInputGrad))
            return [nil, try matmul(try transpose(x, [1, 0]), g), nil]
        }
        let gw = try Tape.gradient(of: try sum(y), wrt: [w])[0]
        XCTAssertEqual(seen, [[false, true, false]])
        XCTAssertEqual(try gw?.doubles(), try matmul(try transpose(x, [1, 0]), try full([3, 2], value: 1, dtype: .float64)).doubles())
        XCTAssertTrue(Tape.needsInputGrad(0), "outside a backward pass every input counts")

        // matmul, its epilogue form and conv with an untracked first operand.
        let bias = try f64([2], seed: 33)
        bias.requiresGrad = true
        let s1 = try sum(try multiply(try matmul(x, w, bias: bias, activation: .tanh), try f64([3, 2], seed: 34)))
        let (gw1, gb1) = try { let g = try Tape.gradient(of: s1, wrt: [w, bias]); return (g[0]!, g[1]!) }()
        let xt = try f64([3, 4], seed: 30)
        xt.requiresGrad = true
        let s2 = try sum(try multiply(try matmul(xt, w, bias: bias, activation: .tanh), try f64([3, 2], seed: 34)))
        let g2 = try Tape.gradient(of: s2, wrt: [w, bias, xt])
        XCTAssertEqual(try gw1.doubles(), try g2[0]!.doubles())
        XCTAssertEqual(try gb1.doubles(), try g2[1]!.doubles())
        XCTAssertNotNil(g2[2])

        let img = try f64([2, 5, 5, 3], seed: 35), k = try f64([3, 3, 3, 4], seed: 36)
        k.requiresGrad = true
        let gk = try Tape.gradient(of: try sum(try conv(img, k, padding: "same")), wrt: [k])[0]!
        let imgT = try f64([2, 5, 5, 3], seed: 35)
        imgT.requiresGrad = true
        let gBoth = try Tape.gradient(of: try sum(try conv(imgT, k, padding: "same")), wrt: [k, imgT])
        XCTAssertEqual(try gk.doubles(), try gBoth[0]!.doubles())
        XCTAssertEqual(gBoth[1]?.shape, [2, 5, 5, 3])
    }

    func testCustomGradient() throws {
        // A custom VJP equal to the true derivative must pass the finite-difference check.
        try checkGradient("custom square", [try f64([2, 3], seed: 40)]) { xs in
            let x = xs[0]
            let y = try Tape.paused { try multiply(x, x) }
            return Tape.recordCustom(y, inputs: [x]) { g in [try multiply(g, try multiply(x, try full([], value: 2, dtype: .float64)))] }
        }
        // Straight-through estimator: round forward, identity backward.
        let x = try f64([4], seed: 41)
        Tape.push()
        defer { try? Tape.pop() }
        x.requiresGrad = true
        let y = Tape.recordCustom(try Tape.paused { try unary(.round, x) }, inputs: [x]) { g in [g] }
        XCTAssertEqual(try sum(y).double(at: 0), try sum(try unary(.round, x)).double(at: 0))
        XCTAssertEqual(try Tape.gradient(of: try sum(y), wrt: [x])[0]?.doubles(), [1, 1, 1, 1])
        // A gradient of the wrong shape is an error, not a crash.
        let bad = Tape.recordCustom(try Tape.paused { try unary(.round, x) }, inputs: [x]) { _ in [try full([3], value: 1, dtype: .float64)] }
        XCTAssertThrowsError(try Tape.gradient(of: try sum(bad), wrt: [x]))
    }

    func testShapeOps() throws {
        let x = try f64([2, 3, 4], seed: 20)
        try checkGradient("reshape", [x]) { try reshape($0[0], [6, -1]) }
        try checkGradient("transpose", [x]) { try transpose($0[0], [2, 0, 1]) }
        try checkGradient("broadcast_to", [try f64([3, 1], seed: 21)]) { try broadcastTo($0[0], [2, 3, 5]) }
        try checkGradient("concatenate", [x, try f64([2, 1, 4], seed: 22)]) { try concatenate([$0[0], $0[1]], axis: 1) }
        try checkGradient("stack", [x, try f64([2, 3, 4], seed: 23)]) { try stack([$0[0], $0[1]], axis: -1) }
        try checkGradient("strided_slice", [x]) { try stridedSlice($0[0], begin: [1, 2, 0], end: [2, -1, 4], strides: [1, -1, 2]) }
        let idx = try Tensor([Int32(2), 0, 2, -1], shape: [2, 2])
        try checkGradient("take", [x]) { try take($0[0], idx, axis: 1) }
        try checkGradient("take flat", [x]) { try take($0[0], idx, axis: nil) }
        let along = try Tensor([Int64(0), 3, 1, 1, 2, 0], shape: [2, 3, 1])
        try checkGradient("take_along_axis", [x]) { try takeAlongAxis($0[0], along, axis: 2) }
        let cond = try Tensor([true, false, true], shape: [3, 1])
        try checkGradient("where", [x, try f64([4], seed: 24)]) { try `where`(cond, $0[0], $0[1]) }
        try checkGradient("clip", [x]) { try clip($0[0], min: -0.5, max: 0.4) }
        // float32 rounding needs a wide step; cast is linear, so a wide step is exact.
        try checkGradient("cast", [x], tolerance: 1e-4, eps: 1e-2) { try cast(try cast($0[0], to: .float32), to: .float64) }
    }

    func testNN() throws {
        let x = try f64([2, 3, 4], seed: 25, lo: -3, hi: 3)
        try checkGradient("softmax", [x]) { try softmax($0[0], axis: -1) }
        try checkGradient("softmax axis 1", [x]) { try softmax($0[0], axis: 1) }
        try checkGradient("log_softmax", [x]) { try softmax($0[0], axis: 0, log: true) }
        let img = try f64([2, 5, 6, 3], seed: 26), k = try f64([3, 2, 3, 4], seed: 27)
        for (padding, strides, dilation) in [("valid", [1, 1], [1, 1]), ("same", [2, 1], [1, 1]), ("same", [1, 2], [2, 1])] {
            try checkGradient("conv2d \(padding) \(strides) \(dilation)", [img, k]) {
                try conv2d($0[0], $0[1], strides: strides, padding: padding, dilation: dilation)
            }
        }
        try checkGradient("conv1d same stride 2", [try f64([2, 7, 3], seed: 28), try f64([3, 3, 2], seed: 29)]) {
            try conv($0[0], $0[1], strides: [2], padding: "same")
        }
        try checkGradient("conv3d", [try f64([1, 3, 4, 3, 2], seed: 30), try f64([2, 2, 2, 2, 3], seed: 31)]) {
            try conv($0[0], $0[1], strides: [1, 2, 1], padding: "same", dilation: [1, 1, 2])
        }
        try checkGradient("depthwise (groups = channels)", [try f64([2, 5, 5, 4], seed: 32), try f64([3, 3, 1, 8], seed: 33)]) {
            try conv($0[0], $0[1], padding: "same", groups: 4)
        }
        try checkGradient("grouped", [try f64([1, 4, 4, 4], seed: 34), try f64([2, 2, 2, 6], seed: 35)]) {
            try conv($0[0], $0[1], groups: 2)
        }
        try checkGradient("conv_transpose", [try f64([2, 3, 4, 3], seed: 36), try f64([3, 3, 2, 3], seed: 37)]) {
            try convTranspose($0[0], $0[1], strides: [2, 2], padsBefore: [1, 0], outputSize: [6, 8])
        }
        for kind in [PoolKind.max, .avg] {
            try checkGradient("\(kind.rawValue)_pool 1d", [try f64([2, 7, 3], seed: 38)]) { try pool(kind, $0[0], poolSize: [3], strides: [2], padding: "same") }
            try checkGradient("\(kind.rawValue)_pool 3d", [try f64([1, 4, 3, 5, 2], seed: 39)]) {
                try pool(kind, $0[0], poolSize: [2, 2, 3], strides: [2, 1, 2], padding: "same")
            }
            for padding in ["valid", "same"] {
                try checkGradient("\(kind.rawValue)_pool \(padding)", [img]) {
                    try pool2d(kind, $0[0], poolSize: [2, 3], strides: [2, 2], padding: padding)
                }
            }
        }
    }
}

/// Forward-mode derivative J·t of `f` at `x` taken as the VJP of a VJP (create_graph, with
/// a seed of ones as `linalg.jvp` uses), against central differences along `t`.
func checkJVP(_ name: String, _ x: Tensor, tolerance: Double = 1e-6, file: StaticString = #filePath, line: UInt = #line,
              _ f: (Tensor) throws -> Tensor) throws {
    let t = try f64(x.shape, seed: 7), eps = 1e-6
    let depth = Tape.depth
    Tape.push()  // records the backward pass
    Tape.push()  // records f; create_graph consumes it
    defer { while Tape.depth > depth { try? Tape.pop() } }
    x.requiresGrad = true
    defer { x.requiresGrad = false }
    let y = try f(x)
    let u = try full(y.shape, value: 1, dtype: y.dtype)
    u.requiresGrad = true
    let gx = try Tape.gradient(of: try sum(try multiply(y, u)), wrt: [x], createGraph: true)[0]!
    let jt = try Tape.gradient(of: try sum(try multiply(gx, t)), wrt: [u])[0]!.doubles()
    let plus = try Tape.paused { try f(try add(x, try multiply(t, try full([], value: eps, dtype: .float64)))) }.doubles()
    let minus = try Tape.paused { try f(try subtract(x, try multiply(t, try full([], value: eps, dtype: .float64)))) }.doubles()
    XCTAssertEqual(jt.count, plus.count, "\(name): J·t has the wrong size", file: file, line: line)
    for i in 0..<Swift.min(jt.count, plus.count) {
        let numeric = (plus[i] - minus[i]) / (2 * eps)
        XCTAssertEqual(jt[i], numeric, accuracy: tolerance * Swift.max(1, abs(numeric)), "\(name)[\(i)]", file: file, line: line)
    }
}

/// The Hessian-vector product of sum(f(x) * w) along v, taken as the gradient of a
/// create_graph gradient, against central differences of the first-order gradient along v.
func checkSecondOrder(_ name: String, _ x: Tensor, tolerance: Double = 1e-5, eps: Double = 1e-6,
                      file: StaticString = #filePath, line: UInt = #line,
                      _ f: (Tensor) throws -> Tensor) throws {
    let w = try f64(try Tape.paused { try f(x) }.shape, seed: 5)
    let v = try f64(x.shape, seed: 6)
    func firstOrder(_ at: [Double]) throws -> [Double] {
        let t = try Tensor(at, shape: x.shape)
        t.requiresGrad = true
        Tape.push()
        defer { try? Tape.pop() }
        return try Tape.gradient(of: try sum(try multiply(try f(t), w)), wrt: [t])[0]!.doubles()
    }
    let depth = Tape.depth
    Tape.push()  // records the backward pass
    Tape.push()  // records f; create_graph consumes it
    defer { while Tape.depth > depth { try? Tape.pop() } }
    let t = try Tensor(x.doubles(), shape: x.shape)
    t.requiresGrad = true
    let gx = try Tape.gradient(of: try sum(try multiply(try f(t), w)), wrt: [t], createGraph: true)[0]!
    let hv = try Tape.gradient(of: try sum(try multiply(gx, v)), wrt: [t])[0]!.doubles()
    let base = x.doubles(), dir = v.doubles()
    let plus = try firstOrder(zip(base, dir).map { $0 + eps * $1 })
    let minus = try firstOrder(zip(base, dir).map { $0 - eps * $1 })
    for i in 0..<hv.count {
        let numeric = (plus[i] - minus[i]) / (2 * eps)
        XCTAssertEqual(hv[i], numeric, accuracy: tolerance * Swift.max(1, abs(numeric)), "\(name)[\(i)]",
                       file: file, line: line)
    }
}

final class CreateGraphTests: XCTestCase {
    /// Second derivatives flow through the forward's intermediates (x*x in x*x*x: the
    /// consumed tape's nodes join the tape beneath) and through the unary ops whose fused
    /// derivative kernels are replaced by recorded ops under create_graph.
    func testSecondDerivatives() throws {
        let x = try f64([2, 3], seed: 3)
        let pos = try f64([2, 3], seed: 4, lo: 0.5, hi: 2)
        try checkSecondOrder("x*x*x", x) { try multiply(try multiply($0, $0), $0) }
        for op in [UnaryOp.tanh, .sigmoid, .exp, .square, .sin, .cos, .softplus, .silu] {
            try checkSecondOrder("\(op)", x) { try unary(op, try multiply($0, $0)) }
        }
        for op in [UnaryOp.log, .sqrt, .rsqrt, .reciprocal] {
            try checkSecondOrder("\(op)", pos) { try unary(op, $0) }
        }
        let k = try f64([3, 4], seed: 8)
        try checkSecondOrder("tanh(x @ k) -> softmax", x) { try softmax(try unary(.tanh, try matmul($0, k)), axis: -1) }
    }


    /// Gathers whose VJP is a scatter kernel: under create_graph the scatter is recorded
    /// (its VJP is the gather again), so forward mode through them is exact, not zero.
    func testScatterVJPsDifferentiateAgain() throws {
        let x = try f64([3, 4], seed: 1)
        try checkJVP("strided slice", x) {
            let s = try stridedSlice($0, begin: [2, 0], end: [-1, 4], strides: [-1, 2])
            return try multiply(s, s)
        }
        let idx = try Tensor([Int32(2), 0, 2], shape: [3])
        try checkJVP("take axis 1", x) { try take(try multiply($0, $0), idx, axis: 1) }
        try checkJVP("take flat", x) { try take($0, idx, axis: nil) }
        let along = try Tensor([Int32(1), 0, 3, 3, 2, 1], shape: [3, 2])
        try checkJVP("take_along_axis", x) { try multiply(try takeAlongAxis($0, along, axis: 1), try takeAlongAxis($0, along, axis: 1)) }
        for mode in [PadMode.constant, .reflect, .symmetric, .edge] {
            try checkJVP("pad \(mode)", x) { try pad(try multiply($0, $0), [1, 2, 2, 1], mode: mode) }
        }
    }
}

/// Issue 20: a gradient through an op without a VJP raises; zero-derivative ops stay nil.
final class MissingVJPTests: XCTestCase {
    func testUnrecordedFloatOutputRaisesAtGradientTime() throws {
        let x = try f64([3, 3], seed: 11)
        Tape.push()
        defer { try? Tape.pop() }
        x.requiresGrad = true
        defer { x.requiresGrad = false }
        // Through the registry, which marks outputs that recorded no VJP.
        let u = try OpRegistry.call("svd", [x])[0]
        XCTAssertThrowsError(try Tape.gradient(of: try sum(u), wrt: [x])) { error in
            guard case EngineError.notImplemented(let m) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(m.contains("svd"), m)
        }
        // The singular values have a VJP, so they are left alone.
        let s = try OpRegistry.call("svd", [x])[1]
        XCTAssertNotNil(try Tape.gradient(of: try sum(s), wrt: [x])[0])
    }

    func testSVDValuesAndQRGradientsMatchFiniteDifferences() throws {
        for shape in [[4, 3], [3, 3], [3, 5], [2, 4, 3]] {
            let a = try f64(shape, seed: 14)
            try checkGradient("svd_s \(shape)", [a]) { try svd($0[0], full: true).s }
            try checkGradient("qr_q \(shape)", [a]) { try qr($0[0]).q }
            try checkGradient("qr_r \(shape)", [a]) { try qr($0[0]).r }
        }
    }

    func testZeroDerivativeOpsAndPassThroughOutputsAreNotMarked() throws {
        let x = try f64([4], seed: 12)
        Tape.push()
        defer { try? Tape.pop() }
        x.requiresGrad = true
        defer { x.requiresGrad = false }
        let f = try OpRegistry.call("floor", [x])[0]
        // floor records a zero VJP of its own; either way the gradient is zero, not an error.
        let g = try Tape.gradient(of: try sum(f), wrt: [x])[0]
        XCTAssertEqual(g?.doubles() ?? [0, 0, 0, 0], [0, 0, 0, 0])
        // An untracked input returned as the output is the caller's tensor: never marked.
        let c = try f64([4], seed: 13)
        Tape.requireGradients(OpRegistry.ops[OpRegistry.lookup("where")!].schema, [c], [x, c])
        XCTAssertNil(c.node)
    }
}
